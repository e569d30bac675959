"""`provenroute whatif` over real Kafka and PostgreSQL: the decisions come from the decisions
topic, the tables and run snapshots from the projection, and the report is the pure replay
of exactly those inputs."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from typer.testing import CliRunner

from api.cli.main import app
from api.ui.auth import COOKIE, new_session
from bench.synthetic import LogBuilder, produce
from contracts.events import DecisionMade, ModelSummarized, RoutingTablePublished, RunStarted
from contracts.routing_builder import build_routing_table
from contracts.routing_table import RoutingTable
from contracts.taxonomy import TIERS, Tier
from contracts.whatif import ServedDecision, replay
from projections.projector import project_once
from tests.integration.test_decide_support import decide_settings, running_app, sim_url

__all__ = ["sim_url"]

pytestmark = pytest.mark.timeout(180)

CASES: list[tuple[str, Tier]] = [(f"c{i:02d}", TIERS[i % 3]) for i in range(9)]


@pytest.fixture
async def logged(kafka_prefix: str, pg_schema: str, settings_for: Any) -> dict[str, Any]:
    settings = settings_for(kafka_prefix, pg_schema)
    b = LogBuilder(seed=11)
    cfg = b.config(min_accuracy=0.6)
    b.decider_run("r1", cfg, cases=CASES)
    b.now(600)
    b.decider_run("r2", b.config(min_accuracy=0.9), cases=CASES, force=True)
    tables = {
        e.table.version: e.table for _t, _k, e in b.messages if isinstance(e, RoutingTablePublished)
    }
    r1_models = sorted({c.model for cands in tables["r1"].tiers.values() for c in cands})
    b.decisions(80, table_version="r1", models=r1_models)
    await produce(settings.kafka_bootstrap, kafka_prefix, b.messages)
    assert await project_once(settings, pg_schema) == len(b.messages)
    served = [
        ServedDecision(
            conversation_id=e.conversation_id,
            tier=e.tier,
            model=e.model,
            reasoning_effort=e.reasoning_effort,
            sticky=e.sticky,
            classification_fallback=e.classification_fallback,
            table_version=e.table_version,
        )
        for _t, _k, e in b.messages
        if isinstance(e, DecisionMade)
    ]
    return {
        "env": {"PROVENROUTE_TOPIC_PREFIX": kafka_prefix, "PROVENROUTE_DB_SCHEMA": pg_schema},
        "tables": tables,
        "served": served,
        "builder": b,
    }


def whatif(env: dict[str, str], *args: str) -> Any:
    return CliRunner().invoke(
        app, ["whatif", "--since", "2000-01-01T00:00:00Z", *args], env={**env, "COLUMNS": "200"}
    )


def test_report_is_the_replay_of_the_logged_decisions(logged: dict[str, Any]) -> None:
    tables: dict[str, RoutingTable] = logged["tables"]
    out = whatif(logged["env"], "--table", "r2", "--format", "json")
    assert out.exit_code == 0, out.output
    got = json.loads(out.output)
    want = replay(logged["served"], tables["r2"], {"r1": tables["r1"]})
    assert got == want.model_dump(mode="json")
    assert got["decisions"] == 80
    # the synthetic log serves models at random: against r2 some decisions must change
    assert next(r for r in got["rows"] if r["tier"] == "total")["changed"] > 0

    shown = whatif(logged["env"], "--table", "latest")
    assert shown.exit_code == 0, shown.output
    assert "what-if against table r2" in shown.output


def test_a_run_rebuilt_under_other_settings(logged: dict[str, Any]) -> None:
    b = logged["builder"]
    snapshot = next(
        e.config for _t, _k, e in b.messages if isinstance(e, RunStarted) and e.run_id == "r1"
    )
    summaries = [
        e.summary for _t, _k, e in b.messages if isinstance(e, ModelSummarized) and e.run_id == "r1"
    ]
    strict = snapshot.model_copy(update={"minAccuracy": 0.99, "switchCostFactor": 1.0})
    rebuilt = build_routing_table(summaries, config=strict, run_id="r1", published_at="x")
    assert isinstance(rebuilt, RoutingTable)
    assert rebuilt.tiers != logged["tables"]["r1"].tiers  # the threshold reorders candidates

    out = whatif(
        logged["env"], "--run", "r1", "--min-accuracy", "0.99", "--switch-cost-factor", "1.0",
        "--format", "json",
    )  # fmt: skip
    assert out.exit_code == 0, out.output
    want = replay(logged["served"], rebuilt, {"r1": logged["tables"]["r1"]})
    assert json.loads(out.output) == want.model_dump(mode="json")


def test_bad_requests_are_refused_clearly(logged: dict[str, Any]) -> None:
    both = whatif(logged["env"], "--table", "r1", "--run", "r1")
    assert both.exit_code == 2 and "exactly one of --table and --run" in both.output
    missing = whatif(logged["env"], "--table", "nope")
    assert missing.exit_code == 2 and "no routing table 'nope'" in missing.output
    classifier_run = whatif(logged["env"], "--run", "nope")
    assert classifier_run.exit_code == 2 and "no decider run 'nope'" in classifier_run.output
    parquet = whatif(logged["env"], "--table", "r1", "--format", "parquet")
    assert parquet.exit_code == 2 and "--output" in parquet.output


async def test_the_admin_page_compares_the_live_table_with_a_candidate(
    logged: dict[str, Any], settings_for: Any, sim_url: str
) -> None:
    env = logged["env"]
    settings = decide_settings(
        settings_for(env["PROVENROUTE_TOPIC_PREFIX"], env["PROVENROUTE_DB_SCHEMA"]), sim_url
    )
    cookie = {COOKIE: new_session(settings.admin_token.get_secret_value())}
    async with running_app(settings) as (client, _runtime):
        client.cookies.update(cookie)
        form = await client.get("/admin/ui/whatif")
        assert form.status_code == 200
        assert 'id="whatif-form"' in form.text and "whatif-report" not in form.text
        assert "The live table is <code>r2" in form.text

        # The page bounds its window; the records were produced within the last minutes.
        since = (datetime.now(UTC) - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M")
        too_long = await client.get(
            "/admin/ui/whatif", params={"since": "2000-01-01T00:00", "table": "r2"}
        )
        assert "the window is limited" in too_long.text
        shown = await client.get("/admin/ui/whatif", params={"since": since, "table": "r2"})
        assert shown.status_code == 200, shown.text[:500]
        want = replay(logged["served"], logged["tables"]["r2"], {"r1": logged["tables"]["r1"]})
        total = next(r for r in want.rows if r.tier == "total")
        assert f"{want.decisions} decisions in the window" in shown.text
        assert f"{total.changed} would change" in shown.text
        for change in want.changes:
            assert f"<td>{change.served}</td><td>{change.candidate}</td>" in shown.text

        refused = await client.get(
            "/admin/ui/whatif", params={"since": since, "table": "r2", "run": "r1"}
        )
        assert refused.status_code == 200
        assert "not both" in refused.text and "whatif-report" not in refused.text
