"""Decide replicas as real `provenroute serve` processes on real Kafka and PostgreSQL: two
replicas with the same settings are both ready and share every conversation's session, and
a rolling restart under load loses no decision and no stickiness."""

from __future__ import annotations

import asyncio
import collections
from pathlib import Path
from typing import Any

import httpx

from infra.settings import Settings
from tests.integration.replica_support import Balancer, Replica, replica_env, replicas
from tests.integration.test_decide_support import (
    candidate,
    decide_settings,
    free_port,
    publish_and_project,
    routing_table,
    sim_url,
    table_published,
)

__all__ = ["sim_url"]

TIERS = ("low", "medium", "high")
ANCHOR, CHEAPER = "sim/balanced", "sim/flash-lite"


def table(version: str, *models: tuple[str, float], at: str) -> Any:
    cands = [candidate(m, c) for m, c in models]
    return routing_table(version, {t: cands for t in TIERS}, factor=3.0, published_at=at)


V1 = table("v1", (ANCHOR, 0.03), at="2026-06-01T00:00:00.000Z")
# v2 makes CHEAPER the fresh pick; ANCHOR stays within the factor, so anchored
# conversations must keep it (sticky) and new ones get CHEAPER.
V2 = table("v2", (CHEAPER, 0.012), (ANCHOR, 0.03), at="2026-06-02T00:00:00.000Z")


def turn(cid: str, n: int) -> dict[str, Any]:
    messages: list[dict[str, str]] = []
    for i in range(n):
        if messages:
            messages.append({"role": "assistant", "content": f"done step {i}"})
        messages.append({"role": "user", "content": f"Step {i} of task {cid}: fix the parser"})
    return {"conversationId": cid, "messages": messages}


async def applied(r: Replica) -> int:
    return int((await r.status())["sessions"]["applied"])


async def table_version(r: Replica) -> str | None:
    version: str | None = (await r.status())["routing_table"]["version"]
    return version


async def eventually(check: Any, timeout_s: float = 60.0) -> None:
    """Polls an async predicate (the replicas are other processes)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not await check():
        if loop.time() > deadline:
            raise TimeoutError("condition not met")
        await asyncio.sleep(0.2)


def setup(settings_for, kafka_prefix: str, pg_schema: str, sim_url: str) -> Settings:  # type: ignore[no-untyped-def]
    return decide_settings(settings_for(kafka_prefix, pg_schema), sim_url)


async def test_two_replicas_are_ready_and_a_conversation_anchored_on_one_is_sticky_on_the_other(
    kafka_prefix: str,
    pg_schema: str,
    settings_for,
    sim_url: str,
    tmp_path: Path,  # type: ignore[no-untyped-def]
) -> None:
    settings = setup(settings_for, kafka_prefix, pg_schema, sim_url)
    await publish_and_project(settings, table_published(V1))
    env = replica_env(settings, sim_url)
    with replicas(["A", "B"], env, tmp_path, [free_port(), free_port()]) as (a, b):
        await asyncio.gather(a.wait_ready(), b.wait_ready())
        lb = Balancer([a, b])
        async with httpx.AsyncClient(timeout=10) as http:
            first, by = await lb.decide(http, turn("x", 1), prefer=0)
            assert by == "A.1" and (first["model"], first["sticky"]) == (ANCHOR, False)
            await eventually(lambda: _at_least(b, 1))
            # The same request on B: B holds A's session, classification included.
            again, by = await lb.decide(http, turn("x", 1), prefer=1)
            assert by == "B.1" and again["classificationCached"] is True
            assert again["model"] == ANCHOR

            await publish_and_project(settings, table_published(V2))
            await eventually(lambda: _both_on(a, b, "v2"))
            second, by = await lb.decide(http, turn("x", 2), prefer=1)
            assert by == "B.1"
            assert (second["model"], second["sticky"], second["tableVersion"]) == (
                ANCHOR,
                True,
                "v2",
            )
            fresh, _ = await lb.decide(http, turn("new", 1), prefer=1)
            assert (fresh["model"], fresh["sticky"]) == (CHEAPER, False)


async def _at_least(r: Replica, n: int) -> bool:
    return await applied(r) >= n


async def _both_on(a: Replica, b: Replica, version: str) -> bool:
    return await table_version(a) == version and await table_version(b) == version


async def test_a_rolling_restart_under_load_keeps_every_decision_and_every_stickiness(
    kafka_prefix: str,
    pg_schema: str,
    settings_for,
    sim_url: str,
    tmp_path: Path,  # type: ignore[no-untyped-def]
) -> None:
    settings = setup(settings_for, kafka_prefix, pg_schema, sim_url)
    await publish_and_project(settings, table_published(V1))
    env = replica_env(settings, sim_url)
    conversations = [f"conv-{i}" for i in range(16)]
    answers: list[tuple[str, int, dict[str, Any], str]] = []
    with replicas(["A", "B"], env, tmp_path, [free_port(), free_port()]) as (a, b):
        await asyncio.gather(a.wait_ready(), b.wait_ready())
        lb = Balancer([a, b])
        stop_watch = asyncio.Event()
        watcher = asyncio.create_task(lb.watch(stop_watch))
        async with httpx.AsyncClient(timeout=10) as http:
            # Every conversation anchored on A (v1 has one model) ...
            for cid in conversations:
                out, by = await lb.decide(http, turn(cid, 1), prefer=0)
                answers.append((cid, 1, out, by))
            await eventually(lambda: _at_least(b, len(conversations)))
            # ... then the fresh pick changes: from here on every turn must stay sticky.
            await publish_and_project(settings, table_published(V2))
            await eventually(lambda: _both_on(a, b, "v2"))

            done = asyncio.Event()

            async def talk(cid: str) -> None:
                n = 1
                # Until both restarts are over, and a few turns after.
                while not done.is_set() or n < 4:
                    n += 1
                    out, by = await lb.decide(http, turn(cid, n), prefer=n)
                    answers.append((cid, n, out, by))
                    await asyncio.sleep(0.05)
                    if n > 400:
                        raise AssertionError("the rolling restart never finished")

            async def roll() -> None:
                for r in (a, b):
                    await asyncio.sleep(1.0)  # load on both before each restart
                    await asyncio.to_thread(r.stop)
                    r.start()
                    await r.wait_ready()
                    await eventually(lambda r=r: _table_on(r, "v2"))
                    lb.up[r.name] = True
                await asyncio.sleep(1.0)
                done.set()

            await asyncio.gather(roll(), *(talk(cid) for cid in conversations))
        stop_watch.set()
        await watcher

    nulls = [(cid, n, out["nullReason"]) for cid, n, out, _ in answers if out["model"] is None]
    # The simulated classifier can time out on a loaded machine; nothing else may be null.
    assert [x for x in nulls if x[2] not in ("classifier_timeout", "classifier_error")] == []
    served: dict[str, set[str]] = collections.defaultdict(set)
    for cid, n, out, by in answers:
        if out["model"] is not None:
            served[cid].add(by)
        if n == 1:
            assert (out["model"], by) == (ANCHOR, "A.1"), (cid, out)
        elif out["model"] is not None:
            assert (out["model"], out["sticky"]) == (ANCHOR, True), (cid, n, by, out)
    by_replica = collections.Counter(
        by for _, n, out, by in answers if n > 1 and out["model"] is not None
    )
    print(f"{len(answers)} answers, {len(nulls)} null (classifier), served by {dict(by_replica)}")
    # Both original replicas and both restarted ones served sticky turns, and every
    # conversation was served by more than one replica.
    assert {"A.1", "B.1", "A.2", "B.2"} <= set(by_replica), by_replica
    assert all(len(ids) >= 2 for ids in served.values()), served


async def _table_on(r: Replica, version: str) -> bool:
    return await table_version(r) == version
