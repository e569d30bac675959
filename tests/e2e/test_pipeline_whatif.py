"""What-if on the demo's own traffic: a real decider run publishes a table, a real decide
service serves the demo's conversations through the gateway client, and `provenroute
whatif` replays that log (issue 17)."""

from __future__ import annotations

import json
import os
from typing import Any

from typer.testing import CliRunner

from api.cli.main import app
from api.gateway_client import demo_conversations
from contracts.config import BenchmarkConfig
from contracts.events import RoutingTablePublished
from contracts.taxonomy import TIERS
from datasets.loader import load_decider_cases
from infra.clock import utc_now
from infra.processes import start_projector, start_serve
from tests.e2e.conftest import Pipeline, run_async

CONFIG = BenchmarkConfig.model_validate(
    {
        "classifierModels": ["sim/flash-lite"],
        "deciderModels": [
            {"model": "sim/flash-lite", "reasoningEffort": "low"},
            {"model": "sim/frontier", "reasoningEffort": "high"},
        ],
        "minAccuracy": 0.7,
        "switchCostFactor": 3,
        "classifierMaxP95LatencyMs": None,
        "benchmarkIdentity": "sim-benchmark",
    }
)


def whatif(env: dict[str, str], *args: str) -> dict[str, Any]:
    out = CliRunner().invoke(app, ["whatif", *args, "--format", "json"], env=env)
    assert out.exit_code == 0, out.output
    report: dict[str, Any] = json.loads(out.output)
    return report


def subset() -> list[str]:
    """Two cases a tier: enough for a table, quick to measure."""
    cases = load_decider_cases()
    return [c.id for t in TIERS for c in [c for c in cases if c.tier == t][:2]]


def test_whatif_replays_the_demo_traffic(idle_pipeline: Pipeline, pg_schema: str) -> None:
    pipeline = idle_pipeline
    pipeline.worker_env_extra["PROVENROUTE_WORKER_DECIDER_CASES"] = ",".join(subset())
    pipeline.start_worker()
    pipeline.save_config(CONFIG)
    run = pipeline.run(pipeline.start_run("decider"))
    version = run.one(RoutingTablePublished).table.version

    env = {
        **os.environ,
        "PROVENROUTE_TOPIC_PREFIX": pipeline.prefix,
        "PROVENROUTE_DB_SCHEMA": pg_schema,
        "PROVENROUTE_PROVIDER_BASE_URL": pipeline.sim_url,
        "PROVENROUTE_DEFAULT_CLASSIFIER_MODEL": "sim/flash-lite",
    }
    since = utc_now()
    with start_projector(pipeline.workdir, env, name="whatif-projector"):
        api, url = start_serve(pipeline.workdir, env, name="whatif-api")
        with api:
            answers = run_async(
                demo_conversations(url, "dev-internal-secret", fallback_model="sim/balanced")
            )
    decided = [a for a in answers if a.path == "decided"]
    assert decided, [a.reason for a in answers]
    assert {a.decision["tableVersion"] for a in decided if a.decision} == {version}

    # The table that served the traffic reproduces every decision, stickiness included.
    same = whatif(env, "--since", since, "--table", version)
    total = next(r for r in same["rows"] if r["tier"] == "total")
    assert same["decisions"] == len(answers)
    assert total["decisions"] == len(decided)
    assert total["changed"] == 0 and same["changes"] == []
    assert total["actual"]["spend_usd"] == total["whatif"]["spend_usd"] > 0
    assert total["actual"]["sticky"] == total["whatif"]["sticky"]

    # Rebuilt under a stricter threshold: still every decision, now against another ranking.
    strict = whatif(env, "--since", since, "--run", "latest", "--min-accuracy", "0.99")
    assert strict["candidate_version"] == version
    assert strict["decisions"] == len(answers)
