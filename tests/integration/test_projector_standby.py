"""Projector hot standby with real processes: two `provenroute project`, the active one
killed with -9 mid-stream, the standby takes over; every event projected exactly once."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from bench.synthetic import LogBuilder, produce
from contracts.events import CaseGraded
from infra.settings import Settings
from projections.db import connect
from projections.export import compare_schemas
from projections.projector import project_once, projector_lock_name
from projections.replay import drop_schema

pytestmark = pytest.mark.timeout(240)

ROOT = Path(__file__).resolve().parents[2]


def long_story() -> LogBuilder:
    b = LogBuilder(seed=21)
    cfg = b.config()
    for i in range(6):
        b.decider_run(f"s{i}", cfg, reps=2)
        b.decisions(200, f"s{i}", ["sim/swift-mini", "sim/deep-large"])
    return b


def scalar(settings: Settings, schema: str, query: str, params: tuple[Any, ...] = ()) -> Any:
    with connect(settings.database_url, schema) as conn:
        row = conn.execute(query, params).fetchone()
    return None if row is None else row[0]


def projected(settings: Settings, schema: str) -> int:
    """Events projected so far (0 before the projector created its tables)."""
    if scalar(settings, schema, "select to_regclass('projection_offsets')") is None:
        return 0
    return int(
        scalar(settings, schema, "select coalesce(sum(next_offset), 0) from projection_offsets")
    )


def active_pid(settings: Settings, schema: str) -> int | None:
    """The OS pid of the projector holding the schema's lock (from its application_name)."""
    name = scalar(
        settings,
        schema,
        "select a.application_name from pg_locks l join pg_stat_activity a on a.pid = l.pid"
        " where l.locktype = 'advisory' and l.granted"
        " and ((l.classid::bigint << 32) | l.objid::bigint) = hashtextextended(%s, 0)",
        (projector_lock_name(schema),),
    )
    return None if name is None else int(name.rsplit(":", 1)[1])


async def wait_for(predicate: Callable[[], bool], what: str, timeout_s: float = 90.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not await asyncio.to_thread(predicate):
        if time.monotonic() > deadline:
            raise TimeoutError(f"not reached within {timeout_s:.0f}s: {what}")
        await asyncio.sleep(0.1)


@pytest.fixture
def projectors(
    tmp_path: Path,
) -> Iterator[Callable[[dict[str, str], int], list[subprocess.Popen[bytes]]]]:
    started: list[subprocess.Popen[bytes]] = []

    def start(env: dict[str, str], n: int) -> list[subprocess.Popen[bytes]]:
        for i in range(n):
            log = (tmp_path / f"projector-{i}.log").open("wb")
            started.append(
                subprocess.Popen(
                    [sys.executable, "-m", "api.cli", "project"],
                    cwd=ROOT,
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
        return started

    yield start
    for p in started:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in started:
        with contextlib.suppress(subprocess.TimeoutExpired):
            p.wait(20)
        if p.poll() is None:
            p.kill()


async def test_a_standby_takes_over_when_the_active_projector_is_killed(
    kafka_prefix: str, pg_schema: str, settings_for: Any, projectors: Any
) -> None:
    settings = settings_for(kafka_prefix, pg_schema)
    b = long_story()
    half = len(b.messages) // 2
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "PROVENROUTE_TOPIC_PREFIX": kafka_prefix,
        "PROVENROUTE_DB_SCHEMA": pg_schema,
    }
    await produce(settings.kafka_bootstrap, kafka_prefix, b.messages[:half])
    procs = projectors(env, 2)
    pids = {p.pid for p in procs}

    await wait_for(lambda: projected(settings, pg_schema) == half, "the first half projected")
    first = active_pid(settings, pg_schema)
    assert first in pids
    standby = next(p for p in procs if p.pid != first)
    assert standby.poll() is None  # standing by, not exited

    # The rest of the log trickles in; the active projector dies while it projects it.
    async def trickle() -> None:
        rest = b.messages[half:]
        for i in range(0, len(rest), 100):
            await produce(settings.kafka_bootstrap, kafka_prefix, rest[i : i + 100])
            await asyncio.sleep(0.1)

    sending = asyncio.create_task(trickle())
    await wait_for(lambda: projected(settings, pg_schema) > half, "projection moving again")
    assert first is not None
    os.kill(first, signal.SIGKILL)
    killed_at = time.monotonic()
    assert projected(settings, pg_schema) < len(b.messages)  # killed mid-stream
    await sending

    await wait_for(lambda: active_pid(settings, pg_schema) == standby.pid, "the standby active")
    print(f"standby took over {time.monotonic() - killed_at:.2f}s after the kill")
    await wait_for(
        lambda: projected(settings, pg_schema) == len(b.messages), "everything projected"
    )

    # Exactly once: the same rows as one projector draining the whole log, no errors.
    graded = sum(isinstance(e, CaseGraded) for _t, _k, e in b.messages)
    assert scalar(settings, pg_schema, "select count(*) from case_results") == graded
    assert scalar(settings, pg_schema, "select count(*) from projection_errors") == 0
    clean = f"{pg_schema}_clean"
    try:
        await project_once(settings, clean)
        with connect(settings.database_url, pg_schema) as conn:
            assert compare_schemas(conn, pg_schema, clean) == {}
    finally:
        drop_schema(settings.database_url, clean)
