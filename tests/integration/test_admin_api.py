"""The admin API on real Kafka and PostgreSQL. The worker's part (deciding a command) is
played by the same pure decider it runs (`contracts.command_decider.decide_command`), its events go
through Kafka and the projector like the worker's would."""

from __future__ import annotations

import time
from typing import Any

from aiokafka import AIOKafkaConsumer

from contracts.codec import decode_command
from contracts.command_decider import AdminState, decide_command, evolve_admin
from contracts.commands import Command
from infra.settings import Settings
from tests.integration.test_decide_support import (
    ADMIN,
    candidate,
    decide_settings,
    publish_and_project,
    routing_table,
    running_app,
    sim_url,
    wait_for,
)

__all__ = ["sim_url"]

CONFIG: dict[str, Any] = {
    "classifierModels": ["sim/tiny", "sim/balanced"],
    "deciderModels": [{"model": "sim/balanced", "reasoningEffort": "medium"}],
    "minAccuracy": 0.7,
    "switchCostFactor": 3,
    "benchmarkIdentity": "sim-benchmark",
}


async def _command(settings: Settings, command_id: str, timeout_s: float = 20) -> Command:
    consumer = AIOKafkaConsumer(
        settings.topic("commands"),
        bootstrap_servers=settings.kafka_bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for msgs in (await consumer.getmany(timeout_ms=200)).values():
                for m in msgs:
                    if m.key == command_id.encode() and m.value:
                        return decode_command(m.value)
    finally:
        await consumer.stop()
    raise AssertionError(f"command {command_id} not on the topic")


class FakeWorker:
    """Decides commands with the worker's pure decider and publishes its events."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.state = AdminState()

    async def handle(self, command_id: str) -> None:
        command = await _command(self.settings, command_id)
        outcome = decide_command(
            self.state,
            {},
            command,
            now="2026-06-01T00:00:00.000Z",
            case_ids={"classifier": ["c1", "c2"], "decider": ["d1", "d2"]},
            dataset_hashes={"classifier": "hc", "decider": "hd"},
            credentials=frozenset({"sim-benchmark"}),
        )
        for ev in outcome.events:
            self.state = evolve_admin(self.state, ev)
        await publish_and_project(self.settings, outcome.events)


async def test_admin_config_runs_commands_and_override(
    kafka_prefix: str,
    pg_schema: str,
    settings_for,
    sim_url: str,  # type: ignore[no-untyped-def]
) -> None:
    settings = decide_settings(settings_for(kafka_prefix, pg_schema), sim_url)
    worker = FakeWorker(settings)
    async with running_app(settings) as (client, runtime):
        # auth
        assert (await client.get("/admin/config")).status_code == 401
        bad_token = {"Authorization": "Bearer dev-internal-secret"}
        assert (await client.get("/admin/runs", headers=bad_token)).status_code == 401
        # nothing yet
        assert (await client.get("/admin/config", headers=ADMIN)).status_code == 404
        assert (await client.get("/admin/routing-table", headers=ADMIN)).status_code == 404
        assert (await client.get("/admin/runs", headers=ADMIN)).json() == []

        # a run before any config: posted, then rejected with the reason
        r = await client.post("/admin/runs", json={"kind": "decider"}, headers=ADMIN)
        assert r.status_code == 202, r.text
        early = r.json()["commandId"]
        status = (await client.get(f"/admin/commands/{early}", headers=ADMIN)).json()
        assert status["status"] == "pending" and status["commandType"] == "StartRun"
        await worker.handle(early)
        status = (await client.get(f"/admin/commands/{early}", headers=ADMIN)).json()
        assert status["status"] == "rejected" and "no benchmark config" in status["reason"]

        # invalid configs name the field
        r = await client.put("/admin/config", json={**CONFIG, "minAccuracy": 2}, headers=ADMIN)
        assert r.status_code == 422 and r.json()["fields"] == ["minAccuracy"]
        r = await client.put("/admin/config", json={**CONFIG, "bogus": 1}, headers=ADMIN)
        assert r.status_code == 422 and r.json()["fields"] == ["bogus"]

        r = await client.put("/admin/config", json=CONFIG, headers=ADMIN)
        assert r.status_code == 202
        saved = r.json()
        assert saved["commandType"] == "SaveBenchmarkConfig"
        assert saved["statusUrl"] == f"/admin/commands/{saved['commandId']}"
        await worker.handle(saved["commandId"])
        status = (await client.get(saved["statusUrl"], headers=ADMIN)).json()
        assert status["status"] == "accepted"
        live = (await client.get("/admin/config", headers=ADMIN)).json()
        assert live["config"]["classifierModels"] == ["sim/tiny", "sim/balanced"]
        assert live["config"]["switchCostFactor"] == 3

        # start a run
        r = await client.post("/admin/runs", json={"kind": "decider", "force": True}, headers=ADMIN)
        started = r.json()
        await worker.handle(started["commandId"])
        runs = (await client.get("/admin/runs", headers=ADMIN)).json()
        assert [x["run_id"] for x in runs] == [started["runId"]]
        assert runs[0]["status"] == "running" and runs[0]["force"] is True
        detail = (await client.get(f"/admin/runs/{started['runId']}", headers=ADMIN)).json()
        assert detail["models"][0]["model"] == "sim/balanced"
        assert detail["models"][0]["disposition"] == "enqueued"
        assert detail["summaries"] == []
        r = await client.post("/admin/runs", json={"kind": "bogus"}, headers=ADMIN)
        assert r.status_code == 422 and r.json()["fields"] == ["kind"]

        # routing table, live and as of a time
        from contracts.events import RoutingTablePublished

        table = routing_table(
            started["runId"],
            {t: [candidate("sim/balanced", 0.01)] for t in ("low", "medium", "high")},
            published_at="2026-06-05T00:00:00.000Z",
        )
        await publish_and_project(
            settings,
            [
                RoutingTablePublished(
                    event_id="rtp",
                    occurred_at=table.published_at,
                    run_id=table.version,
                    table=table,
                )
            ],
        )
        got = (await client.get("/admin/routing-table", headers=ADMIN)).json()
        assert got["version"] == started["runId"]
        assert got["tiers"]["low"][0]["model"] == "sim/balanced"
        before = await client.get(
            "/admin/routing-table", params={"as_of": "2026-06-04T00:00:00Z"}, headers=ADMIN
        )
        assert before.status_code == 404
        r = await client.get("/admin/routing-table", params={"as_of": "yesterday"}, headers=ADMIN)
        assert r.status_code == 422 and r.json()["fields"] == ["as_of"]

        # classifier override: posted, decided, projected, NOTIFYed into the live state
        r = await client.put(
            "/admin/classifier-override", json={"model": "not a model"}, headers=ADMIN
        )
        assert r.status_code == 422 and r.json()["fields"] == ["model"]
        r = await client.put(
            "/admin/classifier-override", json={"model": "sim/tiny"}, headers=ADMIN
        )
        assert r.status_code == 202
        await worker.handle(r.json()["commandId"])
        cls = (await client.get("/admin/classifier-winner", headers=ADMIN)).json()
        assert cls["override"] == "sim/tiny" and cls["winner"] is None
        assert cls["effective"] == {"model": "sim/tiny", "source": "override"}
        await wait_for(lambda: runtime.live is not None and runtime.live.override == "sim/tiny", 2)

        # unknown ids
        assert (await client.get("/admin/runs/nope", headers=ADMIN)).status_code == 404
        assert (await client.get("/admin/commands/nope", headers=ADMIN)).status_code == 404

        # OpenAPI lists every endpoint with its auth and error answers
        spec = (await client.get("/openapi.json")).json()
        assert {
            "/decide",
            "/admin/config",
            "/admin/runs",
            "/admin/runs/{run_id}",
            "/admin/routing-table",
            "/admin/classifier-winner",
            "/admin/classifier-override",
            "/admin/commands/{command_id}",
            "/healthz",
            "/readyz",
            "/metrics",
        } <= set(spec["paths"])
        assert "404" in spec["paths"]["/admin/runs/{run_id}"]["get"]["responses"]
        assert spec["paths"]["/admin/config"]["put"]["responses"].keys() >= {"202", "401", "422"}
        # /decide is served by the fast ASGI path, documented by the FastAPI route.
        decide = spec["paths"]["/decide"]["post"]
        body_schema = decide["requestBody"]["content"]["application/json"]["schema"]
        assert body_schema["$ref"].endswith("/DecideRequest")
        ok = decide["responses"]["200"]["content"]["application/json"]["schema"]
        assert ok["$ref"].endswith("/DecideResponse")
        assert decide["responses"].keys() >= {"200", "400", "401", "413", "422"}
