"""Helpers of the decide and admin API tests (no tests here): events into Kafka and the
projection, the simulated provider in a thread, the app run in-process with its lifespan."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any

import httpx
import pytest
import uvicorn
from aiokafka import AIOKafkaProducer

from api.app import create_app
from api.runtime import Runtime
from contracts.codec import encode_event
from contracts.command_decider import event_key
from contracts.config import BenchmarkConfig, DeciderModel
from contracts.envelope import EventBase
from contracts.events import ClassifierOverrideSet, RoutingTablePublished, RunStarted
from contracts.routing_table import RoutingCandidate, RoutingTable
from infra.processes import free_port
from infra.settings import Settings
from projections.projector import project_once

INTERNAL = {"Authorization": "Bearer dev-internal-secret"}
ADMIN = {"Authorization": "Bearer dev-admin-token"}
NOW = "2026-06-01T00:00:00.000Z"


class _Server(uvicorn.Server):
    def install_signal_handlers(self) -> None:  # running in a thread
        pass


@contextlib.contextmanager
def serve_in_thread(app: Any, port: int) -> Iterator[str]:
    server = _Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline:
            raise RuntimeError("server did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(5)


@pytest.fixture(scope="module")
def sim_url() -> Iterator[str]:
    """The simulated provider (latency scale 0) at `<url>/v1`."""
    from simulator.server import create_app as create_sim

    with serve_in_thread(create_sim(latency_scale=0.0), free_port()) as url:
        yield f"{url}/v1"


@contextlib.contextmanager
def hanging_server() -> Iterator[str]:
    """An endpoint that accepts connections and never answers (a hung classifier)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    port = sock.getsockname()[1]
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        sock.settimeout(0.2)
        while not stop.is_set():
            with contextlib.suppress(OSError):
                conn, _ = sock.accept()
                held.append(conn)

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        stop.set()
        thread.join(2)
        for c in held:
            c.close()
        sock.close()


def decide_settings(settings: Settings, provider_url: str, **extra: Any) -> Settings:
    return settings.model_copy(
        update={
            "provider_base_url": provider_url,
            "default_classifier_model": "sim/balanced",
            "decide_startup_timeout_s": 60.0,
            **extra,
        }
    )


@contextlib.asynccontextmanager
async def running_app(settings: Settings) -> AsyncIterator[tuple[httpx.AsyncClient, Runtime]]:
    """The app with its lifespan on this loop, and a client speaking ASGI to it."""
    app = create_app(settings)
    runtime: Runtime = app.state.runtime
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://decide") as client:
            yield client, runtime


# ---- events ----------------------------------------------------------------------------


def candidate(
    model: str, cost: float, *, effort: str = "medium", accuracy: float = 0.9, meets: bool = True
) -> RoutingCandidate:
    return RoutingCandidate(
        model=model,
        reasoningEffort=effort,  # type: ignore[arg-type]
        accuracy=accuracy,
        accuracyLowerBound=max(0.0, accuracy - 0.1),
        avgCostUsd=cost,
        p95LatencyMs=100.0,
        graded=20,
        meetsThreshold=meets,
    )


def routing_table(
    version: str,
    tiers: dict[str, Sequence[RoutingCandidate]],
    *,
    factor: float = 3.0,
    published_at: str = NOW,
) -> RoutingTable:
    return RoutingTable(
        version=version,
        published_at=published_at,
        minAccuracy=0.7,
        switchCostFactor=factor,
        tiers={t: tuple(cs) for t, cs in tiers.items()},  # type: ignore[misc]
    )


CONFIG = BenchmarkConfig(
    classifierModels=("sim/balanced",),
    deciderModels=(DeciderModel(model="sim/balanced", reasoningEffort="medium"),),
    benchmarkIdentity="sim-benchmark",
)


def run_started(run_id: str, kind: str = "decider", at: str = NOW) -> RunStarted:
    return RunStarted(
        event_id=f"rs-{run_id}",
        occurred_at=at,
        run_id=run_id,
        kind=kind,  # type: ignore[arg-type]
        force=False,
        config=CONFIG,
        dataset_size=10,
    )


def table_published(table: RoutingTable) -> list[EventBase]:
    return [
        run_started(table.version, at=table.published_at),
        RoutingTablePublished(
            event_id=f"rtp-{table.version}",
            occurred_at=table.published_at,
            run_id=table.version,
            table=table,
        ),
    ]


def override_set(model: str | None, event_id: str, at: str = NOW) -> ClassifierOverrideSet:
    return ClassifierOverrideSet(event_id=event_id, occurred_at=at, model=model)


async def publish(settings: Settings, events: Sequence[EventBase]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, enable_idempotence=True)
    await producer.start()
    try:
        for ev in events:
            await producer.send_and_wait(
                settings.topic("events"), encode_event(ev), key=event_key(ev).encode()
            )
    finally:
        await producer.stop()


async def publish_and_project(settings: Settings, events: Sequence[EventBase]) -> None:
    await publish(settings, events)
    await project_once(settings, settings.db_schema)


async def wait_for(predicate: Any, timeout_s: float, poll_s: float = 0.02) -> float:
    """Seconds until `predicate()` held; TimeoutError after `timeout_s`."""
    started = time.monotonic()
    while not predicate():
        if time.monotonic() - started > timeout_s:
            raise TimeoutError(f"condition not met within {timeout_s}s")
        await asyncio.sleep(poll_s)
    return time.monotonic() - started
