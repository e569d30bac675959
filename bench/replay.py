"""Replay benchmark: N realistic events on a fresh topic prefix, replayed into a fresh schema.

    .venv/bin/python -m bench.replay [--events 1000000] [--json] [--keep] [--reuse PREFIX]

Generates decider runs (8 models x 76 cases x 3 reps, carried models, summaries, routing
tables), classifier runs and decisions with the contract classes, pre-encodes them, produces
them with an idempotent batching producer, then times `replay` (migrations + loaders, from
offset 0 into a fresh schema) in a process of its own, so its peak RSS is its own. Checks
what it measured: no failed event, and exactly the expected rows (case results, decisions,
routing tables) and offsets. Target: >= 100,000 events/s, peak RSS <= 250 MB per process.

The machine is often shared, so it also prints what moves less with the load: the CPU
seconds of the replay's processes (`client_cpu_s`, `loaders_cpu_s` for the spawned ones)
and of its Postgres backends (`postgres_cpu_s`, a local server only), and the 1-minute
load average before and after.

`--keep` keeps the topics (and the schema); `--reuse PREFIX` replays topics a kept run left
(the generator runs again, without producing, to know what to expect).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.backend_cpu import BackendCpu
from bench.synthetic import LogBuilder, SimModel, produce
from contracts.codec import encode_event
from contracts.events import CaseGraded, DecisionMade, RoutingTablePublished
from infra.settings import Settings, assume_dev
from projections.bulk_writer import REPLAY_APP
from projections.db import connect
from projections.replay import replay
from streams.kafka_admin import ensure_topics

FLEET: tuple[SimModel, ...] = tuple(
    SimModel(
        f"sim/model-{i}",
        {"low": min(0.99, 0.7 + 0.03 * i), "medium": 0.4 + 0.06 * i, "high": 0.1 + 0.1 * i},
        0.0002 * (i + 1) ** 2,
        500 + 400 * i,
    )
    for i in range(8)
)


@dataclass
class Expected:
    events: int = 0
    case_results: int = 0
    decisions: int = 0
    routing_tables: int = 0


async def generate(settings: Settings | None, target: int, seed: int = 7) -> Expected:
    """Generate runs chunk by chunk, pre-encode, hand them to a batching producer (unless
    `settings` is None: then only count what a replay must produce)."""
    b = LogBuilder(seed=seed)
    cfg = b.config(FLEET)
    want = Expected()
    n = 0
    while want.events < target:
        n += 1
        if n % 10 == 0:
            b.classifier_run(f"bench-cls-{n}", cfg, cases=72)
        else:
            if n % 2 == 1:  # every other decider run measures all 8 models, the next carries
                b.history.clear()
            b.decider_run(f"bench-run-{n}", cfg, FLEET, reps=3, step_s=0.01)
            b.decisions(400, f"bench-run-{n}", [m.model for m in FLEET[:4]])
        chunk = b.messages[: target - want.events]
        b.messages.clear()
        want.events += len(chunk)
        want.case_results += sum(isinstance(e, CaseGraded) for _t, _k, e in chunk)
        want.decisions += sum(isinstance(e, DecisionMade) for _t, _k, e in chunk)
        want.routing_tables += sum(isinstance(e, RoutingTablePublished) for _t, _k, e in chunk)
        if settings is not None:
            encoded = [(topic, key.encode(), encode_event(ev)) for topic, key, ev in chunk]
            await produce(settings.kafka_bootstrap, settings.topic_prefix, encoded)
    return want


def peak_rss_mb(who: int = resource.RUSAGE_SELF) -> float:
    return resource.getrusage(who).ru_maxrss / 1024


def cpu_s(who: int = resource.RUSAGE_SELF) -> float:
    """User + system CPU seconds of this process (or its waited-for children)."""
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


async def replay_only(prefix: str, schema: str) -> None:
    """The replay's own process: prints one JSON line with its figures."""
    settings = Settings().model_copy(update={"topic_prefix": prefix})
    started = time.monotonic()
    result = await replay(settings, schema=schema)
    s = result.stats
    figures = {
        "events": s.events_applied,
        "failed": s.failed,
        "ignored": s.ignored,
        "seconds": round(s.elapsed_s, 2),
        "seconds_with_schema_setup": round(time.monotonic() - started, 2),
        "events_per_s": round(s.events_per_s),
        "load_s": round(s.load_s, 2),
        "restore_s": round(s.restore_s, 2),
        "mode": result.mode,
        "loader_processes": s.workers,
        "peak_rss_main_mb": round(peak_rss_mb()),
        "peak_rss_loader_mb": round(peak_rss_mb(resource.RUSAGE_CHILDREN)),
        "client_cpu_s": round(cpu_s() + cpu_s(resource.RUSAGE_CHILDREN), 2),
        "loaders_cpu_s": round(cpu_s(resource.RUSAGE_CHILDREN), 2),
    }
    print(json.dumps(figures))


async def measure(base: Settings, prefix: str, schema: str) -> dict[str, Any]:
    with BackendCpu(base.database_url, REPLAY_APP) as pg:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            __file__,
            "--replay-only",
            prefix,
            schema,
            stdout=asyncio.subprocess.PIPE,
        )
        out, _ = await proc.communicate()
    if proc.returncode != 0:
        raise SystemExit(proc.returncode)
    figures: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
    with connect(base.database_url, schema) as conn:
        row = conn.execute(
            "select (select count(*) from case_results), (select count(*) from decisions),"
            " (select count(*) from routing_tables),"
            " (select coalesce(sum(next_offset), 0) from projection_offsets)"
        ).fetchone()
    assert row is not None
    figures.update(
        zip(("case_results", "decisions", "routing_tables", "offsets"), map(int, row), strict=True)
    )
    figures["peak_rss_mb"] = max(figures["peak_rss_main_mb"], figures["peak_rss_loader_mb"])
    figures["postgres_cpu_s"] = pg.seconds
    return figures


def check(figures: dict[str, Any], want: Expected) -> list[str]:
    problems = [] if figures["failed"] == 0 else [f"{figures['failed']} events failed"]
    for name in ("case_results", "decisions", "routing_tables"):
        if figures[name] != getattr(want, name):
            problems.append(f"{name}: {figures[name]} rows, expected {getattr(want, name)}")
    if figures["offsets"] != want.events:
        problems.append(f"offsets sum to {figures['offsets']}, expected {want.events}")
    return problems


async def drop(base: Settings, schema: str, prefix: str | None) -> None:
    with connect(base.database_url, "public") as conn:
        conn.execute(f'drop schema if exists "{schema}" cascade')
    if prefix is None:
        return
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=base.kafka_bootstrap)
    await admin.start()
    try:
        names = [t for t in await admin.list_topics() if t.startswith(prefix)]
        await admin.delete_topics(names)
    finally:
        await admin.close()


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--json", action="store_true", help="print one JSON object of figures")
    ap.add_argument("--keep", action="store_true", help="keep the topics and replayed schema")
    ap.add_argument("--reuse", metavar="PREFIX", help="replay the topics a --keep run left")
    ap.add_argument("--replay-only", nargs=2, metavar=("PREFIX", "SCHEMA"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    assume_dev()
    if args.replay_only:
        await replay_only(*args.replay_only)
        return

    say = (lambda *a: print(*a, file=sys.stderr)) if args.json else print
    base = Settings()
    prefix = args.reuse or f"bench{uuid.uuid4().hex[:8]}."
    schema = f"bench_{uuid.uuid4().hex[:8]}"
    t0 = time.perf_counter()
    if args.reuse:
        want = await generate(None, args.events)
        say(f"reusing {prefix}: {want.events:,} events expected")
    else:
        await ensure_topics(base.kafka_bootstrap, prefix)
        want = await generate(base.model_copy(update={"topic_prefix": prefix}), args.events)
        say(
            f"generated and produced {want.events:,} events to {prefix} in "
            f"{time.perf_counter() - t0:.1f}s (peak RSS {peak_rss_mb():.0f} MB)"
        )
    try:
        load_before = os.getloadavg()[0]
        figures = await measure(base, prefix, schema)
        figures["load_average_1m_before"] = round(load_before, 2)
    finally:
        if not args.keep:
            await drop(base, schema, None if args.reuse else prefix)
    figures["load_average_1m"] = round(os.getloadavg()[0], 2)
    figures["topic_prefix"] = prefix
    problems = check(figures, want)
    if args.json:
        print(json.dumps(figures))
    else:
        print(
            f"replayed {figures['events']:,} events in {figures['seconds']:.1f}s: "
            f"{figures['events_per_s']:,} events/s ({figures['mode']}; load "
            f"{figures['load_s']:.1f}s, constraints {figures['restore_s']:.1f}s; "
            f"{figures['failed']} failed)"
        )
        print(
            f"peak RSS: main process {figures['peak_rss_main_mb']} MB, largest loader process "
            f"{figures['peak_rss_loader_mb']} MB; CPU: client {figures['client_cpu_s']:.1f}s, "
            f"Postgres {figures['postgres_cpu_s']}s; "
            f"1-min load average {figures['load_average_1m_before']} before, "
            f"{figures['load_average_1m']} after"
        )
        print(
            f"rows: {figures['case_results']:,} case results, {figures['decisions']:,} "
            f"decisions, {figures['routing_tables']} routing tables; offsets {figures['offsets']:,}"
        )
    if problems:
        raise SystemExit("replay bench check failed: " + "; ".join(problems))


if __name__ == "__main__":
    asyncio.run(main())
