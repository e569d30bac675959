"""The config editor's form: form fields <-> BenchmarkConfig, and errors keyed by field.

Pure functions. The server validates with the very model PUT /admin/config validates with,
so the page shows the same errors the API would answer with, next to the field at fault.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from contracts.config import BenchmarkConfig
from contracts.taxonomy import REASONING_EFFORTS

SCALARS = (
    "minAccuracy",
    "switchCostFactor",
    "maxConcurrency",
    "classifierRepetitions",
    "deciderRepetitions",
    "classifierMaxP95LatencyMs",
    "acceptance",
    "benchmarkIdentity",
    "deciderHarness",
)
OPTIONAL = ("classifierMaxP95LatencyMs", "benchmarkIdentity")
"""Left blank, these are null (no latency budget / no identity)."""
DEFAULTED = ("deciderHarness",)
"""Left blank (or absent, from an older page), these take the config's default."""
SPARE_DECIDER_ROWS = 2

HINTS: dict[str, str] = {
    "classifierModels": "One model id per line, e.g. sim/balanced or openai/gpt-5-mini.",
    "deciderModels": "Each candidate is benchmarked and served at its pinned reasoning effort.",
    "minAccuracy": "Between 0 and 1: the accuracy a model must reach to be above threshold.",
    "acceptance": "point: accuracy ≥ minAccuracy; lower_bound: its Wilson lower bound must be.",
    "switchCostFactor": "1–100: keep a conversation's model while it costs at most this "
    "many times the fresh pick.",
    "maxConcurrency": "1–64 case jobs of a run at once.",
    "classifierRepetitions": "1–5 replays of each classifier case per model.",
    "deciderRepetitions": "1–5 runs of each decider case per model.",
    "classifierMaxP95LatencyMs": "Milliseconds, 1–600000; blank for no latency budget.",
    "deciderHarness": "Who drives decider cases: the built-in tool loop, or a real agent CLI "
    "(Kilo, mini-swe-agent) in the network-less container. Each is measured separately.",
    "benchmarkIdentity": "Name of the provider credential decider runs use and are billed to "
    "(the secret stays in the server's settings). Decider runs need one.",
}


@dataclass
class DeciderRow:
    model: str = ""
    effort: str = "medium"


@dataclass
class ConfigForm:
    """What the editor shows: values as typed, and errors by field name."""

    classifier_models: str = ""
    deciders: list[DeciderRow] = field(default_factory=list)
    values: dict[str, str] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)

    @property
    def rows(self) -> list[DeciderRow]:
        """The decider rows plus a few blank ones to add candidates without JavaScript."""
        return [*self.deciders, *(DeciderRow() for _ in range(SPARE_DECIDER_ROWS))]


EFFORTS = REASONING_EFFORTS


def form_of(config: BenchmarkConfig | None) -> ConfigForm:
    """The editor pre-filled from a saved config (or the model's defaults when none is)."""
    if config is None:
        defaults = BenchmarkConfig.model_fields
        values = {k: _text(defaults[k].default) for k in SCALARS}
        return ConfigForm(values=values)
    data = config.model_dump()
    return ConfigForm(
        classifier_models="\n".join(config.classifierModels),
        deciders=[DeciderRow(d.model, d.reasoningEffort) for d in config.deciderModels],
        values={k: _text(data[k]) for k in SCALARS},
    )


def _text(value: Any) -> str:
    return "" if value is None else str(value)


_DECIDER_KEY = re.compile(r"^decider_(model|effort)_(\d{1,3})$")


def parse_form(fields: Mapping[str, str]) -> tuple[ConfigForm, BenchmarkConfig | None]:
    """Form fields -> (the form as typed with its errors, the config when it is valid)."""
    rows: dict[int, DeciderRow] = {}
    for key, value in fields.items():
        m = _DECIDER_KEY.match(key)
        if m:
            row = rows.setdefault(int(m.group(2)), DeciderRow(effort=""))
            setattr(row, "model" if m.group(1) == "model" else "effort", value.strip())
    deciders = [r for _, r in sorted(rows.items()) if r.model]
    classifiers = [m.strip() for m in re.split(r"[\n,]", fields.get("classifierModels", ""))]
    form = ConfigForm(
        classifier_models="\n".join(m for m in classifiers if m),
        deciders=deciders,
        values={k: fields.get(k, "").strip() for k in SCALARS},
    )
    data: dict[str, Any] = {
        "classifierModels": [m for m in classifiers if m],
        "deciderModels": [{"model": r.model, "reasoningEffort": r.effort} for r in deciders],
    }
    for k in SCALARS:
        v = form.values[k]
        if v == "" and k in OPTIONAL:
            data[k] = None
        elif v == "" and k in DEFAULTED:
            continue
        else:
            data[k] = v
    try:
        return form, BenchmarkConfig.model_validate(data)
    except ValidationError as e:
        form.errors = errors_by_field(e, deciders)
        return form, None


def errors_by_field(error: ValidationError, deciders: list[DeciderRow]) -> dict[str, str]:
    """Pydantic errors keyed by the form field they belong to (the first one per field)."""
    out: dict[str, str] = {}
    for err in error.errors():
        loc = err.get("loc", ())
        msg = str(err.get("msg", "invalid value")).removeprefix("Value error, ")
        name = field_of(loc, msg)
        out.setdefault(name, msg)
    if "deciderModels" in out and not deciders:
        out["deciderModels"] = "Add at least one decider model."
    return out


def field_of(loc: tuple[Any, ...], msg: str = "") -> str:
    """The form field a validation error location points at."""
    if not loc:
        # Model-level checks name their field at the start of the message.
        head = msg.split(":", 1)[0].strip()
        return head if head in (*SCALARS, "classifierModels", "deciderModels") else "_form"
    first = str(loc[0])
    if first == "deciderModels" and len(loc) >= 3 and isinstance(loc[1], int):
        return f"decider_{'effort' if loc[2] == 'reasoningEffort' else 'model'}_{loc[1]}"
    return first


def config_json(config: BenchmarkConfig) -> dict[str, Any]:
    return config.model_dump(mode="json")
