"""DockerSandbox on the real Docker engine: isolation, limits, kills and cleanup.

No mocks: every test runs real containers of `provenroute/runner:latest` (or the tag in
PROVENROUTE_DOCKER_IMAGE; built here from container/ when it is missing or stale). In CI a
missing Docker daemon is a failure, never a skip.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import docker
import pytest
import pytest_asyncio

from streams.docker_sandbox import (
    DEFAULT_BASE_IMAGE,
    DEFAULT_IMAGE,
    DockerSandbox,
    close_all_sandboxes,
    container_name,
    ensure_image,
    image_input_hash,
)
from streams.janitor import (
    LABEL_HEARTBEATS,
    LABEL_JOB,
    LABEL_MANAGED,
    LABEL_WORKER,
    LiveSet,
    default_worker_id,
    remove_stale_containers,
    worker_is_dead,
)
from streams.sandbox import Sandbox, SandboxError
from tests.integration.docker_support import TEST_LABEL, ours

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]


@pytest.fixture(scope="module")
def client() -> Iterator[Any]:
    c = docker.from_env()
    c.ping()  # no daemon: fail loudly
    ensure_image(c)
    yield c
    c.close()


@pytest.fixture
def run_id() -> str:
    return uuid.uuid4().hex[:12]


# The test's own loop: a sandbox's stream to its runner belongs to the loop that started it.
@pytest_asyncio.fixture(loop_scope="function")
async def sandbox(client: Any, run_id: str) -> AsyncIterator[DockerSandbox]:
    async with DockerSandbox(
        f"test-{run_id}:sim/model:0:0", client=client, labels={TEST_LABEL: run_id}
    ) as sb:
        yield sb
    assert ours(client, run_id) == []


# ------------------------------------------------------------------ basics


async def test_container_shape_and_basic_operations(
    client: Any, sandbox: DockerSandbox, run_id: str
) -> None:
    assert isinstance(sandbox, Sandbox)
    attrs = client.containers.get(sandbox.name).attrs
    host, config = attrs["HostConfig"], attrs["Config"]
    assert host["NetworkMode"] == "none"
    assert config["NetworkDisabled"] is True
    assert host["Memory"] == 512 * 1024 * 1024
    assert host["MemorySwap"] == 512 * 1024 * 1024
    assert host["PidsLimit"] == 256
    assert host["NanoCpus"] == 1_000_000_000
    assert host["CapDrop"] == ["ALL"]
    assert config["User"] == "10001:10001"
    assert config["Labels"][LABEL_MANAGED] == "true"
    assert config["Labels"][LABEL_JOB] == f"test-{run_id}:sim/model:0:0"
    assert config["Labels"][LABEL_WORKER] == default_worker_id()
    assert not any(e.startswith("PROVENROUTE_PROVIDER") for e in config["Env"] or [])
    assert sandbox.warmup_info and sandbox.warmup_info["ok"]
    assert {t.rsplit("/", 1)[-1] for t in sandbox.warmup_info["tools"]} == {
        "jq",
        "gawk",
        "grep",
        "sed",
        "python3",
    }

    await sandbox.write_files({"a/b/c.txt": "héllo\n", "data.json": '{"k": [1, 2]}'})
    assert await sandbox.read_file("a/b/c.txt") == "héllo\n"
    assert await sandbox.read_file("/workspace/data.json") == '{"k": [1, 2]}'
    with pytest.raises(FileNotFoundError):
        await sandbox.read_file("nope.txt")
    with pytest.raises(ValueError):
        await sandbox.write_files({"../escape.txt": "x"})
    with pytest.raises(ValueError):
        await sandbox.write_files({"/etc/x": "x"})

    big = "0123456789abcdef\n" * 20_000  # 340 KB: many of Docker's stream chunks
    await sandbox.write_files({"big/blob.txt": big, ".hidden": "h"})
    assert await sandbox.read_file("big/blob.txt") == big
    await sandbox.exec("mkdir -p locked/in && touch locked/in/f && chmod -R 000 locked", 10)
    await sandbox.reset({"fresh.txt": "only me"})
    ls = await sandbox.exec("ls -A", 10)
    assert ls.stdout == "fresh.txt\n"
    await sandbox.write_files({"a/b/c.txt": "héllo\n", "data.json": '{"k": [1, 2]}'})

    r = await sandbox.exec("id -u; pwd; jq -c '.k | add' data.json; echo oops >&2; exit 3", 10)
    assert (r.exit_code, r.timed_out, r.truncated) == (3, False, False)
    assert r.stdout.splitlines() == ["10001", "/workspace", "3"]
    assert r.stderr == "oops\n"

    r = await sandbox.exec("seq 1 200000", 10)
    assert r.truncated and r.exit_code == 0
    assert r.stdout.rstrip().endswith("200000")  # the tail (where answers live) is kept
    assert len(r.stdout) < 70_000

    r = await sandbox.exec("touch /opt/provenroute/runner.py || echo denied", 10)
    assert "denied" in r.stdout


def test_make_and_ensure_image_agree_on_the_image_hash(client: Any) -> None:
    """`make image` and `ensure_image` hash the same inputs: neither rebuilds what the other
    just built, and a change to any input is seen by both."""
    base_id = client.images.get(DEFAULT_BASE_IMAGE).id
    root = Path(__file__).resolve().parents[2]
    made = subprocess.run(
        ["make", "-s", "image-hash"], cwd=root, capture_output=True, text=True, check=True
    )
    assert made.stdout.strip() == image_input_hash(base_id)


def test_container_names_are_sanitised_and_distinct() -> None:
    a = container_name("run-1:openai/gpt-5:mini:3:0")
    b = container_name("run-1:openai/gpt-5/mini:3:0")
    assert a != b
    for name in (a, b, container_name("::"), container_name("x" * 500)):
        assert name[0].isalnum() and len(name) < 128
        assert all(ch.isalnum() or ch in "_.-" for ch in name)


# ------------------------------------------------------------------ kills


async def test_runaway_case_is_killed_within_timeout_plus_grace(sandbox: DockerSandbox) -> None:
    # an infinite loop plus a forked background child that holds stdout
    runaway = "echo started; (while :; do :; done) & while :; do :; done"
    t0 = time.monotonic()
    r = await sandbox.exec(runaway, 2)
    elapsed = time.monotonic() - t0
    assert r.timed_out and r.exit_code is None
    assert r.stdout == "started\n"
    assert elapsed < 2 + sandbox.grace_s + 1.5, elapsed
    ps = await sandbox.exec("ps -eo pid,pgid,stat,args --no-headers", 10)
    assert "while" not in ps.stdout and "bash -c echo started" not in ps.stdout, ps.stdout


async def test_stray_pipe_holders_cannot_hang_an_exec(sandbox: DockerSandbox) -> None:
    # leader exits at once, a background child keeps the pipes: returns after the grace
    t0 = time.monotonic()
    r = await sandbox.exec("sleep 300 & echo leader-done", 10)
    assert r.exit_code == 0 and not r.timed_out and r.stdout == "leader-done\n"
    assert time.monotonic() - t0 < sandbox.grace_s + 1.5
    # a child that escaped the process group (setsid) and holds the pipes: the backstop
    t0 = time.monotonic()
    r = await sandbox.exec("setsid sleep 300 & while :; do :; done", 2)
    assert r.timed_out
    assert time.monotonic() - t0 < 2 + 2 * sandbox.grace_s + 1.5
    r = await sandbox.exec("echo still-usable", 5)
    assert r.stdout == "still-usable\n"


STORM = r"""
import os, sys, time
end = time.time() + 4.0
forked = failed = 0
root = os.getpid()
while time.time() < end:
    try:
        pid = os.fork()
    except OSError:
        failed += 1
        time.sleep(0.005)
        continue
    if pid == 0:           # every child keeps forking too, until the deadline
        forked = failed = 0
        continue
    forked += 1
if os.getpid() == root:
    print(f"forked={forked} failed={failed}")
    sys.stdout.flush()
os._exit(0)
"""


async def test_process_storm_is_held_at_the_pids_limit(client: Any, run_id: str) -> None:
    async with DockerSandbox(
        f"test-{run_id}:storm:0:0", client=client, labels={TEST_LABEL: run_id}, pids_limit=64
    ) as sb:
        await sb.write_files({"storm.py": STORM})
        limit = await sb.exec(
            "cat /sys/fs/cgroup/pids.max 2>/dev/null || cat /sys/fs/cgroup/pids/pids.max", 5
        )
        assert limit.stdout.strip() == "64"

        # Diagnostics only (printed, not asserted: load on the host moves them): event-loop
        # ticks, a host process start and a Docker API call while the storm rages.
        worst = {"tick": 0.0, "spawn": 0.0, "api": 0.0}
        stop = asyncio.Event()

        async def probe() -> None:
            while not stop.is_set():
                t = time.monotonic()
                await asyncio.sleep(0.05)
                worst["tick"] = max(worst["tick"], time.monotonic() - t - 0.05)
                t = time.monotonic()
                await asyncio.to_thread(subprocess.run, ["true"], check=True)
                worst["spawn"] = max(worst["spawn"], time.monotonic() - t)
                t = time.monotonic()
                await asyncio.to_thread(client.ping)
                worst["api"] = max(worst["api"], time.monotonic() - t)

        prober = asyncio.create_task(probe())
        r = await sb.exec("python3 storm.py", 300)
        stop.set()
        await prober
        assert not r.timed_out, r  # the storm ends by itself: refused forks do not hang it
        counts = dict(kv.split("=") for kv in r.stdout.split())
        assert int(counts["failed"]) > 0, r.stdout  # forks were refused at the limit
        print(f"storm: {r.stdout.strip()}; worst host latencies (s): {worst}")
        after = await sb.exec("echo alive; ps -e --no-headers | wc -l", 10)
        assert after.stdout.startswith("alive")
        assert int(after.stdout.split()[-1]) < 10  # the storm ended and was reaped
    assert ours(client, run_id) == []


async def test_container_cannot_open_any_network_connection(sandbox: DockerSandbox) -> None:
    # a listener on the host's loopback: the container's loopback is its own namespace
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    port = server.getsockname()[1]
    probe = f"""
import os, socket
print("ifaces", sorted(os.listdir("/sys/class/net")))
routes = open("/proc/net/route").read().splitlines()[1:]
print("routes", len(routes))
for host, port in (("192.0.2.1", 80), ("127.0.0.1", {port})):
    s = socket.socket()
    s.settimeout(3)
    try:
        s.connect((host, port))
        print("CONNECTED", host)
    except OSError as e:
        print("refused", host, e.errno)
try:
    socket.getaddrinfo("example.com", 443)
    print("RESOLVED")
except OSError:
    print("no-dns")
"""
    try:
        await sandbox.write_files({"probe.py": probe})
        r = await sandbox.exec("python3 probe.py", 20)
    finally:
        server.close()
    assert r.exit_code == 0, r
    assert "ifaces ['lo']" in r.stdout
    assert "routes 0" in r.stdout
    assert "CONNECTED" not in r.stdout and "RESOLVED" not in r.stdout
    assert r.stdout.count("refused") == 2 and "no-dns" in r.stdout


# ------------------------------------------------------------------ cleanup


async def test_ten_parallel_jobs_some_failing_leave_no_container(client: Any, run_id: str) -> None:
    started = asyncio.Event()

    async def job(i: int) -> str:
        image = "provenroute/does-not-exist:latest" if i == 2 else DEFAULT_IMAGE
        async with DockerSandbox(
            f"test-{run_id}:sim/m:{i}:0", client=client, labels={TEST_LABEL: run_id}, image=image
        ) as sb:
            r = await sb.exec(f"echo job {i}", 10)
            assert r.stdout == f"job {i}\n"
            if i % 3 == 0:
                raise RuntimeError(f"job {i} failed")
            if i == 1:
                started.set()
                await sb.exec("sleep 60", 90)  # cancelled mid-exec
            return "ok"

    tasks = [asyncio.create_task(job(i)) for i in range(10)]
    await asyncio.wait_for(started.wait(), 60)
    tasks[1].cancel()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert isinstance(results[1], asyncio.CancelledError)
    assert isinstance(results[2], SandboxError)
    assert [type(results[i]) for i in (0, 3, 6, 9)] == [RuntimeError] * 4
    assert [results[i] for i in (4, 5, 7, 8)] == ["ok"] * 4
    assert ours(client, run_id) == []


async def test_cancelled_start_still_removes_the_container(client: Any, run_id: str) -> None:
    cancelled = 0
    for delay in (0.0, 0.05, 0.2):
        sb = DockerSandbox(
            f"test-{run_id}:cancel:{delay}:0", client=client, labels={TEST_LABEL: run_id}
        )
        task = asyncio.create_task(sb.start())
        await asyncio.sleep(delay)
        if task.done():  # a fast start beat the later cancels: nothing left to cancel
            await task
        else:
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            cancelled += 1
        await sb.close()  # idempotent
    assert cancelled >= 1  # at delay 0 the start has not even begun
    assert ours(client, run_id) == []


async def test_janitor_removes_containers_of_dead_workers_only(client: Any, run_id: str) -> None:
    dead = subprocess.Popen(["true"])
    dead.wait()
    dead_id = f"{socket.gethostname()}:{dead.pid}"
    topic = f"test-{run_id}.worker-heartbeats"
    orphan = DockerSandbox(
        f"test-{run_id}:orphan:0:0",
        client=client,
        labels={TEST_LABEL: run_id},
        worker_id=dead_id,
        warmup=False,
    )
    live = DockerSandbox(
        f"test-{run_id}:live:0:0", client=client, labels={TEST_LABEL: run_id}, warmup=False
    )
    # A worker of another host, tracked on a heartbeat board: the board decides.
    remote = DockerSandbox(
        f"test-{run_id}:remote:0:0",
        client=client,
        labels={TEST_LABEL: run_id, LABEL_HEARTBEATS: topic},
        worker_id="other-host:1:0a1b2c3d",
        warmup=False,
    )
    await orphan.start()
    await live.start()
    await remote.start()
    names = {orphan.name, live.name, remote.name}

    def sweep(*live_ids: str, later_s: float = 0.0) -> list[str]:
        # The host is shared: the sweep may also take other dead workers' leftovers.
        board = LiveSet(topic, frozenset(live_ids)) if live_ids else None
        removed = remove_stale_containers(client, board, now=time.time() + later_s)
        return [n for n in removed if n in names]

    try:
        assert await asyncio.to_thread(sweep) == [orphan.name]
        assert sorted(c.name for c in ours(client, run_id)) == sorted([live.name, remote.name])
        # the same job from a worker that is not the live owner: refused, nothing removed
        retry = DockerSandbox(
            f"test-{run_id}:live:0:0",
            client=client,
            worker_id=dead_id,
            labels={TEST_LABEL: run_id},
            warmup=False,
        )
        with pytest.raises(SandboxError, match="live container"):
            await retry.start()
        assert len(ours(client, run_id)) == 2
        # tracked: kept while its worker beats, and while young (the sweeper's read of the
        # board may trail a new worker's first beat); removed once it stopped beating.
        # The untracked live one is this process's: only its pid counts.
        assert await asyncio.to_thread(sweep, "other-host:1:0a1b2c3d", later_s=60) == []
        assert await asyncio.to_thread(sweep, "other-host:2:0a1b2c3d") == []
        assert await asyncio.to_thread(sweep, "other-host:2:0a1b2c3d", later_s=60) == [remote.name]
        assert [c.name for c in ours(client, run_id)] == [live.name]
    finally:
        await orphan.close()
        await live.close()
        await remote.close()
    assert ours(client, run_id) == []


async def test_a_dead_workers_leftover_is_replaced_by_the_retried_job(
    client: Any, run_id: str
) -> None:
    dead = subprocess.Popen(["true"])
    dead.wait()
    key = f"test-{run_id}:retry:0:0"
    first = DockerSandbox(
        key,
        client=client,
        labels={TEST_LABEL: run_id},
        worker_id=f"{socket.gethostname()}:{dead.pid}",
        warmup=False,
    )
    await first.start()
    async with DockerSandbox(key, client=client, labels={TEST_LABEL: run_id}) as second:
        r = await second.exec("echo fresh", 5)
        assert r.stdout == "fresh\n"
        [c] = ours(client, run_id)
        assert c.labels[LABEL_WORKER] == second.worker_id
    await first.close()
    assert ours(client, run_id) == []


def test_worker_liveness_rules() -> None:
    me = default_worker_id()
    host, pid, instance = me.split(":")
    assert (host, int(pid)) == (socket.gethostname(), os.getpid()) and len(instance) == 8
    gone = subprocess.Popen(["true"])
    gone.wait()
    dead = f"{socket.gethostname()}:{gone.pid}"
    assert not worker_is_dead(me) and not worker_is_dead(f"{socket.gethostname()}:{os.getpid()}")
    # with a board, it decides: a live pid does not save an id that stopped beating (a
    # restarted worker in a container has pid 1 again, under another instance)
    assert worker_is_dead(me, []) and not worker_is_dead(me, [me])
    assert worker_is_dead(dead) and worker_is_dead(dead + ":0a1b2c3d")
    assert worker_is_dead(dead, [dead + "x"])
    assert not worker_is_dead("elsewhere:12")  # unknown host, no live set: keep
    assert not worker_is_dead("elsewhere:12:abcd")
    assert worker_is_dead("elsewhere:12", ["elsewhere:13"])
    assert not worker_is_dead("elsewhere:12", ["elsewhere:12"])
    assert not worker_is_dead(None) and worker_is_dead(None, [])


async def test_worker_shutdown_closes_every_open_sandbox(client: Any, run_id: str) -> None:
    boxes = [
        DockerSandbox(f"test-{run_id}:shutdown:{i}:0", client=client, labels={TEST_LABEL: run_id})
        for i in range(3)
    ]
    await asyncio.gather(*(b.start() for b in boxes))
    assert len(ours(client, run_id)) == 3
    await close_all_sandboxes()
    assert ours(client, run_id) == []
    with pytest.raises(SandboxError):
        await boxes[0].exec("true", 5)
