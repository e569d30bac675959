""" "Latest" config, override and routing table follow the log, not the worker's clock
(issue 16.7): facts appended later win even when the clock that stamped them stepped back."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from bench.synthetic import LogBuilder, produce
from contracts.command_decider import ADMIN_KEY
from contracts.taxonomy import TIERS, Tier
from projections.db import connect
from projections.projector import project_once
from projections.read_model import PostgresReadModel
from tests.integration.replay_check import assert_bulk_replay_equals

pytestmark = pytest.mark.timeout(120)

CASES: list[tuple[str, Tier]] = [(f"c{i:02d}", TIERS[i % 3]) for i in range(6)]


def stepping_back_log() -> list[tuple[str, str, Any]]:
    """Each fact is followed in the log by a newer one stamped EARLIER (the clock stepped
    back), and the two runs share a partition, as two run ids that hash alike would."""
    b = LogBuilder(seed=31)
    cfg = b.config(min_accuracy=0.7)
    b.clock -= timedelta(seconds=30)
    b.config(min_accuracy=0.8)
    b.override("sim/first")
    b.clock -= timedelta(seconds=30)
    b.override("sim/second")
    b.decider_run("older-in-log", cfg, cases=CASES)
    b.clock -= timedelta(hours=1)
    b.decider_run("newer-in-log", cfg, cases=CASES)
    return [(t, k if k == ADMIN_KEY else "one-partition", e) for t, k, e in b.messages]


async def test_latest_is_the_last_in_the_log_whatever_the_clock_says(
    kafka_prefix: str, pg_schema: str, settings_for: Any
) -> None:
    settings = settings_for(kafka_prefix, pg_schema)
    await produce(settings.kafka_bootstrap, kafka_prefix, stepping_back_log())
    await project_once(settings, pg_schema)

    with connect(settings.database_url, pg_schema) as conn:
        views = conn.execute(
            "select (select min_accuracy from live_config),"
            " (select distinct version from live_routing_table)"
        ).fetchone()
    assert views == (0.8, "newer-in-log")

    read_model = PostgresReadModel(settings.database_url, pg_schema)
    await read_model.open()
    try:
        live_table = await read_model.latest_routing_table()
        saved = await read_model.live_config()
        override = await read_model.classifier_override()
    finally:
        await read_model.close()
    assert live_table is not None and live_table.version == "newer-in-log"
    assert saved is not None and saved.config.minAccuracy == 0.8
    assert override == "sim/second"

    # The bulk replay records the same log positions, so it picks the same facts.
    await assert_bulk_replay_equals(settings, pg_schema)
