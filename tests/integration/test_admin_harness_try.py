"""`GET /admin/harness-try` on the real app (Kafka, PostgreSQL, Docker), SIMULATED provider:
one case through the built-in harness in a fresh container, graded; bad requests are told
apart; the credential never shows."""

from __future__ import annotations

import uuid

from pydantic import SecretStr

from infra.settings import Settings
from streams.docker_sandbox import DEFAULT_IMAGE
from tests.integration.test_cli_harness_docker import agentic_sample
from tests.integration.test_decide_support import ADMIN, decide_settings, running_app, sim_url

__all__ = ["sim_url"]

SECRET = "sk-try-PLANTED-" + uuid.uuid4().hex


async def test_harness_try_runs_one_case_and_grades_it(
    kafka_prefix: str,
    pg_schema: str,
    settings_for,
    sim_url: str,  # type: ignore[no-untyped-def]
) -> None:
    base: Settings = decide_settings(settings_for(kafka_prefix, pg_schema), sim_url)
    settings = base.model_copy(
        update={"provider_credentials": {"bench": SecretStr(SECRET)}, "docker_image": DEFAULT_IMAGE}
    )
    case = agentic_sample()[0]
    query = {"harness": "builtin", "model": "sim/frontier", "case": case.id, "identity": "bench"}
    async with running_app(settings) as (http, _):
        assert (await http.get("/admin/harness-try", params=query)).status_code == 401
        r = await http.get("/admin/harness-try", params=query, headers=ADMIN, timeout=300)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["case"] == case.id and body["passed"] is True, body
        result = body["result"]
        assert result["harness"] == "builtin" and result["stop_reason"] == "final"
        assert result["steps"] >= 1 and result["answer"]
        assert SECRET not in r.text

        async def status_of(**change: str) -> int:
            params = {**query, **change}
            resp = await http.get("/admin/harness-try", params=params, headers=ADMIN)
            return resp.status_code

        assert await status_of(case="no-such-case") == 404
        assert await status_of(harness="telepathy") == 422
        assert await status_of(model="not a model id") == 422
        assert await status_of(identity="nobody") == 422
