"""Benchmark of the Docker sandbox: container start per job, the warm pool, exec round trips.

    .venv/bin/python bench/sandbox.py [--jobs 10] [--execs 200] [--parallel 4] [--json]

What is timed:
- cold start: what `DockerSandbox.start()` takes (create + attach + start + the runner's
  warm-up), one at a time and `--parallel` at once;
- pool claim: what a job waits for its container when the warm pool had time to start one
  (`SandboxPool`, as the worker uses it), one at a time and `--parallel` at once;
- exec round trip: host wall time of `exec("true")` over the runner's stream, and its
  overhead (the round trip minus the command's own duration measured in the container);
- write_files, read_file and reset (a case's setup) in one job's container.

What a cold start costs the host, and the floor that puts under the concurrent ratio (Linux:
read from /proc/stat; the figures are None where it is missing):
- `host_idle_cores_busy`: the host's busy CPU time per second of wall time while the bench
  does nothing (other processes, the services), a second before and a second after the
  sequential starts, averaged -- the baseline;
- `host_quiet`: whether that background stayed at or below `QUIET_BACKGROUND_CORES`, before
  and after. Otherwise the floor is not reported (None): on a saturated host a start's work
  pushes the background aside instead of adding to it and the subtraction comes out near
  zero, and on a merely busy one the background's bursts inside a start's ~0.1 s swamp it;
- `start_cpu_ms`: median busy CPU time of the whole host (user + nice + system + irq + softirq
  + steal, all CPUs) while one sequential cold start runs, minus the baseline for its wall
  time -- dockerd, containerd, runc, the kernel, the runner's boot and this client;
- `start_cores_busy`: median of that CPU time over the start's wall time, in cores;
- `host_cores`: `os.cpu_count()`;
- `start_concurrent_floor_ratio`: `start_floor_ratio(parallel, start_cores_busy,
  host_cores)`, the median ratio `--parallel` starts at once reach on an ideal host when each
  keeps that many cores busy all along (the model is in its docstring). It is reported next to
  `start_concurrent_ratio`, not gated: a target below it asks for more cores, not less code.

Gates (exit 1 when one is missed): cold start median <= 1000 ms; `--parallel` starts at
once, median <= 1.5x the sequential median; exec round trip median <= 5 ms and p95 <= 20 ms;
no container left behind. `--json` prints one JSON object of named figures (and the gates)
instead of the table. Peak RSS of this process and of a job container are reported.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import docker

from streams.docker_sandbox import DEFAULT_IMAGE, DockerSandbox, ensure_image
from streams.sandbox_pool import SandboxPool

LABEL = "provenroute.bench"
GATES = {
    "start_sequential_median_ms": 1000.0,
    "start_concurrent_ratio": 1.5,
    "exec_p50_ms": 5.0,
    "exec_p95_ms": 20.0,
    "leftover_containers": 0,
}
"""Figure -> the highest value that passes."""

PROC_STAT = Path("/proc/stat")
_TICK = os.sysconf("SC_CLK_TCK")
IDLE_BASELINE_S = 1.0
"""Wall time, before and after the sequential starts, over which the background is measured."""
QUIET_BACKGROUND_CORES = 0.1
"""Most cores the background may keep busy for the floor to count. A start keeps about one
core busy; a background of 0.24 cores already moved that figure by 0.45 on a 2-core host,
while a quiet one (0.02-0.05 cores) gave 0.93-0.98 run after run."""


def pct(values: list[float], p: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * p // 100))
    return ordered[int(rank) - 1]


def summary(name: str, values: list[float]) -> dict[str, float]:
    return {
        f"{name}_median_ms": statistics.median(values),
        f"{name}_p95_ms": pct(values, 95),
        f"{name}_max_ms": max(values),
    }


async def timed(coro: Any) -> float:
    t0 = time.perf_counter()
    await coro
    return (time.perf_counter() - t0) * 1000


def busy_jiffies(stat: str) -> int:
    """Busy clock ticks of all CPUs together, from the text of /proc/stat.

    The aggregate `cpu` line holds user, nice, system, idle, iowait, irq, softirq, steal,
    guest, guest_nice. Busy is user + nice + system + irq + softirq + steal: idle and iowait
    are a core doing nothing, and guest time is already counted in user and nice.
    """
    for line in stat.splitlines():
        fields = line.split()
        if fields and fields[0] == "cpu":
            user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, fields[1:9])
            return user + nice + system + irq + softirq + steal
    raise ValueError("no aggregate cpu line in /proc/stat")


def host_busy_ms() -> float | None:
    """Busy CPU milliseconds of the whole host since boot; None without /proc/stat."""
    try:
        stat = PROC_STAT.read_text()
    except FileNotFoundError:
        return None
    return busy_jiffies(stat) * 1000 / _TICK


async def background_cores(seconds: float) -> float | None:
    """Cores the host keeps busy, on average, over `seconds` in which the bench does nothing."""
    before = host_busy_ms()
    t0 = time.perf_counter()
    await asyncio.sleep(seconds)
    after = host_busy_ms()
    if before is None or after is None:
        return None
    return (after - before) / ((time.perf_counter() - t0) * 1000)


def start_floor_ratio(parallel: int, cores_busy_per_start: float, host_cores: int) -> float:
    """Median time of `parallel` starts begun at once on an ideal host, over one start alone.

    The model: a start alone takes T and keeps c = `cores_busy_per_start` cores busy all
    along, so it is c*T of CPU work that cannot run on more than c cores (a serial chain:
    client, dockerd, containerd, runc, kernel, the runner's boot). Begun together on
    H = `host_cores` cores, the host never idles while work is left and serves the starts in
    order: the first gets min(c, H) cores, the next what is left up to c, and so on; a
    finished start's cores pass to the next. Starts thus finish in waves of H/c: for
    parallel=4, c=1, H=2 at T, T, 2T, 2T (median 1.5); for parallel=2 both at T (1.0).
    Sharing the cores evenly instead would finish all four at 2T; in-order service is what
    a FIFO queue of starts gives. Anything the model leaves out (lock contention, context
    switches, caches, IO) only adds, so a measured ratio below this is not to be expected.
    """
    if parallel < 1 or host_cores < 1 or cores_busy_per_start < 0:
        raise ValueError("parallel and host_cores must be >= 1, cores_busy_per_start >= 0")
    # A start measured alone never kept more cores busy than the host has.
    c = min(cores_busy_per_start, float(host_cores))
    if c == 0:
        return 1.0  # no CPU work to share: the starts do not slow each other in this model
    left = [c] * parallel  # CPU work still to do per start, in core-T units
    now = 0.0
    finished: list[float] = []
    while left:
        free = float(host_cores)
        rates = []
        for _ in left:
            rate = min(c, free)
            rates.append(rate)
            free -= rate
        step = min(work / rate for work, rate in zip(left, rates, strict=True) if rate > 0)
        now += step
        still: list[float] = []
        for work, rate in zip(left, rates, strict=True):
            rest = work - rate * step
            # Relative tolerance: the start that set `step` must end, not linger on a rounding.
            if rest <= c * 1e-9:
                finished.append(now)
            else:
                still.append(rest)
        left = still
    return statistics.median(finished)


async def bench(jobs: int, execs: int, parallel: int, image: str) -> dict[str, Any]:
    client = docker.from_env()
    built = await asyncio.to_thread(ensure_image, client, image)
    run = uuid.uuid4().hex[:8]
    labels = {LABEL: run}

    def sandbox(key: str) -> DockerSandbox:
        return DockerSandbox(f"bench-{run}:{key}", image=image, client=client, labels=labels)

    # -- cold start, one at a time, and the host CPU each one keeps busy --------------------
    # Whatever else runs here (services, other processes) is busy during a start as well:
    # its rate, measured around the starts, is taken off each start's host CPU time so that
    # what remains is the start's own.
    idle_before = await background_cores(IDLE_BASELINE_S)
    starts, closes, start_busy = [], [], []
    for i in range(jobs):
        sb = sandbox(f"seq:{i}:0")
        before = host_busy_ms()
        starts.append(await timed(sb.start()))
        after = host_busy_ms()
        if before is not None and after is not None:
            start_busy.append(after - before)
        closes.append(await timed(sb.close()))
    idle_after = await background_cores(IDLE_BASELINE_S)

    host_cores = os.cpu_count() or 1
    idle_cores: float | None = None
    host_quiet: bool | None = None
    start_cpu: list[float] = []
    if idle_before is not None and idle_after is not None and start_busy:
        idle_cores = (idle_before + idle_after) / 2
        host_quiet = max(idle_before, idle_after) <= QUIET_BACKGROUND_CORES
        start_cpu = [max(0.0, b - idle_cores * w) for b, w in zip(start_busy, starts, strict=True)]
    cores_busy = (
        statistics.median(c / w for c, w in zip(start_cpu, starts, strict=True))
        if start_cpu
        else None
    )

    # -- cold start, `parallel` at once ---------------------------------------------------
    async def one(key: str) -> float:
        sb = sandbox(key)
        try:
            return await timed(sb.start())
        finally:
            await sb.close()

    par_starts: list[float] = []
    for round_ in range(max(1, jobs // parallel)):
        par_starts += await asyncio.gather(*(one(f"par:{round_}:{i}") for i in range(parallel)))

    # -- the warm pool, as a job sees it: a claim once the pool had time to start one ------
    async def until_ready(pool: SandboxPool, n: int) -> None:
        deadline = time.monotonic() + 300
        while pool.ready < n:
            if time.monotonic() > deadline:
                raise SystemExit(f"the pool never had {n} containers ready")
            await asyncio.sleep(0.05)

    pool = SandboxPool(sandbox, spare=parallel)
    claims: list[float] = []
    par_claims: list[float] = []
    try:
        pool.fill()
        for i in range(jobs):
            await until_ready(pool, 1)
            job = pool.sandbox(f"pool:{i}:0")
            claims.append(await timed(job.start()))
            await job.exec("true", 10)
            await job.close()
        for round_ in range(max(1, jobs // parallel)):
            await until_ready(pool, parallel)
            batch = [pool.sandbox(f"pool-par:{round_}:{i}") for i in range(parallel)]
            par_claims += await asyncio.gather(*(timed(job.start()) for job in batch))
            for job in batch:
                await job.close()
    finally:
        await pool.aclose()

    # -- exec round trips and a case's setup in one job's container ------------------------
    overhead, roundtrip, setup, writes, reads = [], [], [], [], []
    files = {f"src/mod{i}.py": f"def f{i}():\n    return {i}\n" * 20 for i in range(8)}
    async with sandbox("exec:0:0") as sb:
        for _ in range(10):  # settle
            await sb.exec("true", 10)
        for _ in range(execs):
            t0 = time.perf_counter()
            r = await sb.exec("true", 10)
            wall = (time.perf_counter() - t0) * 1000
            roundtrip.append(wall)
            overhead.append(wall - r.duration_ms)
        for _ in range(max(10, execs // 5)):
            setup.append(await timed(sb.reset(files)))  # what the harness does per case
            writes.append(await timed(sb.write_files(files)))
            reads.append(await timed(sb.read_file("src/mod3.py")))
        container_peak = await sb.memory_peak_bytes()

    leftovers = client.containers.list(all=True, filters={"label": f"{LABEL}={run}"})
    client.close()
    figures: dict[str, Any] = {
        "image": image,
        "image_built": built,
        "jobs": jobs,
        "execs": execs,
        "parallel": parallel,
        **summary("start_sequential", starts),
        **summary("start_concurrent", par_starts),
        "start_concurrent_ratio": statistics.median(par_starts) / statistics.median(starts),
        "start_concurrent_floor_ratio": (
            start_floor_ratio(parallel, cores_busy, host_cores)
            if cores_busy is not None and host_quiet
            else None
        ),
        "start_cpu_ms": statistics.median(start_cpu) if start_cpu else None,
        "start_cores_busy": cores_busy,
        "host_cores": host_cores,
        "host_idle_cores_busy": idle_cores,
        "host_quiet": host_quiet,
        **summary("pool_claim", claims),
        **summary("pool_claim_concurrent", par_claims),
        **summary("close", closes),
        "exec_p50_ms": statistics.median(roundtrip),
        "exec_p95_ms": pct(roundtrip, 95),
        "exec_max_ms": max(roundtrip),
        "exec_overhead_p50_ms": statistics.median(overhead),
        "exec_overhead_p95_ms": pct(overhead, 95),
        **summary("write_files", writes),
        **summary("read_file", reads),
        **summary("reset", setup),
        "bench_peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "container_peak_mib": container_peak / 2**20 if container_peak else None,
        "leftover_containers": len(leftovers),
    }
    figures["gates"] = {k: figures[k] <= limit for k, limit in GATES.items()}
    figures["ok"] = all(figures["gates"].values())
    return figures


def report(f: dict[str, Any]) -> None:
    def row(label: str, name: str, target: str = "") -> None:
        print(
            f"  {label:<36} median {f[f'{name}_median_ms']:8.1f} ms   "
            f"p95 {f[f'{name}_p95_ms']:8.1f} ms   max {f[f'{name}_max_ms']:8.1f} ms"
            + (f"   target {target}" if target else "")
        )

    print(f"sandbox benchmark  image={f['image']}{' (built now)' if f['image_built'] else ''}")
    print("container start per job (create + attach + start + warm-up):")
    row("cold, one at a time", "start_sequential", "<= 1000 ms")
    row(f"cold, {f['parallel']} at once", "start_concurrent", "<= 1.5x one at a time")
    print(f"  {'':<36} ratio {f['start_concurrent_ratio']:.2f}x")
    if f["start_cores_busy"] is not None:
        print(
            f"  {'host CPU per cold start':<36} {f['start_cpu_ms']:8.1f} ms, "
            f"{f['start_cores_busy']:.2f} of {f['host_cores']} cores busy "
            f"(background {f['host_idle_cores_busy']:.2f} cores, taken off)"
        )
    if f["start_concurrent_floor_ratio"] is not None:
        print(
            f"  {'floor for the ratio':<36} {f['start_concurrent_floor_ratio']:.2f}x: the best "
            f"median {f['parallel']} starts at once can reach on {f['host_cores']} cores "
            f"when each keeps {f['start_cores_busy']:.2f} cores busy"
        )
    elif f["host_quiet"] is False:
        print(
            f"  {'floor for the ratio':<36} n/a: other work kept the host busy, so a "
            "start's own CPU could not be told apart from it"
        )
    row("warm pool claim (what a job waits)", "pool_claim")
    row(f"warm pool, {f['parallel']} claims at once", "pool_claim_concurrent")
    row("close (remove, force)", "close")
    print("exec over the runner's stream:")
    print(
        f"  {'round trip of `true`':<36} median {f['exec_p50_ms']:8.2f} ms   "
        f"p95 {f['exec_p95_ms']:8.2f} ms   max {f['exec_max_ms']:8.1f} ms   "
        "target median <= 5 ms, p95 <= 20 ms"
    )
    print(
        f"  {'overhead (round trip - in-container)':<36} median "
        f"{f['exec_overhead_p50_ms']:8.2f} ms   p95 {f['exec_overhead_p95_ms']:8.2f} ms"
    )
    row("write_files (8 files)", "write_files")
    row("read_file", "read_file")
    row("reset (a case's setup, 8 files)", "reset")
    peak = f"{f['container_peak_mib']:.1f} MiB" if f["container_peak_mib"] else "n/a"
    print(
        f"memory: bench process peak RSS {f['bench_peak_rss_mib']:.1f} MiB; "
        f"job container peak {peak} (cap 512 MiB)"
    )
    print(f"leftover containers: {f['leftover_containers']}")
    missed = [k for k, ok in f["gates"].items() if not ok]
    print("targets:", "met" if f["ok"] else f"MISSED ({', '.join(missed)})")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=10)
    ap.add_argument("--execs", type=int, default=200)
    ap.add_argument("--parallel", type=int, default=4)
    ap.add_argument("--image", default=DEFAULT_IMAGE)
    ap.add_argument("--json", action="store_true", help="print one JSON object of figures")
    args = ap.parse_args()
    figures = asyncio.run(bench(args.jobs, args.execs, args.parallel, args.image))
    if args.json:
        print(json.dumps(figures))
    else:
        report(figures)
    return 0 if figures["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
