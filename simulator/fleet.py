"""The simulated fleet: named models with declared accuracy, price, latency and failures.

Every declared accuracy is an end-to-end probability: the chance that one (case, rep)
draw passes its check (decider) or gets the field right (classifier), failures included.
A timeout, an empty answer or malformed JSON is always a wrong draw, so each accuracy must
be at most `1 - terminal_failure_rate`. 5xx bursts and 429s are transient (the client
retries through them) and do not count against accuracy.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Final

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from contracts.classification import CLASSIFICATION_FIELDS
from contracts.taxonomy import Tier
from infra.provider.pricing import ModelPrice, PriceTable

DEFAULT_FLEET_FILE: Final = Path(__file__).with_name("fleet.yaml")

Prob = Annotated[float, Field(ge=0.0, le=1.0)]


class Latency(BaseModel):
    """Lognormal latency: `median_ms * exp(sigma * z)`, z standard normal per draw."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    median_ms: float = Field(ge=0.0)
    sigma: float = Field(default=0.4, ge=0.0, le=3.0)


class DeciderAccuracy(BaseModel):
    """Probability a decider draw passes its check, by the case's tier."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    low: Prob
    medium: Prob
    high: Prob

    def of(self, tier: Tier) -> float:
        return float(getattr(self, tier))


class ClassifierAccuracy(BaseModel):
    """Probability each classification field is right (subtaskType <= taskType: a right
    subtype needs the right task type)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    taskType: Prob
    subtaskType: Prob
    reasoningComplexity: Prob
    contextComplexity: Prob
    executionMode: Prob
    requiresTools: Prob
    riskLevel: Prob

    def of(self, field: str) -> float:
        if field not in CLASSIFICATION_FIELDS:
            raise KeyError(field)
        return float(getattr(self, field))

    @model_validator(mode="after")
    def _subtype_needs_task(self) -> ClassifierAccuracy:
        if self.subtaskType > self.taskType:
            raise ValueError("subtaskType accuracy cannot exceed taskType accuracy")
        return self


class FailureRates(BaseModel):
    """Per-(model, case, rep) probability of each failure mode (mutually exclusive)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    timeout: Prob = 0.0
    """The server sleeps `timeout_sleep_s`, then answers 408."""
    empty: Prob = 0.0
    """A 200 answer with empty content."""
    malformed_json: Prob = 0.0
    """Truncated JSON (classifier) / a garbled final answer (decider)."""
    server_error: Prob = 0.0
    """A transient burst of `server_error_burst` 503s before the real answer."""
    rate_limited: Prob = 0.0
    """A transient 429 (Retry-After: 0) before the real answer."""

    @property
    def terminal(self) -> float:
        """Rate of failures that make the draw wrong."""
        return self.timeout + self.empty + self.malformed_json

    @model_validator(mode="after")
    def _sum(self) -> FailureRates:
        total = self.terminal + self.server_error + self.rate_limited
        if total > 1.0 + 1e-9:
            raise ValueError(f"failure rates sum to {total:.3f} > 1")
        return self


class ModelProfile(BaseModel):
    """One simulated model."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field(pattern=r"^sim/[A-Za-z0-9._\-]+$")
    description: str = ""
    price: ModelPrice
    latency: Latency
    decider: DeciderAccuracy
    classifier: ClassifierAccuracy
    failures: FailureRates = FailureRates()
    server_error_burst: int = Field(default=1, ge=1, le=10)
    """How many consecutive 503s a server_error draw answers before succeeding."""
    report_cost: bool = True
    """False omits `usage.cost` (exercises the client's price-table fallback)."""

    @model_validator(mode="after")
    def _reachable(self) -> ModelProfile:
        ceiling = 1.0 - self.failures.terminal
        declared = {f"decider.{t}": self.decider.of(t) for t in ("low", "medium", "high")}
        declared |= {f"classifier.{f}": self.classifier.of(f) for f in CLASSIFICATION_FIELDS}
        too_high = {k: v for k, v in declared.items() if v > ceiling + 1e-9}
        if too_high:
            raise ValueError(
                f"{self.id}: accuracies {too_high} exceed 1 - terminal failure rate "
                f"({ceiling:.3f}); failed draws are always wrong"
            )
        return self

    def classifier_score(self, weights: dict[str, float]) -> float:
        """Expected weighted classifier score (fallbacks already count as wrong fields)."""
        return sum(w * self.classifier.of(f) for f, w in weights.items())


class Fleet(BaseModel):
    """The file the simulated provider serves."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    timeout_sleep_s: float = Field(default=1000.0, ge=0.0)
    """How long a timeout draw sleeps before answering 408 (longer than any caller waits);
    not scaled by the latency scale."""
    models: tuple[ModelProfile, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique(self) -> Fleet:
        ids = [m.id for m in self.models]
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:
            raise ValueError(f"duplicate model ids: {dupes}")
        return self

    def get(self, model_id: str) -> ModelProfile | None:
        return next((m for m in self.models if m.id == model_id), None)

    def price_table(self) -> PriceTable:
        return PriceTable({m.id: m.price for m in self.models})


def load_fleet(path: Path | None = None) -> Fleet:
    """Read and validate a fleet file (default: the fleet shipped with the project)."""
    source = path or DEFAULT_FLEET_FILE
    try:
        data = yaml.safe_load(source.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as e:
        raise ValueError(f"cannot read fleet file {source}: {e}") from e
    try:
        return Fleet.model_validate(data)
    except ValueError as e:
        raise ValueError(f"invalid fleet file {source}: {e}") from e
