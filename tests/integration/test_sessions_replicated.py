"""The sessions log on real Kafka, several replicas in one process: every replica sees every
conversation, racing writes converge without a stale re-anchor, idle sessions expire with
tombstones, and a Kafka problem degrades /decide to a fresh pick."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from api.decide.metrics import DecideMetrics
from api.decide.session_record import remember_classification, successor, with_incumbent
from api.decide.sessions import EXPIRES_HEADER, Sessions
from contracts.classification import Classification
from contracts.decision import SessionState
from infra.settings import Settings
from tests.integration.test_decide_support import (
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
from tests.unit.test_taxonomy_tiers import LABEL

__all__ = ["sim_url"]

C = Classification.model_validate(LABEL)


def state(model: str) -> SessionState:
    return SessionState(model=model, reasoning_effort="medium", table_version="v1")


class Replicas:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.started: list[Sessions] = []

    async def start(
        self, name: str, *, ttl_s: float = 3600.0, clock: Callable[[], float] = time.time
    ) -> Sessions:
        s = Sessions(
            bootstrap=self.settings.kafka_bootstrap,
            topic=self.settings.topic("decide-sessions"),
            replica_id=name,
            metrics=DecideMetrics(),
            ttl_s=ttl_s,
            clock=clock,
        )
        s.start()
        self.started.append(s)
        await asyncio.wait_for(s.wait_ready(), 60)
        return s


@pytest.fixture
async def replicas(kafka_prefix: str, settings_for) -> AsyncIterator[Replicas]:  # type: ignore[no-untyped-def]
    r = Replicas(settings_for(kafka_prefix))
    yield r
    for s in r.started:
        await s.stop()


async def produce(settings: Settings, key: str, value: bytes) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap)
    await producer.start()
    try:
        await producer.send_and_wait(
            settings.topic("decide-sessions"), value, key=f'"{key}"'.encode()
        )
    finally:
        await producer.stop()


def version_on(s: Sessions, key: str) -> int:
    record = s.store.confirmed(key)
    return record.version if record is not None else 0


async def test_a_write_on_one_replica_is_read_on_the_other(replicas: Replicas) -> None:
    a = await replicas.start("A")
    b = await replicas.start("B")
    a.update("c1", None, with_incumbent(None, state("m/x")))
    await wait_for(lambda: b.get("c1") is not None, 30)
    got = b.get("c1")
    assert got is not None and got.incumbent == state("m/x") and got.writer == "A"
    # A replica started later reads it back from the log.
    c = await replicas.start("C")
    assert c.get("c1") == got


async def test_racing_writes_never_re_anchor_on_a_stale_incumbent(replicas: Replicas) -> None:
    a = await replicas.start("A")
    b = await replicas.start("B")
    a.update("c", None, with_incumbent(None, state("m/old")))
    await wait_for(lambda: version_on(a, "c") == 1 and version_on(b, "c") == 1, 30)
    base_a, base_b = a.get("c"), b.get("c")
    assert base_a is not None and base_a == base_b

    # Two turns of one conversation in flight at once. A switches the session to m/new and
    # its write reaches the log; B's turn, decided on version 1, kept m/old and arrives late
    # (B had not seen A's write, or its producer re-sent an old batch).
    a.update("c", base_a, with_incumbent(base_a, state("m/new")))
    await wait_for(lambda: version_on(a, "c") == 2 and version_on(b, "c") == 2, 30)
    stale = successor(
        base_b, remember_classification(base_b, "clf", "h", C), base_b, now=time.time(), writer="B"
    )
    assert stale.version == 2 and stale.incumbent == state("m/old")
    await produce(replicas.settings, "c", stale.model_dump_json().encode())
    await wait_for(lambda: a.applied >= 3 and b.applied >= 3, 30)
    for s in (a, b):
        got = s.get("c")
        assert got is not None and got.incumbent == state("m/new") and got.writer == "A", s

    # Truly simultaneous writes of one version: whichever the log has first wins, everywhere.
    base = a.get("c")
    a.update("c", base, with_incumbent(base, state("m/a")))
    b.update("c", base, with_incumbent(base, state("m/b")))
    await wait_for(lambda: a.applied >= 5 and b.applied >= 5, 30)
    assert a.get("c") == b.get("c") and a.store.pending == b.store.pending == {}

    # The same race inside one replica rebases instead: B's later turn, decided on the stale
    # m/old, keeps m/new and adds its classification.
    base = b.get("c")
    assert base is not None
    b.update("c", base, with_incumbent(base, state("m/third")))  # the first to finish
    b.update("c", base, remember_classification(base, "clf", "h2", C))  # started on `base`
    await wait_for(lambda: version_on(a, "c") == 5, 30)
    final = a.get("c")
    assert final is not None and final.incumbent == state("m/third")
    assert "h2" in {e.content_hash for e in final.classifications}


async def test_idle_sessions_expire_with_tombstones_and_stay_gone_after_a_restart(
    replicas: Replicas,
    settings_for,
    kafka_prefix: str,  # type: ignore[no-untyped-def]
) -> None:
    later = [0.0]

    def clock() -> float:
        return time.time() + later[0]

    a = await replicas.start("A", ttl_s=600.0, clock=clock)
    b = await replicas.start("B", ttl_s=600.0, clock=clock)
    a.update("idle", None, with_incumbent(None, state("m/x")))
    await wait_for(lambda: version_on(b, "idle") == 1, 30)
    later[0] = 300.0
    b.update("busy", None, with_incumbent(None, state("m/y")))
    await wait_for(lambda: version_on(a, "busy") == 1, 30)

    later[0] = 700.0  # "idle" was last written 700 s ago, "busy" 400 s ago
    assert a.sweep_once() == (1, None)
    await wait_for(lambda: b.store.confirmed("idle") is None, 30)
    assert a.store.confirmed("idle") is None
    assert b.get("busy") is not None and a.store.count() == b.store.count() == 1

    # On the log: a tombstone naming the version it expired, by the replica that swept.
    settings = settings_for(kafka_prefix)
    consumer = AIOKafkaConsumer(
        settings.topic("decide-sessions"),
        bootstrap_servers=settings.kafka_bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        tombstones = []
        deadline = time.monotonic() + 30
        while not tombstones and time.monotonic() < deadline:
            for msgs in (await consumer.getmany(timeout_ms=500)).values():
                tombstones += [m for m in msgs if m.value is None]
    finally:
        await consumer.stop()
    assert [(m.key, dict(m.headers)[EXPIRES_HEADER]) for m in tombstones] == [(b'"idle"', b"1")]

    c = await replicas.start("C", ttl_s=600.0, clock=clock)
    assert c.get("idle") is None and c.get("busy") is not None


async def test_kafka_down_degrades_to_a_fresh_pick_counted_in_metrics(
    kafka_prefix: str,
    pg_schema: str,
    settings_for,
    sim_url: str,  # type: ignore[no-untyped-def]
) -> None:
    settings = decide_settings(settings_for(kafka_prefix, pg_schema), sim_url)
    table = routing_table(
        "v1", {t: [candidate("sim/balanced", 0.03)] for t in ("low", "medium", "high")}
    )
    await publish_and_project(settings, table_published(table))
    # Nothing listens there: the sessions log cannot be read, nor decisions sent.
    dead = settings.model_copy(
        update={"kafka_bootstrap": "127.0.0.1:1", "decide_startup_timeout_s": 3.0}
    )
    async with running_app(dead) as (client, runtime):
        assert runtime.sessions is not None and not runtime.sessions.ready
        assert (await client.get("/readyz")).status_code == 503
        body = {"conversationId": "k", "messages": [{"role": "user", "content": "Fix the bug"}]}
        for _ in range(2):
            out = (await client.post("/decide", json=body, headers=INTERNAL)).json()
            assert out["nullReason"] is None and out["model"] == "sim/balanced"
            assert out["sticky"] is False
        metrics = (await client.get("/metrics")).text
        assert 'provenroute_sessions_degraded_total{reason="not_ready"} 2.0' in metrics
