"""The warm pool of job containers on the real Docker engine: claims, refills, and nothing
left behind when a job is cancelled or its worker is killed mid-job.

No mocks. In CI a missing Docker daemon is a failure, never a skip. Waits have generous
deadlines; nothing here asserts on wall-clock time.
"""

from __future__ import annotations

import asyncio
import contextlib
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

from contracts.events import CaseGraded
from contracts.jobs import CaseJob
from infra.settings import Settings
from streams.docker_sandbox import DockerSandbox, container_name
from streams.execution import CaseExecutor
from streams.harness import BuiltinHarness
from streams.sandbox import Sandbox, SandboxError
from streams.sandbox_pool import SandboxPool
from tests.doubles import ScriptedProvider, sum_numbers_case
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


def container_of(client: Any, sb: Any) -> Any:
    return client.containers.get(sb.name)


MESS = (
    # what a job may leave behind: files everywhere it can write, a changed dotfile,
    # processes that left its process group, System V IPC
    "echo secret > /workspace/left.txt; mkdir -p /tmp/d/e && echo x > /tmp/d/e/f;"
    " echo y > /var/tmp/g; echo z > /dev/shm/h; echo w > /run/lock/i;"
    " echo 'export LEAK=1' >> ~/.bashrc; touch ~/.hidden; chmod 000 /tmp/d;"
    " setsid sleep 301 </dev/null >/dev/null 2>&1 & nohup sleep 302 </dev/null >/dev/null 2>&1 &"
    ' python3 -c \'import os; os.fork() or os.setsid() or os.execvp("sleep", ["sleep", "303"])\''
    " </dev/null >/dev/null 2>&1; ipcmk -M 4096 >/dev/null; echo done"
)
CHECK = (
    "ls -A /workspace /tmp /var/tmp /dev/shm /run/lock ~; grep -c LEAK ~/.bashrc;"
    " ps -eo comm= | grep -c sleep; ipcs -m | grep -c '^0x'"
)


async def test_a_clean_job_hands_its_container_to_the_runs_next_job(
    client: Any, run_id: str
) -> None:
    pool = pool_for(client, run_id, spare=2)
    try:
        fresh = DockerSandbox(
            f"test-{run_id}:fresh:0:0", client=client, labels={TEST_LABEL: run_id}
        )
        async with fresh:
            pristine = (await fresh.exec(CHECK, 10)).stdout
        first = pool.sandbox(f"test-{run_id}:reuse:0:0", reuse_tag="run-a")
        await first.start()
        assert first.reused is False
        assert (await first.exec(MESS, 10)).stdout.strip().endswith("done")
        assert (await first.exec("ps -eo comm= | grep -c sleep", 10)).stdout.strip() == "3"
        used_id = container_of(client, first).id
        first.keep()
        await first.close()
        assert pool.used == 1

        second = pool.sandbox(f"test-{run_id}:reuse:1:0", reuse_tag="run-a")
        await second.start()
        assert second.reused is True
        assert container_of(client, second).id == used_id  # the same container, renamed
        # as a fresh container: nothing of the first job is left, files nor processes
        assert (await second.exec(CHECK, 10)).stdout == pristine
        # the first job's name is free again (a later copy of that job can take it)
        first_name = container_name(f"test-{run_id}:reuse:0:0")
        assert [c for c in ours(client, run_id) if c.name == first_name] == []
        await second.reset({"a.txt": "pristine"})
        assert (await second.exec("cat a.txt", 10)).stdout == "pristine"
        await second.close()  # not kept: removed
        await wait_until(lambda: used_id not in {c.id for c in ours(client, run_id)}, "its removal")
    finally:
        await pool.aclose()
    assert ours(client, run_id) == []


async def test_used_containers_serve_only_their_run_and_expire(client: Any, run_id: str) -> None:
    pool = pool_for(client, run_id, spare=2, reuse_idle_s=3.0)
    try:
        first = pool.sandbox(f"test-{run_id}:runs:0:0", reuse_tag="run-a")
        await first.start()
        used_id = container_of(client, first).id
        first.keep()
        await first.close()
        other = pool.sandbox(f"test-{run_id}:runs:1:0", reuse_tag="run-b")
        await other.start()
        assert other.reused is False
        assert container_of(client, other).id != used_id
        await other.close()
        assert pool.used == 1
        # unclaimed, it gives its job's name back (a later copy of that job can take it)
        first_name = container_name(f"test-{run_id}:runs:0:0")
        await wait_until(
            lambda: first_name not in {c.name for c in ours(client, run_id)}, "the name back"
        )
        assert used_id in {c.id for c in ours(client, run_id)}
        # unclaimed, it goes after reuse_idle_s; the warm spares stay (idle_s is longer)
        await wait_until(
            lambda: used_id not in {c.id for c in ours(client, run_id)}, "the used one to expire"
        )
        assert pool.used == 0
    finally:
        await pool.aclose()
    assert ours(client, run_id) == []


async def test_a_job_not_kept_or_a_broken_container_is_never_reused(
    client: Any, run_id: str
) -> None:
    pool = pool_for(client, run_id, spare=1)
    try:
        failed = pool.sandbox(f"test-{run_id}:failed:0:0", reuse_tag="run-a")
        await failed.start()
        failed_id = container_of(client, failed).id
        await failed.close()  # a failed job: no keep()
        assert pool.used == 0
        broken = pool.sandbox(f"test-{run_id}:failed:1:0", reuse_tag="run-a")
        await broken.start()
        assert broken.reused is False
        broken_id = container_of(client, broken).id
        assert broken_id != failed_id
        # its runner dies (PID 1 killed): kept or not, it cannot come back
        with contextlib.suppress(SandboxError):
            await broken.exec("kill 1", 10)  # PID 1 exits on TERM: the container goes
        await wait_until(lambda: broken_id not in {c.id for c in ours(client, run_id)}, "its end")
        broken.keep()
        await broken.close()
        nxt = pool.sandbox(f"test-{run_id}:failed:2:0", reuse_tag="run-a")
        await nxt.start()
        assert nxt.reused is False
        assert container_of(client, nxt).id not in (failed_id, broken_id)
        assert (await nxt.exec("echo ok", 10)).stdout == "ok\n"
        await nxt.close()
        # the bound holds: a kept container makes room by dropping a warm one
        again = pool.sandbox(f"test-{run_id}:failed:3:0", reuse_tag="run-a")
        await again.start()
        again.keep()
        await again.close()
        assert pool.warm + pool.used <= 1
        gone = {failed_id, broken_id}
        await wait_until(
            lambda: not gone & {c.id for c in ours(client, run_id)}, "the failed ones removed"
        )
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


async def test_the_executor_keeps_a_container_only_after_a_clean_job(
    client: Any, run_id: str
) -> None:
    """Through the worker's CaseExecutor: a job that went through hands its container to
    the run's next job; one whose emit failed, or whose case timed out, does not."""
    case = sum_numbers_case()
    provider = ScriptedProvider([])  # empty answers: the case ends at once, not timed out
    executor = CaseExecutor(
        Settings(),
        classifier_cases={},
        decider_cases={case.id: case},
        harness_factory=lambda _client: BuiltinHarness(provider),
    )
    await executor.pool.aclose()
    executor.pool = pool_for(client, run_id, spare=2)
    events: list[CaseGraded] = []

    async def emit(event: CaseGraded) -> None:
        events.append(event)

    async def broken_emit(event: CaseGraded) -> None:
        raise RuntimeError("the broker is gone")

    def job(i: int, run: str = "run-1") -> CaseJob:
        return CaseJob(
            job_id=f"test-{run_id}:{run}:sim/x:{i}:0",
            run_id=run,
            kind="decider",
            model="sim/x",
            reasoning_effort="low",
            chunk=i,
            rep=0,
            case_ids=(case.id,),
        )

    try:
        await executor.execute(job(0), emit, frozenset())
        assert events[-1].diagnostics["container_reused"] == "false"
        assert executor.pool.used == 1
        await executor.execute(job(1), emit, frozenset())
        assert events[-1].diagnostics["container_reused"] == "true"
        assert executor.pool.used == 1  # handed back again
        with pytest.raises(RuntimeError):
            await executor.execute(job(2), broken_emit, frozenset())
        assert executor.pool.used == 0  # the failed job took it, and it is gone
        slow = sum_numbers_case(timeout_s=1.0)
        executor.decider_cases = {slow.id: slow}
        provider.delay_s = 5.0
        await executor.execute(job(3), emit, frozenset())
        assert events[-1].timed_out
        assert executor.pool.used == 0
    finally:
        await executor.aclose()
    assert ours(client, run_id) == []
