"""The heartbeat board on real Kafka: beats, claims, handled attempts, goodbyes and silence."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

import pytest

from contracts.jobs import CaseJob
from infra.settings import Settings
from streams.agents.case_jobs import CaseJobAgent
from streams.heartbeats import HeartbeatBoard, read_live_set
from streams.topics import WORKER_HEARTBEATS


@pytest.fixture
async def topic(kafka_prefix: str, base_settings: Settings) -> AsyncIterator[str]:
    yield base_settings.model_copy(update={"topic_prefix": kafka_prefix}).topic(
        WORKER_HEARTBEATS.name
    )


@contextlib.asynccontextmanager
async def two_boards(
    settings: Settings, topic: str, interval_s: float
) -> AsyncIterator[tuple[HeartbeatBoard, HeartbeatBoard]]:
    """Workers a and b beating on `topic`; stopped (with their goodbyes) afterwards."""
    boards = [
        HeartbeatBoard(settings.kafka_bootstrap, topic, worker_id=w, interval_s=interval_s)
        for w in ("host-a:1:aaaa", "host-b:1:bbbb")
    ]
    for board in boards:
        await board.start()
    try:
        yield boards[0], boards[1]
    finally:
        for board in boards:
            await board.stop()


def silence(board: HeartbeatBoard) -> None:
    """SIGKILL as the others see it: no more beats, no goodbye."""
    assert board._task is not None
    board._task.cancel()


async def test_two_workers_see_each_other_and_the_first_claim_wins(
    topic: str, base_settings: Settings
) -> None:
    async with two_boards(base_settings, topic, 0.5) as (a, b):
        await a.sync()
        assert a.live() == {"host-a:1:aaaa", "host-b:1:bbbb"}
        # a announces the job first, b's copy later: both read the same order
        a.job_started("run:m:0:0")
        await a.beat()
        b.job_started("run:m:0:0")
        await b.beat()
        await a.sync()
        await b.sync()
        assert a.claim_holder("run:m:0:0") == b.claim_holder("run:m:0:0") == "host-a:1:aaaa"
        # b withdraws and waits; a finishes: b sees the attempt handled
        b.job_ended("run:m:0:0", None)
        a.job_ended("run:m:0:0", 1)
        await a.beat()
        await b.sync()
        assert b.handled_by("run:m:0:0", 1) == a.handled_by("run:m:0:0", 1) == "host-a:1:aaaa"
        assert b.handled_by("run:m:0:0", 2) is None
        assert b.claim_holder("run:m:0:0") is None
        # a clean stop is a goodbye: gone at once, not after the missed beats
        await b.stop()
        await a.sync()
        assert a.live() == {"host-a:1:aaaa"}
    reader = await read_live_set(base_settings.kafka_bootstrap, topic)
    assert reader.workers == frozenset()


async def test_a_silent_worker_drops_off_the_board_and_its_claim_with_it(
    topic: str, base_settings: Settings
) -> None:
    async with two_boards(base_settings, topic, 0.2) as (silent, watcher):
        silent.job_started("run:m:1:0")
        await silent.beat()
        silence(silent)
        await watcher.sync()
        assert watcher.claim_holder("run:m:1:0") == "host-a:1:aaaa"
        deadline = time.monotonic() + 30
        while watcher.claim_holder("run:m:1:0") is not None:
            assert time.monotonic() < deadline, "a silent worker stayed on the board"
            await watcher.sync()
            await asyncio.sleep(0.1)
        live = await read_live_set(base_settings.kafka_bootstrap, topic)
        assert "host-a:1:aaaa" not in live.workers and "host-b:1:bbbb" in live.workers


def job(job_id: str, attempt: int = 1) -> CaseJob:
    return CaseJob(
        job_id=job_id,
        run_id="run",
        kind="decider",
        model="sim/balanced",
        reasoning_effort=None,
        chunk=0,
        rep=0,
        case_ids=("c1",),
        attempt=attempt,
    )


def agent(board: HeartbeatBoard) -> CaseJobAgent:
    return CaseJobAgent(
        None,  # type: ignore[arg-type] # _claim only talks to the board
        None,  # type: ignore[arg-type]
        progress=lambda _run: None,
        job_slots=1,
        clock=lambda: "2026-01-01T00:00:00.000Z",
        fence=board,
    )


async def test_a_second_copy_waits_for_the_live_holder_and_skips_what_it_handled(
    topic: str, base_settings: Settings
) -> None:
    async with two_boards(base_settings, topic, 0.5) as (a, b):
        assert await agent(a)._claim(a, job("j1"))  # nobody else: a runs it
        second = asyncio.create_task(agent(b)._claim(b, job("j1")))
        await asyncio.sleep(3)
        assert not second.done(), "b started a second copy while a runs the job"
        a.job_ended("j1", 1)  # a delivered attempt 1
        assert await asyncio.wait_for(second, 30) is False  # b skips it
        # and so does a, when the partition comes back to it with the job redelivered
        assert await agent(a)._claim(a, job("j1")) is False
        # the retry (attempt 2) is another attempt: b may run it
        assert await agent(b)._claim(b, job("j1", attempt=2))


async def test_a_second_copy_runs_once_the_holder_stops_beating(
    topic: str, base_settings: Settings
) -> None:
    async with two_boards(base_settings, topic, 0.3) as (a, b):
        assert await agent(a)._claim(a, job("j2"))
        silence(a)  # a is SIGKILLed mid-job
        started = time.monotonic()
        assert await asyncio.wait_for(agent(b)._claim(b, job("j2")), 60) is True
        assert time.monotonic() - started >= 0.3 * 2  # it did wait for the silence
