"""Replay benchmark: N realistic events on a fresh topic prefix, replayed into a fresh schema.

    .venv/bin/python bench/replay.py [--events 1000000] [--keep]

Generates decider runs (8 models x 76 cases x 3 reps, carried models, summaries, routing
tables), classifier runs and decisions with the contract classes, pre-encodes them, produces
them with an idempotent batching producer, then times `replay` (migrations + projector,
from offset 0 into a fresh schema). Prints events/s and peak RSS (target: >= 50,000/s).
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.synthetic import LogBuilder, SimModel, produce
from contracts.codec import encode_event
from infra.settings import Settings, assume_dev
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


async def generate_and_produce(settings: Settings, target: int, seed: int = 7) -> int:
    """Generate runs chunk by chunk, pre-encode, hand them to a batching producer."""
    b = LogBuilder(seed=seed)
    cfg = b.config(FLEET)
    sent = n = 0
    while sent < target:
        n += 1
        if n % 10 == 0:
            b.classifier_run(f"bench-cls-{n}", cfg, cases=72)
        else:
            if n % 2 == 1:  # every other decider run measures all 8 models, the next carries
                b.history.clear()
            b.decider_run(f"bench-run-{n}", cfg, FLEET, reps=3, step_s=0.01)
            b.decisions(400, f"bench-run-{n}", [m.model for m in FLEET[:4]])
        chunk = b.messages[: target - sent]
        b.messages.clear()
        encoded = [(topic, key.encode(), encode_event(ev)) for topic, key, ev in chunk]
        await produce(settings.kafka_bootstrap, settings.topic_prefix, encoded)
        sent += len(encoded)
    return sent


def peak_rss_mb(who: int = resource.RUSAGE_SELF) -> float:
    return resource.getrusage(who).ru_maxrss / 1024


async def replay_only(prefix: str, schema: str) -> None:
    settings = Settings().model_copy(update={"topic_prefix": prefix})
    result = await replay(settings, schema=schema)
    s = result.stats
    print(
        f"replayed {s.events_applied:,} events into {schema} in {s.elapsed_s:.1f}s: "
        f"{s.events_per_s:,.0f} events/s ({s.batches} batches, {s.failed} failed, {result.mode})"
    )
    print(
        f"replay peak RSS: main process {peak_rss_mb():.0f} MB, largest loader process "
        f"{peak_rss_mb(resource.RUSAGE_CHILDREN):.0f} MB"
    )


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--keep", action="store_true", help="keep the topics and replayed schema")
    ap.add_argument("--replay-only", nargs=2, metavar=("PREFIX", "SCHEMA"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    assume_dev()
    if args.replay_only:
        await replay_only(*args.replay_only)
        return

    base = Settings()
    prefix = f"bench{uuid.uuid4().hex[:8]}."
    schema = f"bench_{uuid.uuid4().hex[:8]}"
    settings = base.model_copy(update={"topic_prefix": prefix})
    await ensure_topics(base.kafka_bootstrap, prefix)
    t0 = time.perf_counter()
    sent = await generate_and_produce(settings, args.events)
    t1 = time.perf_counter()
    print(f"generated and produced {sent:,} events to {prefix}events in {t1 - t0:.1f}s")
    print(f"generator peak RSS {peak_rss_mb():.0f} MB")
    try:
        # The replay runs in its own process so its peak RSS is its own.
        proc = await asyncio.create_subprocess_exec(
            sys.executable, __file__, "--replay-only", prefix, schema
        )
        rc = await proc.wait()
        if rc != 0:
            raise SystemExit(rc)
        with connect(base.database_url, schema) as conn:
            rows = conn.execute(
                "select (select count(*) from case_results), (select count(*) from decisions),"
                " (select count(*) from routing_tables), (select sum(next_offset)"
                " from projection_offsets)"
            ).fetchone()
        print(f"case_results, decisions, routing_tables, offsets: {rows}")
    finally:
        if not args.keep:
            with connect(base.database_url, "public") as conn:
                conn.execute(f'drop schema if exists "{schema}" cascade')
            from aiokafka.admin import AIOKafkaAdminClient

            admin = AIOKafkaAdminClient(bootstrap_servers=base.kafka_bootstrap)
            await admin.start()
            try:
                names = [t for t in await admin.list_topics() if t.startswith(prefix)]
                await admin.delete_topics(names)
            finally:
                await admin.close()


if __name__ == "__main__":
    asyncio.run(main())
