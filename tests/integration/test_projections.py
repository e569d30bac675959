"""Projections on real Kafka and PostgreSQL: idempotence, replay, --until, crashes, outages.

Events are produced here with an idempotent producer (realistic sequences built with the
contract classes by `bench.synthetic`), not through the worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import textwrap
import time
from datetime import datetime
from typing import Any

import psycopg
import pytest

from bench.synthetic import DEFAULT_MODELS, LogBuilder, SimModel, produce
from contracts.events import CaseGraded, RoutingTablePublished
from contracts.routing_diff import diff_tables
from contracts.taxonomy import TIERS, Tier
from infra.settings import Settings
from projections.db import connect
from projections.export import compare_schemas
from projections.migrate import migrate
from projections.projector import (
    ProjectorRefused,
    project_once,
    run_projector,
)
from projections.read_model import open_read_model
from projections.replay import drop_schema, prepare_fresh_schema, replay
from projections.tables import PROJECTED_TABLES
from streams.topics import CHANNEL_ROUTING_TABLE

pytestmark = pytest.mark.timeout(90)

CASES: list[tuple[str, Tier]] = [(f"c{i:02d}", TIERS[i % 3]) for i in range(12)]
NEWCOMER = SimModel("sim/newcomer", {"low": 0.99, "medium": 0.99, "high": 0.99}, 0.00005, 300)


def story() -> LogBuilder:
    """Config, decider run r1, classifier run, decisions, new config, decider run r2
    (carries the old models, measures a newcomer), more decisions."""
    b = LogBuilder(seed=11)
    cfg = b.config()
    b.decider_run("r1", cfg, cases=CASES)
    b.classifier_run("c1", cfg, cases=9)
    b.decisions(30, "r1", ["sim/swift-mini", "sim/deep-large"])
    b.override("sim/steady-medium")
    b.now(3600)
    cfg2 = b.config((*DEFAULT_MODELS[:3], NEWCOMER), min_accuracy=0.75)
    b.decider_run("r2", cfg2, (*DEFAULT_MODELS[:3], NEWCOMER), cases=CASES)
    b.decisions(20, "r2", ["sim/newcomer"])
    return b


def snapshot(settings: Settings, schema: str) -> dict[str, list[tuple[Any, ...]]]:
    with connect(settings.database_url, schema) as conn:
        return {
            t: sorted(conn.execute(f"select * from {t}").fetchall(), key=repr)
            for t in (*PROJECTED_TABLES, "projection_offsets", "projection_errors")
        }


def count(settings: Settings, schema: str, sql: str) -> Any:
    with connect(settings.database_url, schema) as conn:
        row = conn.execute(sql).fetchone()
        assert row is not None
        return row[0]


@pytest.fixture
def other_schema(base_settings: Settings) -> Any:
    made: list[str] = []

    def make(stem: str = "o_") -> str:
        import uuid

        name = f"{stem}{uuid.uuid4().hex[:10]}"
        made.append(name)
        return name

    yield make
    for name in made:
        drop_schema(base_settings.database_url, name)


async def test_projecting_twice_and_duplicate_deliveries_change_nothing(
    kafka_prefix: str, pg_schema: str, settings_for: Any, other_schema: Any
) -> None:
    settings = settings_for(kafka_prefix, pg_schema)
    b = story()
    await produce(settings.kafka_bootstrap, kafka_prefix, b.messages)

    applied = await project_once(settings, pg_schema)
    assert applied == len(b.messages)
    graded = sum(isinstance(e, CaseGraded) for _t, _k, e in b.messages)
    assert count(settings, pg_schema, "select count(*) from case_results") == graded
    assert count(settings, pg_schema, "select count(*) from routing_tables") == 2
    assert count(settings, pg_schema, "select count(*) from decisions") == 50
    assert (
        count(settings, pg_schema, "select count(*) from run_models where disposition = 'carried'")
        == 3
    )
    assert count(settings, pg_schema, "select count(*) from projection_errors") == 0
    first = snapshot(settings, pg_schema)

    assert await project_once(settings, pg_schema) == 0  # nothing past the stored offsets
    assert snapshot(settings, pg_schema) == first

    # The whole log delivered again: every event is applied again and changes nothing.
    await produce(settings.kafka_bootstrap, kafka_prefix, b.messages)
    assert await project_once(settings, pg_schema) == len(b.messages)
    again = snapshot(settings, pg_schema)
    assert {t: v for t, v in again.items() if t != "projection_offsets"} == {
        t: v for t, v in first.items() if t != "projection_offsets"
    }

    # A replay (trusted fast path) of the doubled log equals the live schema row for row,
    # in one process and split over two.
    for workers, mode in ((1, "bulk"), (2, "bulk, 2 loader processes")):
        target = other_schema("replay_")
        result = await replay(settings, schema=target, workers=workers)
        assert result.mode == mode
        assert result.stats.events_applied == 2 * len(b.messages)
        with connect(settings.database_url, pg_schema) as conn:
            assert compare_schemas(conn, pg_schema, target) == {}
            # the bulk load put back every key, foreign key and index, under the same names
            assert constraints(conn, pg_schema) == constraints(conn, target)


def constraints(conn: psycopg.Connection, schema: str) -> list[tuple[Any, ...]]:
    return conn.execute(
        "select t.relname, c.conname, c.contype, c.convalidated,"
        " replace(pg_get_constraintdef(c.oid), %s, '')"
        " from pg_constraint c join pg_class t on t.oid = c.conrelid"
        " where c.connamespace = to_regnamespace(%s)"
        " union all select t.relname, i.relname, 'i', true,"
        " replace(pg_get_indexdef(x.indexrelid), %s, '')"
        " from pg_index x join pg_class i on i.oid = x.indexrelid"
        " join pg_class t on t.oid = x.indrelid where t.relnamespace = to_regnamespace(%s)"
        " order by 1, 2, 3",
        (f"{schema}.", schema, f"{schema}.", schema),
    ).fetchall()


async def test_provenance_time_travel_and_diff(
    kafka_prefix: str, pg_schema: str, settings_for: Any
) -> None:
    settings = settings_for(kafka_prefix, pg_schema)
    b = story()
    await produce(settings.kafka_bootstrap, kafka_prefix, b.messages)
    await project_once(settings, pg_schema)
    publishes = [e for _t, _k, e in b.messages if isinstance(e, RoutingTablePublished)]
    t1, t2 = (datetime.fromisoformat(p.occurred_at) for p in publishes)

    async with open_read_model(settings.database_url, pg_schema) as read:
        early = datetime.fromisoformat("2025-01-01T00:00:00+00:00")
        assert await read.routing_table_as_of(early) is None
        before, after = await read.routing_table_as_of(t1), await read.routing_table_as_of(t2)
        assert before is not None and after is not None
        assert (before.version, after.version) == ("r1", "r2")
        assert await read.latest_routing_table() == after
        assert await read.resolve_table("r1") == before
        assert await read.resolve_table(t2.isoformat()) == after
        assert await read.resolve_table("no-such-table") is None
        # Each cell links back to its summary and the case results that produced it.
        carried = await read.provenance("r2", "low", "sim/steady-medium")
        assert carried.carried and carried.measured_in_run == "r1"
        assert carried.case_results == carried.graded == 4
        fresh = await read.provenance("r2", "high", NEWCOMER.model)
        assert not fresh.carried and fresh.measured_in_run == "r2" and fresh.case_results == 4

    d = diff_tables(before, after)
    kinds = {(c.model, c.kind) for c in d.changes}
    assert (NEWCOMER.model, "entered") in kinds
    assert ("sim/budget-nano", "left") in kinds
    assert "minAccuracy: 0.7 -> 0.75" in d.settings


async def test_notify_after_a_routing_table_is_projected(
    kafka_prefix: str, pg_schema: str, settings_for: Any
) -> None:
    settings = settings_for(kafka_prefix, pg_schema)
    b = LogBuilder(seed=2)
    b.decider_run("n1", b.config(), cases=CASES)
    await produce(settings.kafka_bootstrap, kafka_prefix, b.messages)
    with psycopg.connect(settings.database_url, autocommit=True) as listener:
        listener.execute(f"listen {CHANNEL_ROUTING_TABLE}")
        await project_once(settings, pg_schema)
        # The channel is shared with every other schema's projector: keep this schema's.
        got = [n.payload for n in listener.notifies(timeout=5) if pg_schema in n.payload]
    assert got == [f'{{"schema":"{pg_schema}","version":"n1"}}']


async def test_until_stops_at_the_last_event_at_or_before_the_timestamp(
    kafka_prefix: str, pg_schema: str, settings_for: Any, other_schema: Any
) -> None:
    settings = settings_for(kafka_prefix, pg_schema)
    b = story()
    await produce(settings.kafka_bootstrap, kafka_prefix, b.messages)
    first_publish = next(e for _t, _k, e in b.messages if isinstance(e, RoutingTablePublished))
    until = first_publish.occurred_at
    cutoff = datetime.fromisoformat(until)
    expected = [e for _t, _k, e in b.messages if datetime.fromisoformat(e.occurred_at) <= cutoff]

    target = other_schema("until_")
    result = await replay(settings, schema=target, until=until)
    assert result.mode == "bulk"
    assert result.stats.events_applied == len(expected)
    assert count(settings, target, "select string_agg(version, ',') from routing_tables") == "r1"
    assert count(settings, target, "select count(*) from runs") == 1
    # The stored offsets point at the first later event: a plain projector resumes there.
    assert await project_once(settings, target) == len(b.messages) - len(expected)
    await project_once(settings, pg_schema)
    with connect(settings.database_url, pg_schema) as conn:
        assert compare_schemas(conn, pg_schema, target) == {}


async def test_unknown_invalid_and_orphan_events_advance_the_offset(
    kafka_prefix: str, pg_schema: str, settings_for: Any, other_schema: Any
) -> None:
    settings = settings_for(kafka_prefix, pg_schema)
    b = LogBuilder(seed=5)
    b.decider_run("ok", b.config(), cases=CASES[:3])
    orphan = LogBuilder(seed=6)
    orphan.decider_run("orphan", orphan.config(), cases=CASES[:3])
    orphan_graded = [m for m in orphan.messages if isinstance(m[2], CaseGraded)][:1]
    raw: list[tuple[str, bytes, bytes]] = [
        ("events", b"x", b'{"type":"SomethingNew","schema_version":1}'),
        ("events", b"x", b"not json at all"),
        ("events", b"x", b'{"type":"RunCompleted","schema_version":9}'),
    ]
    await produce(settings.kafka_bootstrap, kafka_prefix, raw)
    await produce(settings.kafka_bootstrap, kafka_prefix, [*b.messages, *orphan_graded])

    applied = await project_once(settings, pg_schema)
    assert applied == len(b.messages)  # the orphan result (no RunStarted) is not applied
    with connect(settings.database_url, pg_schema) as conn:
        errors = conn.execute(
            'select event_type, reason from projection_errors order by topic, partition, "offset"'
        ).fetchall()
        offsets = conn.execute("select sum(next_offset) from projection_offsets").fetchone()
    reasons = " | ".join(r for _t, r in errors)
    assert len(errors) == 3, errors
    assert "not JSON" in reasons and "newer than supported" in reasons
    assert "ForeignKeyViolation" in reasons
    assert offsets is not None and offsets[0] == len(raw) + len(b.messages) + 1
    assert count(settings, pg_schema, "select count(*) from runs") == 1

    # A replay meets the orphan, which only the transactional path reproduces exactly.
    for workers in (1, 2):
        target = other_schema("fallback_")
        result = await replay(settings, schema=target, workers=workers)
        assert result.mode == "transactional (bulk fell back)"
        with connect(settings.database_url, pg_schema) as conn:
            assert compare_schemas(conn, pg_schema, target) == {}


async def test_bulk_replay_records_undecodable_events_like_the_live_projector(
    kafka_prefix: str, pg_schema: str, settings_for: Any, other_schema: Any
) -> None:
    settings = settings_for(kafka_prefix, pg_schema)
    b = story()
    raw: list[tuple[str, bytes, bytes]] = [
        ("events", b"x", b'{"type":"SomethingNew","schema_version":1}'),
        ("events", b"r1", b"not json at all"),
        ("decisions", b"x", b'{"type":"DecisionMade","schema_version":1}'),
    ]
    await produce(settings.kafka_bootstrap, kafka_prefix, b.messages[:40])
    await produce(settings.kafka_bootstrap, kafka_prefix, raw)
    await produce(settings.kafka_bootstrap, kafka_prefix, b.messages[40:])
    await project_once(settings, pg_schema)
    assert count(settings, pg_schema, "select count(*) from projection_errors") == 2

    # in this process, and split by partition over two loader processes
    for workers, mode in ((1, "bulk"), (2, "bulk, 2 loader processes")):
        target = other_schema("bulk_")
        result = await replay(settings, schema=target, workers=workers)
        assert result.mode == mode
        assert result.stats.failed == 2 and result.stats.ignored == 1
        assert result.stats.events_applied == len(b.messages)
        with connect(settings.database_url, pg_schema) as conn:
            assert compare_schemas(conn, pg_schema, target) == {}
            assert constraints(conn, pg_schema) == constraints(conn, target)
        assert snapshot(settings, pg_schema) == snapshot(settings, target)


async def test_a_parallel_replay_with_a_share_of_empty_partitions(
    kafka_prefix: str, pg_schema: str, settings_for: Any, other_schema: Any
) -> None:
    settings = settings_for(kafka_prefix, pg_schema)
    b = LogBuilder(seed=5)
    b.decider_run("only", b.config(), cases=CASES)  # one run: one partition holds it all
    await produce(settings.kafka_bootstrap, kafka_prefix, b.messages)
    await project_once(settings, pg_schema)
    target = other_schema("empty_share_")
    result = await replay(settings, schema=target, workers=3)
    assert result.mode == "bulk, 3 loader processes"
    with connect(settings.database_url, pg_schema) as conn:
        assert compare_schemas(conn, pg_schema, target) == {}


async def test_a_projector_refuses_an_unfinished_bulk_replay(
    kafka_prefix: str, settings_for: Any, other_schema: Any
) -> None:
    target = other_schema("unfinished_")
    settings = settings_for(kafka_prefix, "public")
    await asyncio.to_thread(prepare_fresh_schema, settings, target)  # marked, never loaded
    with pytest.raises(ProjectorRefused):
        await project_once(settings, target)


CRASH_SCRIPT = textwrap.dedent(
    """
    import asyncio, os
    from infra.settings import Settings
    from projections.projector import Projector

    calls = 0

    async def crash(batch):
        global calls
        calls += 1
        if calls == 3:  # rows of the third batch are written, its commit never happens
            os._exit(9)

    async def main():
        s = Settings()
        p = Projector(s, drain=True, batch_max=40, before_commit=crash)
        await p.run()

    asyncio.run(main())
    """
)


async def test_a_projector_killed_between_write_and_commit_loses_and_duplicates_nothing(
    kafka_prefix: str, pg_schema: str, settings_for: Any, other_schema: Any
) -> None:
    settings = settings_for(kafka_prefix, pg_schema)
    b = story()
    await produce(settings.kafka_bootstrap, kafka_prefix, b.messages)
    env = {
        **os.environ,
        "PROVENROUTE_TOPIC_PREFIX": kafka_prefix,
        "PROVENROUTE_DB_SCHEMA": pg_schema,
    }
    proc = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-c", CRASH_SCRIPT], env=env, timeout=60
    )
    assert proc.returncode == 9
    committed = count(settings, pg_schema, "select sum(next_offset) from projection_offsets")
    assert 0 < committed < len(b.messages)
    # Exactly the committed prefix is there: as many rows as events below the stored offsets.
    results = count(settings, pg_schema, "select count(*) from case_results")
    assert results <= committed

    assert await project_once(settings, pg_schema) == len(b.messages) - committed
    clean = other_schema("clean_")
    await project_once(settings, clean)
    with connect(settings.database_url, pg_schema) as conn:
        assert compare_schemas(conn, pg_schema, clean) == {}


class Proxy:
    """A TCP proxy to Postgres that can be taken down (connections cut, port refusing)."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.server: asyncio.Server | None = None
        self.port = 0
        self.writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)
        self.port = self.server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()
        for w in list(self.writers):
            w.transport.abort()
        self.writers.clear()
        await self.server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_r, up_w = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.transport.abort()
            return
        self.writers |= {writer, up_w}

        async def pump(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            with contextlib.suppress(Exception):
                while data := await r.read(65536):
                    w.write(data)
                    await w.drain()
            w.transport.abort()

        await asyncio.gather(pump(reader, up_w), pump(up_r, writer))


async def wait_for(predicate: Any, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not await asyncio.to_thread(predicate):
        if time.monotonic() > deadline:
            raise TimeoutError("condition not reached")
        await asyncio.sleep(0.2)


async def test_a_postgres_outage_is_survived(
    kafka_prefix: str, pg_schema: str, settings_for: Any, other_schema: Any
) -> None:
    direct = settings_for(kafka_prefix, pg_schema)
    # Started here, not in a fixture: async fixtures run on the session loop.
    port = psycopg.conninfo.conninfo_to_dict(direct.database_url).get("port") or 5432
    pg_proxy = Proxy(int(port))
    await pg_proxy.start()
    info = psycopg.conninfo.conninfo_to_dict(direct.database_url)
    info["port"] = str(pg_proxy.port)
    proxied = direct.model_copy(update={"database_url": psycopg.conninfo.make_conninfo("", **info)})
    migrate(direct.database_url, pg_schema)

    b = story()
    half = len(b.messages) // 2
    stop = asyncio.Event()
    task = asyncio.create_task(run_projector(proxied, stop=stop))
    try:
        await produce(direct.kafka_bootstrap, kafka_prefix, b.messages[:half])

        def offsets() -> int:
            return int(
                count(
                    direct,
                    pg_schema,
                    "select coalesce(sum(next_offset), 0) from projection_offsets",
                )
            )

        await wait_for(lambda: offsets() == half)
        await pg_proxy.stop()  # the database goes away mid-stream
        await produce(direct.kafka_bootstrap, kafka_prefix, b.messages[half:])
        await asyncio.sleep(2.0)
        assert offsets() == half
        await pg_proxy.start()  # ... and comes back on the same port
        await wait_for(lambda: offsets() == len(b.messages))
    finally:
        stop.set()
        stats = await asyncio.wait_for(task, 20)
        with contextlib.suppress(Exception):
            await pg_proxy.stop()
    assert stats.reconnects >= 1
    clean = other_schema("clean_")
    await project_once(direct, clean)
    with connect(direct.database_url, pg_schema) as conn:
        assert compare_schemas(conn, pg_schema, clean) == {}


async def test_replay_swap_makes_the_rebuilt_schema_live(
    kafka_prefix: str, pg_schema: str, settings_for: Any, other_schema: Any
) -> None:
    settings = settings_for(kafka_prefix, pg_schema)
    b = LogBuilder(seed=9)
    b.decider_run("s1", b.config(), cases=CASES)
    await produce(settings.kafka_bootstrap, kafka_prefix, b.messages)
    await project_once(settings, pg_schema)
    with connect(settings.database_url, pg_schema) as conn:
        conn.execute("delete from decisions")  # live and replay now differ in a visible way
        conn.execute("insert into projection_errors values ('x', 0, 0, null, 'marker', null)")

    result = await replay(settings, schema=other_schema("swap_"), swap=True)
    assert result.swapped_out is not None
    other_schema_cleanup = result.swapped_out
    try:
        assert count(settings, pg_schema, "select count(*) from projection_errors") == 0
        assert count(settings, other_schema_cleanup, "select count(*) from projection_errors") == 1
        assert await project_once(settings, pg_schema) == 0  # offsets came along
    finally:
        drop_schema(settings.database_url, other_schema_cleanup)
