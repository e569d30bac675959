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

Gates (exit 1 when one is missed): cold start median <= 1000 ms; `--parallel` starts at
once, median <= 1.5x the sequential median; exec round trip median <= 5 ms and p95 <= 20 ms;
no container left behind. `--json` prints one JSON object of named figures (and the gates)
instead of the table. Peak RSS of this process and of a job container are reported.
"""

from __future__ import annotations

import argparse
import asyncio
import json
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


async def bench(jobs: int, execs: int, parallel: int, image: str) -> dict[str, Any]:
    client = docker.from_env()
    built = await asyncio.to_thread(ensure_image, client, image)
    run = uuid.uuid4().hex[:8]
    labels = {LABEL: run}

    def sandbox(key: str) -> DockerSandbox:
        return DockerSandbox(f"bench-{run}:{key}", image=image, client=client, labels=labels)

    # -- cold start, one at a time --------------------------------------------------------
    starts, closes = [], []
    for i in range(jobs):
        sb = sandbox(f"seq:{i}:0")
        starts.append(await timed(sb.start()))
        closes.append(await timed(sb.close()))

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
