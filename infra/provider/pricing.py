"""Price table: the cost of a call when the endpoint does not report `usage.cost`.

File format (YAML), prices in USD per million tokens:

    openai/gpt-4.1-mini: {input_per_mtok: 0.40, output_per_mtok: 1.60}
    sim/flash-lite:      {input_per_mtok: 0.10, output_per_mtok: 0.40}
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field


class ModelPrice(BaseModel):
    """USD per million input (prompt) and output (completion) tokens."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    input_per_mtok: float = Field(ge=0.0)
    output_per_mtok: float = Field(ge=0.0)

    def cost(self, input_tokens: int, output_tokens: int) -> float:
        return token_cost(input_tokens, output_tokens, self.input_per_mtok, self.output_per_mtok)


def token_cost(
    input_tokens: int, output_tokens: int, input_per_mtok: float, output_per_mtok: float
) -> float:
    """The one cost formula shared by the client's fallback and the simulated provider."""
    return round((input_tokens * input_per_mtok + output_tokens * output_per_mtok) / 1e6, 12)


def reported_cost(usage: Mapping[str, object]) -> float | None:
    """`usage.cost` when the endpoint reports a usable one (finite, >= 0), else None."""
    value = usage.get("cost")
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) and value >= 0 else None


class PriceTable:
    """Model id -> price. Unknown models have no price (cost None, not 0)."""

    def __init__(self, prices: Mapping[str, ModelPrice] | None = None) -> None:
        self._prices: dict[str, ModelPrice] = dict(prices or {})

    def __contains__(self, model: object) -> bool:
        return model in self._prices

    def __len__(self) -> int:
        return len(self._prices)

    def __repr__(self) -> str:
        return f"PriceTable({sorted(self._prices)})"

    def get(self, model: str) -> ModelPrice | None:
        return self._prices.get(model)

    def cost(self, model: str, input_tokens: int, output_tokens: int) -> float | None:
        price = self._prices.get(model)
        return None if price is None else price.cost(input_tokens, output_tokens)

    @classmethod
    def from_mapping(cls, data: Mapping[str, object]) -> PriceTable:
        return cls({str(k): ModelPrice.model_validate(v) for k, v in data.items()})

    @classmethod
    def load(cls, path: Path) -> PriceTable:
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as e:
            raise ValueError(f"cannot read price table {path}: {e}") from e
        if not isinstance(data, dict):
            raise ValueError(f"price table {path} must be a mapping of model -> prices")
        try:
            return cls.from_mapping(data)
        except ValueError as e:
            raise ValueError(f"invalid price table {path}: {e}") from e
