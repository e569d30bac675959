"""The CLI's reads come from the one read model over the projections (real Kafka and
PostgreSQL): `run show`, `routing-table show` and `routing-table diff`."""

from __future__ import annotations

from typing import Any

import pytest
from typer.testing import CliRunner

from api.cli.main import app
from bench.synthetic import LogBuilder, produce
from contracts.events import CaseGraded
from contracts.taxonomy import TIERS, Tier
from projections.projector import project_once

pytestmark = pytest.mark.timeout(120)

CASES: list[tuple[str, Tier]] = [(f"c{i:02d}", TIERS[i % 3]) for i in range(9)]


@pytest.fixture
async def projected(kafka_prefix: str, pg_schema: str, settings_for: Any) -> dict[str, str]:
    """A config, a decider run r1, a classifier run c1 and a forced decider run r2,
    projected into the test's schema; the environment the CLI reads its settings from."""
    settings = settings_for(kafka_prefix, pg_schema)
    b = LogBuilder(seed=5)
    cfg = b.config(min_accuracy=0.7)
    b.decider_run("r1", cfg, cases=CASES)
    b.classifier_run("c1", cfg, cases=6)
    b.now(600)
    b.decider_run("r2", b.config(min_accuracy=0.8), cases=CASES)
    await produce(settings.kafka_bootstrap, kafka_prefix, b.messages)
    assert await project_once(settings, pg_schema) == len(b.messages)
    graded = sum(isinstance(e, CaseGraded) and e.run_id == "r1" for _t, _k, e in b.messages)
    return {
        "PROVENROUTE_TOPIC_PREFIX": kafka_prefix,
        "PROVENROUTE_DB_SCHEMA": pg_schema,
        "R1_GRADED": str(graded),
    }


def cli(env: dict[str, str], *args: str) -> Any:
    return CliRunner().invoke(app, list(args), env={**env, "COLUMNS": "240"})


def test_run_show_reads_the_projection(projected: dict[str, str]) -> None:
    shown = cli(projected, "run", "show", "r1")
    assert shown.exit_code == 0, shown.output
    graded = projected["R1_GRADED"]
    assert f"run r1: decider, completed, {graded}/{graded} results" in shown.output
    assert "model summaries" in shown.output
    assert "routing table r1" in shown.output

    winner = cli(projected, "run", "show", "c1")
    assert winner.exit_code == 0, winner.output
    assert "run c1: classifier, completed" in winner.output
    assert "classifier winner:" in winner.output

    unknown = cli(projected, "run", "show", "nope")
    assert unknown.exit_code == 1
    assert "unknown run nope" in unknown.output


def test_routing_table_show_and_diff(projected: dict[str, str]) -> None:
    shown = cli(projected, "routing-table", "show")
    assert shown.exit_code == 0, shown.output
    assert "routing table r2" in shown.output
    assert "case results in r1" in shown.output  # carried cells link to the measuring run

    diff = cli(projected, "routing-table", "diff", "r1", "r2")
    assert diff.exit_code == 0, diff.output
    assert "r1 (" in diff.output and "-> r2 (" in diff.output
    assert "settings: minAccuracy: 0.7 -> 0.8" in diff.output

    missing = cli(projected, "routing-table", "diff", "r1", "nope")
    assert missing.exit_code == 1
    assert "no routing table for 'nope'" in missing.output
