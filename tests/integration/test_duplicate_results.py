"""A redelivered case result that differs from the first (a job re-run after a crash): the
aggregator's fold, the live projector and a replay all keep the first by log order."""

from __future__ import annotations

from typing import Any

from bench.synthetic import LogBuilder, produce
from contracts.events import CaseGraded, EventBase
from contracts.run_progress import evolve_run, result_key, run_summaries
from contracts.taxonomy import TIERS, Tier
from infra.settings import Settings
from projections.db import connect
from projections.projector import project_once
from projections.replay import drop_schema, replay

CASES: list[tuple[str, Tier]] = [(f"c{i:02d}", TIERS[i % 3]) for i in range(6)]


def _with_redelivery() -> tuple[list[tuple[str, str, EventBase]], CaseGraded]:
    b = LogBuilder(seed=5)
    b.decider_run("r1", b.config(), cases=CASES)
    messages = list(b.messages)
    i, first = next((i, e) for i, (_t, _k, e) in enumerate(messages) if isinstance(e, CaseGraded))
    differs = first.model_copy(
        update={"score": 1.0 - first.score, "latency_ms": first.latency_ms + 500.0}
    )
    topic, key, _ = messages[i]
    # Once right after the first (same projector batch), once at the end of the log.
    messages[i + 1 : i + 1] = [(topic, key, differs)]
    messages.append((topic, key, differs))
    return messages, first


def _row(settings: Settings, schema: str, e: CaseGraded) -> tuple[Any, ...] | None:
    with connect(settings.database_url, schema) as conn:
        return conn.execute(
            "select score, latency_ms from case_results"
            " where run_id = %s and model = %s and case_id = %s and rep = %s",
            (e.run_id, e.model, e.case_id, e.rep),
        ).fetchone()


async def test_a_differing_redelivery_keeps_the_first_everywhere(
    kafka_prefix: str, pg_schema: str, settings_for: Any
) -> None:
    settings = settings_for(kafka_prefix, pg_schema)
    messages, first = _with_redelivery()

    # The aggregator's fold.
    progress = None
    for _t, _k, e in messages:
        if getattr(e, "run_id", None) == first.run_id:
            progress = evolve_run(progress, e)
    assert progress is not None
    kept = progress.outcomes[result_key(first.model, first.case_id, first.rep)]
    assert (kept.score, kept.latency_ms) == (first.score, first.latency_ms)
    assert any(s.model == first.model for s in run_summaries(progress))

    # The live projector, and a replay of the same log.
    await produce(settings.kafka_bootstrap, kafka_prefix, messages)
    assert await project_once(settings, pg_schema) == len(messages)
    assert _row(settings, pg_schema, first) == (first.score, first.latency_ms)
    target = f"{pg_schema}_replay"
    try:
        await replay(settings, schema=target)
        assert _row(settings, target, first) == (first.score, first.latency_ms)
    finally:
        drop_schema(settings.database_url, target)
