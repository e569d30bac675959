"""What a decider run over the SIMULATED fleet must publish, computed from the fleet's profiles.

The simulated provider is deterministic: whether a (model, case, rep) passes is the pure
draw `simulator.behaviour.decider_draw` (test_sim_behaviour proves a right draw passes its
check and a wrong one fails). So each model's accuracy per tier is known exactly before
the run, the above-threshold set follows, and the order within it is the declared price
order (every model sees the same prompts, so cost per case follows price; neighbouring
prices differ by >= 1.5x). Below-threshold models follow by accuracy (ties: cheaper first).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

from contracts.cases import DeciderCase
from contracts.config import BenchmarkConfig
from contracts.summaries import meets_accuracy
from contracts.taxonomy import TIERS, Tier
from simulator import behaviour
from simulator.catalog import decider_case_hash, load_cases
from simulator.fleet import Fleet, ModelProfile, load_fleet

MARGIN = 0.15
"""How far a declared accuracy must sit from minAccuracy for the test's fleet choice to be
meaningful (not a coin flip the draws happen to win)."""


@cache
def fleet() -> Fleet:
    return load_fleet()


@cache
def decider_cases() -> tuple[DeciderCase, ...]:
    return tuple(load_cases()[1])


def profile(model: str) -> ModelProfile:
    p = fleet().get(model)
    assert p is not None, f"{model} is not in the simulated fleet"
    return p


def price_key(model: str) -> tuple[float, float, str]:
    p = profile(model).price
    return (p.input_per_mtok, p.output_per_mtok, model)


@dataclass(frozen=True)
class Expected:
    """One tier's expected candidate, as the table lists it."""

    model: str
    accuracy: float
    graded: int
    meets: bool


def drawn_accuracy(model: str, tier: Tier, reps: int) -> tuple[float, int]:
    """Exact accuracy of `model` over the tier's cases and reps, from the pure draws."""
    prof = profile(model)
    hits = n = 0
    for case in decider_cases():
        if case.tier != tier:
            continue
        digest = decider_case_hash(case)
        for rep in range(reps):
            n += 1
            hits += behaviour.decider_draw(prof, digest, tier, rep).correct
    return hits / n, n


def expected_table(config: BenchmarkConfig) -> dict[Tier, list[Expected]]:
    """The routing table a decider run of `config` (acceptance "point") must publish."""
    assert config.acceptance == "point", "the expectation models point acceptance only"
    out: dict[Tier, list[Expected]] = {}
    for tier in TIERS:
        rows = []
        for d in config.deciderModels:
            acc, n = drawn_accuracy(d.model, tier, config.deciderRepetitions)
            rows.append(Expected(d.model, acc, n, meets_accuracy(acc, config.minAccuracy)))
        above = sorted((r for r in rows if r.meets), key=lambda r: price_key(r.model))
        below = sorted(
            (r for r in rows if not r.meets), key=lambda r: (-r.accuracy, price_key(r.model))
        )
        out[tier] = above + below
    return out


def assert_profiles_decide_first_choices(config: BenchmarkConfig) -> dict[Tier, str]:
    """From the DECLARED per-tier accuracy alone (with a margin): each tier's first choice is
    the cheapest model declared >= minAccuracy + MARGIN, and every cheaper one is declared
    <= minAccuracy - MARGIN. Returns the first choice per tier."""
    firsts: dict[Tier, str] = {}
    by_price = sorted((d.model for d in config.deciderModels), key=price_key)
    for tier in TIERS:
        declared = {m: profile(m).decider.of(tier) for m in by_price}
        first = next(m for m in by_price if declared[m] >= config.minAccuracy + MARGIN)
        for cheaper in by_price[: by_price.index(first)]:
            assert declared[cheaper] <= config.minAccuracy - MARGIN, (
                f"{cheaper} in tier {tier} declares {declared[cheaper]}: too close to "
                f"minAccuracy {config.minAccuracy} for a deterministic expectation"
            )
        firsts[tier] = first
    return firsts
