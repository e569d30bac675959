"""Time to ready of a decide replica with many sessions on the sessions log.

Sets up its own topic prefix and schema, publishes a routing table, writes `--sessions`
session records (an incumbent and one cached classification each, as /decide writes them)
onto the sessions log, then starts `provenroute serve` as a process and measures how long
until /readyz answers (the replica reads every partition of the log before it is ready),
once with an empty log (the process's own start) and once with the full one. It checks the
work was done: the replica applied every record, and `--check` sampled conversations are
answered from their session (cached classification, sticky on the seeded incumbent).
Prints the replica's peak RSS beside the timings.

    .venv/bin/python -m bench.sessions_ready [--sessions 1000000] [--check 200] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

MODEL = "sim/balanced"
CLASSIFIER = "sim/balanced"


def _messages(i: int) -> list[dict[str, str]]:
    return [{"role": "user", "content": f"Fix the failing test in module {i % 977}"}]


def _record(i: int, now: float, table_version: str) -> bytes:
    from api.decide.classifier import content_hash, render
    from api.decide.session_record import remember_classification, with_incumbent
    from contracts.classification import Classification
    from contracts.decision import SessionState
    from tests.unit.test_taxonomy_tiers import LABEL

    classification = Classification.model_validate(LABEL)
    digest = content_hash(render(_messages(i)))
    record = with_incumbent(
        remember_classification(None, CLASSIFIER, digest, classification),
        SessionState(model=MODEL, reasoning_effort="medium", table_version=table_version),
    )
    stamped = record.model_copy(update={"version": 1, "touched_at": now, "writer": "bench"})
    return stamped.model_dump_json().encode()


async def seed(bootstrap: str, topic: str, n: int, table_version: str) -> float:
    """Writes `n` sessions keyed as the service keys them; returns the seconds it took."""
    from aiokafka import AIOKafkaProducer
    from aiokafka.partitioner import DefaultPartitioner

    started = time.monotonic()
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks=1, linger_ms=50, max_batch_size=1024 * 1024
    )
    await producer.start()
    try:
        partitions = sorted(await producer.partitions_for(topic))
        partitioner = DefaultPartitioner()
        now = time.time()
        # Records differ only in the conversation (and its content hash): build a few
        # hundred distinct ones and reuse them, the write rate is the broker's, not pydantic's.
        templates = [_record(i, now, table_version) for i in range(977)]
        batches: dict[int, Any] = {}
        pending = []
        for i in range(n):
            key = orjson.dumps(f"bench-{i}")
            p = partitioner(key, partitions, partitions)
            batch = batches.get(p)
            if batch is None:
                batch = batches[p] = producer.create_batch()
            if batch.append(key=key, value=templates[i % 977], timestamp=None) is None:
                pending.append(await producer.send_batch(batch, topic, partition=p))
                batch = batches[p] = producer.create_batch()
                batch.append(key=key, value=templates[i % 977], timestamp=None)
            if len(pending) > 64:
                await asyncio.gather(*pending)
                pending = []
        for p, batch in batches.items():
            pending.append(await producer.send_batch(batch, topic, partition=p))
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return time.monotonic() - started


async def measure(replica: Any, expect_applied: int, check: int, seeded: int) -> dict[str, Any]:
    """Start `replica`, time it to ready, verify its sessions, stop it."""
    import httpx

    from infra.processes import peak_rss_mb
    from tests.integration.replica_support import Balancer

    replica.start()
    try:
        ready_s = await replica.wait_ready(timeout_s=900)
        status = await replica.status()
        sessions = status["sessions"]
        out: dict[str, Any] = {
            "ready_s": round(ready_s, 2),
            "sessions_caught_up_s": sessions["caught_up_s"],
            "applied": sessions["applied"],
            "peak_rss_mb": round(peak_rss_mb(replica.pid) or float("nan"), 1),
        }
        problems: list[str] = []
        if sessions["applied"] != expect_applied:
            problems.append(f"applied {sessions['applied']} records, expected {expect_applied}")
        ok = 0
        if seeded:
            lb = Balancer([replica])
            async with httpx.AsyncClient(timeout=10) as http:
                for i in random.sample(range(seeded), min(check, seeded)):
                    body = {"conversationId": f"bench-{i}", "messages": _messages(i)}
                    answer, _ = await lb.decide(http, body)
                    if (
                        answer["classificationCached"]
                        and answer["sticky"]
                        and (answer["model"] == MODEL)
                    ):
                        ok += 1
                    elif len(problems) < 5:
                        problems.append(f"bench-{i} not served from its session: {answer}")
        out["checked"], out["checked_ok"], out["problems"] = min(check, seeded), ok, problems
        return out
    finally:
        replica.stop()


async def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sessions", type=int, default=1_000_000)
    ap.add_argument("--check", type=int, default=200, help="Conversations verified by /decide.")
    ap.add_argument("--json", action="store_true", help="Print one JSON object instead.")
    args = ap.parse_args()

    import psycopg

    from infra.settings import Settings
    from streams.kafka_admin import ensure_topics
    from streams.topics import COMMANDS, DECISIONS, SESSIONS
    from tests.conftest import delete_topics_with_prefix
    from tests.integration.replica_support import Replica, replica_env
    from tests.integration.test_decide_support import (
        candidate,
        free_port,
        publish_and_project,
        routing_table,
        table_published,
    )

    base = Settings()
    prefix = f"bench{uuid.uuid4().hex[:8]}."
    schema = f"bench_{uuid.uuid4().hex[:8]}"
    settings = base.model_copy(update={"topic_prefix": prefix, "db_schema": schema})
    say = (lambda *a: None) if args.json else print
    with psycopg.connect(base.database_url, autocommit=True) as conn:
        conn.execute(f'create schema "{schema}"')
    try:
        await ensure_topics(base.kafka_bootstrap, prefix, (SESSIONS, DECISIONS, COMMANDS))
        # A cheaper fresh pick within the switch factor: a seeded session answers sticky.
        cands = [candidate("sim/flash-lite", 0.012), candidate(MODEL, 0.03)]
        table = routing_table("bench-v1", {t: cands for t in ("low", "medium", "high")})
        await publish_and_project(settings, table_published(table))
        # No classifier call is expected (every checked request hits its cached class).
        env = replica_env(settings, "http://127.0.0.1:9/v1")
        logs = ROOT / "artifacts" / "bench-sessions-ready"
        replica = Replica("R", free_port(), env, logs)
        say("empty sessions log: starting a replica ...")
        empty = await measure(replica, 0, 0, 0)
        say(f"writing {args.sessions:,} sessions onto {settings.topic(SESSIONS.name)} ...")
        seed_s = await seed(
            base.kafka_bootstrap, settings.topic(SESSIONS.name), args.sessions, table.version
        )
        say(f"  written in {seed_s:.1f} s; starting a replica ...")
        full = await measure(replica, args.sessions, args.check, args.sessions)
    finally:
        with contextlib.suppress(Exception):
            await delete_topics_with_prefix(base.kafka_bootstrap, prefix)
        with psycopg.connect(base.database_url, autocommit=True) as conn:
            conn.execute(f'drop schema if exists "{schema}" cascade')

    result = {
        "sessions": args.sessions,
        "seed_s": round(seed_s, 1),
        "empty": empty,
        "full": full,
        "apply_rate_per_s": (
            round(args.sessions / full["sessions_caught_up_s"])
            if full["sessions_caught_up_s"]
            else None
        ),
        "ok": not full["problems"] and full["checked_ok"] == full["checked"],
        "logs": str(logs),
    }
    if args.json:
        print(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode())
    else:
        print()
        print(
            f"{'sessions on the log':<22} {'ready s':>8} {'sessions s':>10} {'applied':>10} "
            f"{'peak RSS MB':>11} {'checked ok':>11}"
        )
        for label, r, n in (("0", empty, 0), (f"{args.sessions:,}", full, args.sessions)):
            del n
            print(
                f"{label:<22} {r['ready_s']:>8.2f} {r['sessions_caught_up_s'] or 0:>10.2f} "
                f"{r['applied']:>10,} {r['peak_rss_mb']:>11.1f} "
                f"{r.get('checked_ok', 0):>5}/{r.get('checked', 0):<5}"
            )
        print(
            f"\nready s: process start to /readyz 200; sessions s: the replica's own time to "
            f"read the log ({result['apply_rate_per_s'] or 0:,} records/s)."
        )
        for p in full["problems"]:
            print(f"PROBLEM: {p}")
        print(
            "OK: every record applied, every sampled conversation answered from its session"
            if result["ok"]
            else "FAILED"
        )
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
