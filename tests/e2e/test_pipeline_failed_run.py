"""A run that measured nothing is not "completed": a worker whose provider refuses every call
dead-letters every job, and the run ends as failed with the reason, on the log, in the
projection, the admin API, the admin page and `provenroute run show` (real Kafka, worker,
PostgreSQL)."""

from __future__ import annotations

import subprocess
import sys

from contracts.config import BenchmarkConfig
from contracts.events import ClassifierWinnerPublished, ModelSummarized, RunCompleted
from infra.processes import free_port
from infra.settings import PROJECT_ROOT
from projections.projector import project_once
from tests.e2e.conftest import Pipeline, run_async
from tests.e2e.test_pipeline_decider import THREE_MODELS
from tests.integration.test_decide_support import ADMIN, decide_settings, running_app

ONE_CLASSIFIER = THREE_MODELS.model_copy(update={"classifierModels": ("sim/flash-lite",)})


async def _api_and_page(settings: object, run_id: str) -> tuple[dict[str, object], str]:
    async with running_app(settings) as (client, _):  # type: ignore[arg-type]
        detail = (await client.get(f"/admin/runs/{run_id}", headers=ADMIN)).json()
        await client.post("/admin/ui/login", data={"token": "dev-admin-token"})
        page = (await client.get(f"/admin/ui/runs/{run_id}")).text
    return detail, page


def test_a_run_whose_every_call_failed_ends_as_failed_with_the_reason(
    idle_pipeline: Pipeline, pg_schema: str
) -> None:
    p = idle_pipeline
    dead_port = free_port()  # nothing listens: every provider call is refused
    p.worker_env_extra.update(
        {
            "PROVENROUTE_PROVIDER_BASE_URL": f"http://127.0.0.1:{dead_port}/v1",
            "PROVENROUTE_PROVIDER_MAX_RETRIES": "0",
        }
    )
    p.start_worker()
    config: BenchmarkConfig = ONE_CLASSIFIER
    p.save_config(config)
    run = p.run(p.start_run("classifier"))

    # The run recorded what it measured under: the endpoint it called and /decide's deadline.
    conditions = run.started.conditions
    assert conditions is not None
    assert conditions.provider_base_url == f"http://127.0.0.1:{dead_port}/v1"
    assert conditions.classifier_deadline_ms == p.settings.classifier_deadline_ms
    assert conditions.simulated_latency_scale is None  # nobody answered to say

    done = run.one(RunCompleted)
    assert done.status == "failed" and done.graded == 0 and done.ungraded == done.expected > 0
    assert done.failure_reason is not None
    assert f"all {done.expected} expected results were lost" in done.failure_reason
    assert "last error:" in done.failure_reason
    assert not run.of(ModelSummarized) and not run.of(ClassifierWinnerPublished)

    settings = p.settings.model_copy(update={"db_schema": pg_schema})
    run_async(project_once(settings, pg_schema))
    detail, page = run_async(_api_and_page(decide_settings(settings, p.sim_url), run.run_id))
    assert detail["status"] == "failed"
    assert detail["failure_reason"] == done.failure_reason
    assert 'data-status="failed"' in page and "Failed: all" in page

    shown = subprocess.run(
        [sys.executable, "-m", "api.cli", "run", "show", run.run_id],
        cwd=PROJECT_ROOT,
        env={**p.worker_env(), "PROVENROUTE_DB_SCHEMA": pg_schema},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert shown.returncode == 0, shown.stderr
    assert "failed" in shown.stdout and "expected results were lost" in shown.stdout
