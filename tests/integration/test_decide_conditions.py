"""`provenroute serve` warns when the classifier winner was measured under other conditions
than the provider it calls: a p95 from a simulated provider at latency scale 0.1 says
nothing about one at scale 0 or 1 (real Kafka, PostgreSQL, the simulated provider)."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from contracts.events import ClassifierWinnerPublished
from contracts.events.runs import MeasurementConditions
from contracts.routing_table import ClassifierWinner
from contracts.taxonomy import TIERS
from tests.integration.test_decide_support import (
    candidate,
    decide_settings,
    publish_and_project,
    routing_table,
    run_started,
    running_app,
    sim_url,
    table_published,
    wait_for,
)

__all__ = ["sim_url"]  # the fixture, imported for pytest


@pytest.mark.parametrize(("scale", "warned"), [(0.1, True), (0.0, False)])
async def test_serve_warns_when_the_winner_was_measured_elsewhere(
    kafka_prefix: str,
    pg_schema: str,
    settings_for: Any,
    sim_url: str,
    caplog: pytest.LogCaptureFixture,
    scale: float,
    warned: bool,
) -> None:
    settings = decide_settings(settings_for(kafka_prefix, pg_schema), sim_url)
    measured = MeasurementConditions(
        provider_base_url=sim_url,
        simulated_latency_scale=scale,  # the test's simulated provider serves at 0.0
        classifier_deadline_ms=settings.classifier_deadline_ms,
    )
    classifier_run = run_started("c1", kind="classifier").model_copy(
        update={"conditions": measured}
    )
    winner = ClassifierWinner(
        run_id="c1", model="sim/flash-lite", accuracy=0.9, p95LatencyMs=224.0, reason="x"
    )
    table = routing_table("v1", {t: [candidate("sim/balanced", 0.03)] for t in TIERS})
    await publish_and_project(
        settings,
        [
            classifier_run,
            ClassifierWinnerPublished(
                event_id="w-c1", occurred_at=classifier_run.occurred_at, run_id="c1", winner=winner
            ),
            *table_published(table),
        ],
    )
    caplog.set_level(logging.WARNING, logger="provenroute")
    async with running_app(settings) as (client, runtime):
        await wait_for(lambda: runtime.live is not None and runtime.live.winner is not None, 60)
        differences = await runtime.check_conditions()
        status = (await client.get("/readyz")).json()
    assert bool(differences) == warned, differences
    assert status["classifier"]["measured_under_other_conditions"] == differences
    if warned:
        assert "simulated latency scale 0.1 (measured) vs 0.0" in differences[0]
        assert any("measured (run c1) under other conditions" in r.message for r in caplog.records)
