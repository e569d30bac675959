"""The warm pool of job containers on the real Docker engine: claims, refills, and nothing
left behind when a job is cancelled or its worker is killed mid-job.

No mocks. In CI a missing Docker daemon is a failure, never a skip. Waits have generous
deadlines; nothing here asserts on wall-clock time.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from streams.docker_sandbox import DockerSandbox, container_name
from streams.sandbox import Sandbox, SandboxError
from streams.sandbox_pool import SandboxPool
from tests.integration.docker_support import TEST_LABEL, ours

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def client(docker_client: Any) -> Any:
    return docker_client


@pytest.fixture
def run_id() -> str:
    return uuid.uuid4().hex[:12]


def pool_for(client: Any, run_id: str, **kw: Any) -> SandboxPool:
    return SandboxPool(
        lambda key: DockerSandbox(key, client=client, labels={TEST_LABEL: run_id}), **kw
    )


async def wait_until(predicate: Any, what: str, deadline_s: float = 90.0) -> None:
    deadline = time.monotonic() + deadline_s
    while not await asyncio.to_thread(predicate):
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        await asyncio.sleep(0.2)


async def test_jobs_get_containers_started_ahead_and_the_pool_refills(
    client: Any, run_id: str
) -> None:
    pool = pool_for(client, run_id, spare=2)
    try:
        first = pool.sandbox(f"test-{run_id}:pool:0:0")
        assert isinstance(first, Sandbox)
        await first.start()
        assert first.name == container_name(f"test-{run_id}:pool:0:0")
        r = await first.exec("echo $GREETING; cat", 10, env={"GREETING": "hi"}, stdin="in\n")
        assert (r.exit_code, r.stdout) == (0, "hi\nin\n")
        # two spares start while the first job runs
        await wait_until(lambda: len(ours(client, run_id)) == 3, "two warm spares")
        await wait_until(
            lambda: all(c.status == "running" for c in ours(client, run_id)), "spares running"
        )
        warm_ids = {c.id for c in ours(client, run_id) if c.name != first.name}

        second = pool.sandbox(f"test-{run_id}:pool:1:0")
        await second.start()
        [mine] = [c for c in ours(client, run_id) if c.name == second.name]
        assert mine.id in warm_ids  # a container that was running before the job asked
        assert second.cold_start_ms is not None
        await second.reset({"a.txt": "pristine"})
        await second.exec("echo dirty > a.txt; touch b.txt", 10)
        await second.reset()  # the pristine copy, restored in the container
        assert (await second.exec("ls; cat a.txt", 10)).stdout == "a.txt\npristine"
        await first.close()
        await second.close()
        with pytest.raises(SandboxError):
            await first.exec("true", 5)
    finally:
        await pool.aclose()
    assert ours(client, run_id) == []


async def test_spares_go_when_the_pool_sits_idle(client: Any, run_id: str) -> None:
    pool = pool_for(client, run_id, spare=1, idle_s=2.0)
    try:
        async with pool.sandbox(f"test-{run_id}:idle:0:0") as sb:
            await sb.exec("true", 10)
        await wait_until(lambda: ours(client, run_id) == [], "the idle spare to be removed")
        assert pool.warm == 0
    finally:
        await pool.aclose()


async def test_cancelled_jobs_leave_no_container(client: Any, run_id: str) -> None:
    pool = pool_for(client, run_id, spare=2)
    busy = asyncio.Event()

    async def job(i: int) -> None:
        async with pool.sandbox(f"test-{run_id}:cancel:{i}:0") as sb:
            busy.set()
            await sb.exec("sleep 120", 180)  # cancelled mid-exec

    try:
        running = asyncio.create_task(job(0))
        await asyncio.wait_for(busy.wait(), 120)
        claiming = [asyncio.create_task(job(i)) for i in (1, 2, 3)]
        await asyncio.sleep(0)  # some claims are still waiting for a container
        for task in (running, *claiming):
            task.cancel()
        results = await asyncio.gather(running, *claiming, return_exceptions=True)
        assert all(isinstance(r, asyncio.CancelledError) for r in results), results
        # the pool survives its jobs' cancellation and still serves
        async with pool.sandbox(f"test-{run_id}:cancel:after:0") as sb:
            assert (await sb.exec("echo ok", 10)).stdout == "ok\n"
    finally:
        await pool.aclose()
    assert ours(client, run_id) == []


WORKER = textwrap.dedent(
    """
    import asyncio, sys
    from streams.docker_sandbox import DockerSandbox
    from streams.sandbox_pool import SandboxPool

    async def main(run_id):
        pool = SandboxPool(
            lambda key: DockerSandbox(key, labels={"provenroute.test": run_id}), spare=2
        )
        sb = pool.sandbox(f"test-{run_id}:killed:0:0")
        await sb.start()
        print("busy", flush=True)
        await sb.exec("sleep 300", 600)

    asyncio.run(main(sys.argv[1]))
    """
)


async def test_a_worker_killed_mid_job_leaves_no_container(client: Any, run_id: str) -> None:
    """SIGKILL: no cleanup code runs. The runners read EOF and their containers go, without
    the janitor."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-c", WORKER, run_id], env=env, stdout=subprocess.PIPE, cwd=ROOT
    )
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), 120)
        assert line.strip() == b"busy"
        await wait_until(lambda: len(ours(client, run_id)) == 3, "the job and two spares")
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    await wait_until(lambda: ours(client, run_id) == [], "every container to go")
