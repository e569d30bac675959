"""Scale-out bench: decider run time with 1 and 2 workers, /decide throughput with 1 and 2
replicas, and each replica's time to ready.

    .venv/bin/python -m bench.scale [--part workers|replicas|all] [--workers 1,2]
        [--replicas 1,2] [--models sim/flash-lite,sim/balanced] [--seconds 10] [--json]

Workers: a SIMULATED provider process and N `provenroute worker` processes on a fresh topic
prefix (real Kafka, real Docker jobs); one forced decider run, from StartRun to RunCompleted,
and the CPU seconds each worker spent on it (the work spreading). The run's maxConcurrency is
N-max x the job slots, so one worker is bounded by its slots and two can use both.

Replicas: N `provenroute serve` processes on one sessions log, a routing table in a fresh
schema, conversations warmed once (classification cached, session written, read by every
replica); then a closed-loop load generator (a separate process, keep-alive HTTP/1.1, its
connections spread evenly over the replicas, no affinity) for `--seconds`. Prints req/s,
p50/p99, how many answers each replica gave, and the replicas' CPU seconds.

On a 2-core host the speed-up is bounded by the CPUs: the load generator, Kafka, PostgreSQL
and the replicas (or the workers and their containers) share the same two cores, so two
processes cannot double one's figures; the per-process split shows the work spreads.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from api.cli.demo import cpu_seconds  # noqa: E402

CPU_NOTE = (
    "On this {cores}-core host the speed-up is bounded by the CPUs: load generator, Kafka, "
    "PostgreSQL and the replicas (or the workers and their job containers) share them; the "
    "per-process split shows the work spreads."
)


# ---- workers ---------------------------------------------------------------------------------


def run_workers(args: argparse.Namespace) -> list[dict[str, Any]]:
    from bench import pipeline
    from contracts.config import BenchmarkConfig, DeciderModel
    from infra.processes import child_env, start_sim_provider, start_worker
    from infra.settings import Settings
    from streams.kafka_admin import ensure_topics, group_settled

    counts = [int(n) for n in args.workers.split(",")]
    models = args.models.split(",")
    prefix = f"bench{uuid.uuid4().hex[:8]}."
    settings = Settings(topic_prefix=prefix)
    asyncio.run(ensure_topics(settings.kafka_bootstrap, prefix))
    workdir = Path(tempfile.mkdtemp(prefix="provenroute-bench-scale-"))
    env = child_env(
        PROVENROUTE_TOPIC_PREFIX=prefix,
        PROVENROUTE_PROVIDER_TIMEOUT_S="5",
        PROVENROUTE_WORKER_JOB_SLOTS=str(args.slots),
    )
    config = BenchmarkConfig(
        classifierModels=tuple(models),
        deciderModels=tuple(DeciderModel(model=m, reasoningEffort="medium") for m in models),
        maxConcurrency=args.slots * max(counts),
        classifierMaxP95LatencyMs=None,
        benchmarkIdentity="sim-benchmark",
    )
    rows: list[dict[str, Any]] = []
    say = _say(args)
    say(f"workers: logs in {workdir}")
    try:
        sim, sim_url = start_sim_provider(workdir, env, latency_scale=args.latency_scale)
        env["PROVENROUTE_PROVIDER_BASE_URL"] = sim_url
        with sim:
            saved = False
            for n in counts:
                with contextlib.ExitStack() as stack:
                    procs = [
                        stack.enter_context(start_worker(workdir, env, name=f"worker{n}-{i}"))
                        for i in range(n)
                    ]
                    pipeline.WORKER = procs[0]
                    for attempt in range(5):
                        if saved:
                            break
                        try:
                            asyncio.run(pipeline.save_config(settings, config))
                            saved = True
                        except SystemExit as e:
                            # A fresh prefix: the worker's first command can race the
                            # creation of its changelog topics (rejected as internal error).
                            if attempt == 4 or "internal error" not in str(e):
                                raise
                            say("  config rejected by a worker still starting; retrying")
                            time.sleep(2)
                    # Timed from a settled group: Faust joins in more than one rebalance,
                    # and a run started meanwhile would time the rebalances too.
                    settled_s = asyncio.run(
                        group_settled(settings.kafka_bootstrap, f"{prefix}worker", n, 180)
                    )
                    before = [cpu_seconds(p.pid) for p in procs]
                    row: dict[str, Any] = {"workers": n, "group_settled_s": round(settled_s, 1)}
                    try:
                        fig = asyncio.run(
                            asyncio.wait_for(
                                pipeline.one_run(settings, "decider", args.slots * n),
                                args.run_timeout,
                            )
                        )
                        row.update(run_s=round(fig.wall_s, 1), cases=fig.cases)
                    except (TimeoutError, SystemExit) as e:
                        row.update(run_s=None, error=f"{type(e).__name__}: {e}")
                    row["cpu_s"] = [
                        round(cpu_seconds(p.pid) - b, 1) for p, b in zip(procs, before, strict=True)
                    ]
                    rows.append(row)
                    say(f"  {n} worker(s): {row}")
    finally:
        with contextlib.suppress(Exception):
            asyncio.run(pipeline._delete_topics(settings.kafka_bootstrap, prefix))
    return rows


# ---- replicas --------------------------------------------------------------------------------


async def run_replicas(args: argparse.Namespace) -> list[dict[str, Any]]:
    import httpx
    import psycopg

    from infra.settings import Settings
    from simulator.server import create_app as create_sim
    from streams.kafka_admin import ensure_topics
    from streams.topics import COMMANDS, DECISIONS, SESSIONS
    from tests.conftest import delete_topics_with_prefix
    from tests.integration.replica_support import Balancer, Replica, replica_env
    from tests.integration.test_decide_support import (
        candidate,
        free_port,
        publish_and_project,
        routing_table,
        serve_in_thread,
        table_published,
    )

    say = _say(args)
    base = Settings()
    prefix = f"bench{uuid.uuid4().hex[:8]}."
    schema = f"bench_{uuid.uuid4().hex[:8]}"
    settings = base.model_copy(update={"topic_prefix": prefix, "db_schema": schema})
    logs = ROOT / "artifacts" / "bench-scale"
    rows: list[dict[str, Any]] = []
    with psycopg.connect(base.database_url, autocommit=True) as conn:
        conn.execute(f'create schema "{schema}"')
    try:
        await ensure_topics(base.kafka_bootstrap, prefix, (SESSIONS, DECISIONS, COMMANDS))
        cands = [candidate("sim/flash-lite", 0.012), candidate("sim/balanced", 0.03)]
        table = routing_table("scale-v1", {t: cands for t in ("low", "medium", "high")})
        await publish_and_project(settings, table_published(table))
        bodies = [
            {
                "conversationId": f"scale-{i}",
                "messages": [{"role": "user", "content": f"Rename the variable in file {i}"}],
            }
            for i in range(args.conversations)
        ]
        with serve_in_thread(create_sim(latency_scale=0.0), free_port()) as sim:
            env = replica_env(settings, f"{sim}/v1")
            for n in (int(x) for x in args.replicas.split(",")):
                pool = [Replica(f"R{i}", free_port(), env, logs) for i in range(n)]
                try:
                    for r in pool:
                        r.start()
                    ready = await asyncio.gather(*(r.wait_ready() for r in pool))
                    lb = Balancer(pool)
                    async with httpx.AsyncClient(timeout=10) as http:
                        for b in bodies:  # classify once; the session carries it everywhere
                            await lb.decide(http, b)
                    target = await _applied(pool[0])
                    for r in pool:  # every replica holds every warmed session
                        while await _applied(r) < target:
                            await asyncio.sleep(0.1)
                    before = [cpu_seconds(r.pid) for r in pool if r.pid]
                    load = await _loadgen(args, [r.port for r in pool], bodies)
                    cpu = [
                        round(cpu_seconds(r.pid) - b, 1)
                        for r, b in zip(pool, before, strict=True)
                        if r.pid
                    ]
                    row = {
                        "replicas": n,
                        "ready_s": [round(x, 2) for x in ready],
                        **load,
                        "cpu_s": cpu,
                    }
                    rows.append(row)
                    say(f"  {n} replica(s): {row['rps']:.0f} req/s, by replica {row['by_replica']}")
                finally:
                    for r in pool:
                        r.stop()
    finally:
        with contextlib.suppress(Exception):
            await delete_topics_with_prefix(base.kafka_bootstrap, prefix)
        with psycopg.connect(base.database_url, autocommit=True) as conn:
            conn.execute(f'drop schema if exists "{schema}" cascade')
    return rows


async def _applied(r: Any) -> int:
    return int((await r.status())["sessions"]["applied"])


async def _loadgen(args: argparse.Namespace, ports: list[int], bodies: list[dict[str, Any]]) -> Any:
    spec = orjson.dumps(
        {
            "ports": ports,
            "seconds": args.seconds,
            "connections": args.connections,
            "bodies": bodies,
            "secret": "dev-internal-secret",
        }
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench.scale_loadgen",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        cwd=ROOT,
    )
    out, _ = await proc.communicate(spec)
    if proc.returncode != 0:
        raise SystemExit("the load generator failed")
    return orjson.loads(out)


# ---- report ----------------------------------------------------------------------------------


def _say(args: argparse.Namespace) -> Any:
    return (lambda *a: None) if args.json else (lambda *a: print(*a, flush=True))


def report(result: dict[str, Any]) -> None:
    workers = result.get("workers") or []
    replicas = result.get("replicas") or []
    print()
    if workers:
        print(f"{'decider run':<24} {'run s':>8} {'speed-up':>9} {'cases':>6}  worker CPU s")
        first = workers[0].get("run_s")
        for w in workers:
            run_s = w.get("run_s")
            speed = f"{first / run_s:.2f}x" if first and run_s else "-"
            shown = f"{run_s:8.1f}" if run_s else f"{'failed':>8}"
            print(
                f"{w['workers']} worker(s){'':<14} {shown} {speed:>9} {w.get('cases', 0):>6}  "
                f"{w['cpu_s']}  {w.get('error', '')}"
            )
        print()
    if replicas:
        print(
            f"{'/decide (cached class.)':<24} {'req/s':>8} {'speed-up':>9} {'p50 ms':>7} "
            f"{'p99 ms':>7} {'errors':>6}  answers by replica / replica CPU s / ready s"
        )
        first = replicas[0]["rps"]
        for r in replicas:
            print(
                f"{r['replicas']} replica(s){'':<13} {r['rps']:8.0f} {r['rps'] / first:8.2f}x "
                f"{r['p50_ms']:7.2f} {r['p99_ms']:7.2f} {r['errors']:>6}  "
                f"{r['by_replica']} / {r['cpu_s']} / {r['ready_s']}"
            )
        print()
    print(result["note"])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--part", choices=("workers", "replicas", "all"), default="all")
    ap.add_argument("--workers", default="1,2")
    ap.add_argument("--replicas", default="1,2")
    ap.add_argument("--models", default="sim/flash-lite,sim/balanced")
    ap.add_argument("--slots", type=int, default=2, help="Job slots per worker.")
    ap.add_argument("--latency-scale", type=float, default=0.0)
    ap.add_argument("--run-timeout", type=float, default=1200.0)
    ap.add_argument("--seconds", type=float, default=10.0, help="Load per replica count.")
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--conversations", type=int, default=200)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    result: dict[str, Any] = {"cores": os.cpu_count(), "loadavg": os.getloadavg()}
    if args.part in ("replicas", "all"):
        result["replicas"] = asyncio.run(run_replicas(args))
    if args.part in ("workers", "all"):
        result["workers"] = run_workers(args)
    result["note"] = CPU_NOTE.format(cores=os.cpu_count())
    if args.json:
        print(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode())
    else:
        report(result)
    failed = any(w.get("run_s") is None for w in result.get("workers", []))
    failed |= any(r["errors"] or not r["requests"] for r in result.get("replicas", []))
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
