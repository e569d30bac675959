"""Smoke tests against the real services: Kafka, a Faust worker, PostgreSQL, Docker."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import docker
import psycopg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from contracts.codec import decode_event, encode_event
from contracts.events import ClassifierOverrideSet
from infra.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


def _event() -> ClassifierOverrideSet:
    return ClassifierOverrideSet(
        event_id="e-smoke-1",
        occurred_at="2026-01-01T00:00:00Z",
        correlation_id="c-1",
        causation_id=None,
        model="sim/swift-mini",
    )


async def _consume_one(bootstrap: str, topic: str, timeout_s: float) -> bytes:
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", enable_auto_commit=False
    )
    await consumer.start()
    try:
        msg = await asyncio.wait_for(consumer.getone(), timeout_s)
        assert msg.value is not None
        return msg.value
    finally:
        await consumer.stop()


async def test_event_round_trips_through_kafka_with_idempotent_producer(
    base_settings: Settings, kafka_prefix: str
) -> None:
    topic = f"{kafka_prefix}events"
    producer = AIOKafkaProducer(
        bootstrap_servers=base_settings.kafka_bootstrap, enable_idempotence=True
    )
    await producer.start()
    try:
        await producer.send_and_wait(topic, encode_event(_event()), key=b"run-1")
    finally:
        await producer.stop()
    raw = await _consume_one(base_settings.kafka_bootstrap, topic, 20)
    assert decode_event(raw) == _event()


async def test_faust_agent_receives_a_contract_event(
    base_settings: Settings, kafka_prefix: str
) -> None:
    env = {**os.environ, "SMOKE_PREFIX": kafka_prefix, "PYTHONPATH": str(ROOT)}
    log_path = Path(tempfile.mkdtemp()) / "faust-smoke.log"
    log_file = open(log_path, "wb")  # noqa: SIM115 - closed in finally
    # A file, not a pipe: a pipe nobody reads fills up and blocks the worker.
    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "faust",
            "-A",
            "tests.integration.faust_smoke_app",
            "worker",
            "-l",
            "info",
        ],
        cwd=ROOT,
        env=env,
        stdout=log_file,
        stderr=subprocess.STDOUT,
    )
    try:
        producer = AIOKafkaProducer(
            bootstrap_servers=base_settings.kafka_bootstrap, enable_idempotence=True
        )
        await producer.start()
        try:
            await producer.send_and_wait(f"{kafka_prefix}events", encode_event(_event()))
        finally:
            await producer.stop()
        try:
            reply = await _consume_one(
                base_settings.kafka_bootstrap, f"{kafka_prefix}decisions", 90
            )
        except TimeoutError:
            raise AssertionError(f"no echo; worker log:\n{log_path.read_text()[-3000:]}") from None
        assert reply == b"seen ClassifierOverrideSet"
    finally:
        worker.terminate()
        try:
            worker.communicate(timeout=120)
            stopped_on_term = True
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.communicate()
            stopped_on_term = False
        log_file.close()
    # SIGTERM is how every supervisor stops a worker: it must shut down cleanly on it.
    tail = log_path.read_text()[-3000:]
    assert stopped_on_term, f"the worker ignored SIGTERM; log:\n{tail}"
    assert worker.returncode == 0, f"exit status {worker.returncode}; log:\n{tail}"


def test_postgres_round_trip(base_settings: Settings, pg_schema: str) -> None:
    with psycopg.connect(base_settings.database_url) as conn:
        conn.execute(f'create table "{pg_schema}".t (k text primary key, v int not null)')
        conn.execute(f'insert into "{pg_schema}".t values (%s, %s)', ("a", 41))
        conn.execute(f'update "{pg_schema}".t set v = v + 1 where k = %s', ("a",))
        row = conn.execute(f'select v from "{pg_schema}".t where k = %s', ("a",)).fetchone()
    assert row == (42,)


def test_container_from_base_image_runs_python(base_settings: Settings) -> None:
    client = docker.from_env()
    try:
        out = client.containers.run(
            base_settings.base_image,
            ["python3", "-c", "print(sum(range(10)))"],
            remove=True,
            network_mode="none",
        )
    finally:
        client.close()
    assert out.strip() == b"45"
