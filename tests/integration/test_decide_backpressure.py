"""No silent drop: with the decision queue full (its drain stalled), /decide keeps answering,
/readyz and /metrics say the queue is full, and every decision still reaches the decisions
topic once the drain runs again (real Kafka, PostgreSQL, the decide app)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer

from contracts.codec import decode_event
from contracts.events import DecisionMade
from contracts.taxonomy import TIERS
from infra.settings import Settings
from tests.integration.test_decide_support import (
    ADMIN,
    INTERNAL,
    candidate,
    decide_settings,
    publish_and_project,
    routing_table,
    running_app,
    sim_url,
    table_published,
    wait_for,
)

__all__ = ["sim_url"]  # the fixture, imported for pytest

N = 130
"""Decisions sent with the drain stalled: more than the queue (100) holds."""


async def _decision_ids(settings: Settings, n: int, timeout_s: float = 120) -> set[str]:
    consumer = AIOKafkaConsumer(
        settings.topic("decisions"),
        bootstrap_servers=settings.kafka_bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    ids: set[str] = set()
    try:
        async with asyncio.timeout(timeout_s):
            while len(ids) < n:
                batch = await consumer.getmany(timeout_ms=200)
                for msgs in batch.values():
                    for m in msgs:
                        event = decode_event(m.value)  # type: ignore[arg-type]
                        assert isinstance(event, DecisionMade)
                        ids.add(event.decision_id)
    finally:
        await consumer.stop()
    return ids


async def test_a_full_queue_spools_shows_in_readyz_and_metrics_and_loses_nothing(
    kafka_prefix: str, pg_schema: str, settings_for: Any, sim_url: str, tmp_path: Path
) -> None:
    settings = decide_settings(
        settings_for(kafka_prefix, pg_schema),
        sim_url,
        decide_event_queue_size=100,
        decide_spool_dir=tmp_path,
    )
    await publish_and_project(
        settings,
        table_published(routing_table("v1", {t: [candidate("sim/balanced", 0.03)] for t in TIERS})),
    )
    async with running_app(settings) as (client, runtime):
        assert (await client.get("/readyz")).status_code == 200
        emitter = runtime.emitter
        assert emitter is not None and emitter._task is not None
        await wait_for(lambda: emitter.connected, 60)
        emitter._task.cancel()  # Kafka "stalls": nothing drains the queue
        answers = []
        for i in range(N):
            body = {"conversationId": f"c{i}", "messages": [{"role": "user", "content": "hi"}]}
            r = await client.post("/decide", json=body, headers=INTERNAL)
            answers.append(r.json())
        assert all(a["model"] == "sim/balanced" for a in answers), answers  # still answering

        ready = await client.get("/readyz")
        assert ready.status_code == 503
        queue = ready.json()["decision_queue"]
        assert queue["full"] is True and queue["spooled"] == N - 100, queue
        metrics = (await client.get("/metrics", headers=ADMIN)).text
        assert "provenroute_decide_queue_full 1.0" in metrics
        spooled = 'provenroute_decide_messages_spooled_total{kind="decision",why="queue_full"}'
        assert f"{spooled} {float(N - 100)}" in metrics

        emitter.start()  # Kafka is back
        ids = await _decision_ids(settings, N)
        assert ids == {a["decisionId"] for a in answers}
        await wait_for(lambda: emitter.status()["spooled"] == 0, 60)
        assert (await client.get("/readyz")).status_code == 200
