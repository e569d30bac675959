"""Benchmark of the Docker sandbox: container start per job and per-exec overhead.

    .venv/bin/python bench/sandbox.py [--jobs 10] [--execs 100] [--parallel 4]

Targets (DESIGN.md, issue 5): container start per job <= 1 s, exec overhead <= 100 ms at
the median. "Start" is what a job waits for before its first case: create + start + the
runner's warm-up. "Exec overhead" is the host-side wall time of `exec` minus the command's
own duration as measured next to it inside the container (so: Docker API round trips, the
exec'd runner's Python start-up, JSON transport). Peak RSS of this process and of a job
container are printed beside the timings.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import statistics
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import docker

from streams.docker_sandbox import DockerSandbox, ensure_image

LABEL = "provenroute.bench"


def pct(values: list[float], p: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * p // 100))
    return ordered[int(rank) - 1]


def line(name: str, values: list[float], unit: str = "ms", target: str = "") -> str:
    return (
        f"  {name:<34} median {statistics.median(values):8.1f} {unit}   "
        f"p95 {pct(values, 95):8.1f} {unit}   max {max(values):8.1f} {unit}   "
        f"(n={len(values)}){'   target ' + target if target else ''}"
    )


async def bench(jobs: int, execs: int, parallel: int, image: str) -> int:
    client = docker.from_env()
    built = await asyncio.to_thread(ensure_image, client, image)
    run = uuid.uuid4().hex[:8]
    labels = {LABEL: run}
    print(f"sandbox benchmark  image={image}{' (built now)' if built else ''}  run={run}")

    # -- start per job (sequential): create + start + warm-up, then close -----------------
    starts, closes = [], []
    for i in range(jobs):
        sb = DockerSandbox(
            f"bench-{run}:sim/model:{i}:0", image=image, client=client, labels=labels
        )
        t0 = time.perf_counter()
        await sb.start()
        starts.append((time.perf_counter() - t0) * 1000)
        t0 = time.perf_counter()
        await sb.close()
        closes.append((time.perf_counter() - t0) * 1000)

    # -- start under concurrency: `parallel` jobs starting at once ------------------------
    async def one(i: int) -> float:
        sb = DockerSandbox(f"bench-{run}:par:{i}:0", image=image, client=client, labels=labels)
        t0 = time.perf_counter()
        try:
            await sb.start()
            return (time.perf_counter() - t0) * 1000
        finally:
            await sb.close()

    par_starts: list[float] = []
    for _ in range(max(1, jobs // parallel)):
        par_starts += await asyncio.gather(*(one(i) for i in range(parallel)))

    # -- per-exec overhead and per-case setup in one job's container -----------------------
    overhead, roundtrip, setup, writes, reads = [], [], [], [], []
    files = {f"src/mod{i}.py": f"def f{i}():\n    return {i}\n" * 20 for i in range(8)}
    async with DockerSandbox(
        f"bench-{run}:exec:0:0", image=image, client=client, labels=labels
    ) as sb:
        for _ in range(5):  # settle
            await sb.exec("true", 10)
        for _ in range(execs):
            t0 = time.perf_counter()
            r = await sb.exec("true", 10)
            wall = (time.perf_counter() - t0) * 1000
            roundtrip.append(wall)
            overhead.append(wall - r.duration_ms)
        for _ in range(max(10, execs // 5)):
            t0 = time.perf_counter()
            await sb.reset_workspace(files)  # what the harness does before each case
            t1 = time.perf_counter()
            await sb.write_files(files)
            t2 = time.perf_counter()
            await sb.read_file("src/mod3.py")
            t3 = time.perf_counter()
            setup.append((t1 - t0) * 1000)
            writes.append((t2 - t1) * 1000)
            reads.append((t3 - t2) * 1000)
        container_peak = await sb.memory_peak_bytes()

    leftovers = client.containers.list(all=True, filters={"label": f"{LABEL}={run}"})
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    print("container start per job (create + start + warm-up):")
    print(line("sequential", starts, target="<= 1000 ms"))
    print(line(f"{parallel} jobs starting at once", par_starts))
    print(line("close (remove, force)", closes))
    print("exec:")
    print(line("overhead (wall - in-container)", overhead, target="median <= 100 ms"))
    print(line("round trip of `true`", roundtrip))
    print(line("write_files (8 files)", writes))
    print(line("read_file", reads))
    print(line("case setup (reset_workspace+files)", setup))
    peak = f"{container_peak / 2**20:.1f} MiB" if container_peak else "n/a"
    print(
        f"memory: bench process peak RSS {rss_mb:.1f} MiB; job container peak {peak} (cap 512 MiB)"
    )
    print(f"leftover containers: {len(leftovers)}")
    ok = statistics.median(starts) <= 1000 and statistics.median(overhead) <= 100 and not leftovers
    print("targets:", "met" if ok else "MISSED")
    client.close()
    return 0 if ok else 1


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=10)
    ap.add_argument("--execs", type=int, default=100)
    ap.add_argument("--parallel", type=int, default=4)
    ap.add_argument("--image", default="provenroute/runner:latest")
    args = ap.parse_args()
    return asyncio.run(bench(args.jobs, args.execs, args.parallel, args.image))


if __name__ == "__main__":
    sys.exit(main())
