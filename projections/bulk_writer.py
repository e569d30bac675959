"""Bulk path of a replay into a fresh schema: the live writer's rules applied in memory
(`BulkClaims`), plain COPY into the final tables with their keys and indexes dropped, the
constraints re-created and validated at the end (`BulkLoader`).
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql

from projections.bulk_restore import Deferred, read_deferrable, restore
from projections.fold import Row
from projections.tables import TABLE as TABLE_BY_NAME
from projections.tables import TABLES
from projections.writer import KEY_GETTERS, PARENT_OF, PARENTS


class BulkUnsupported(RuntimeError):
    """The log holds something the bulk path does not reproduce exactly (an orphan row, a
    constraint the rows break): the replay falls back to the transactional projector."""


REPLAY_APP = "provenroute-replay"
"""application_name of a bulk replay's connections."""

BULK_MARKER = "projection_bulk_load"
"""Table present while a schema is being bulk-loaded (constraints off): projectors refuse it."""


Plan = tuple[Any, ...]
"""How `BulkClaims` handles one table's rows (see `BulkClaims.plans`)."""


class BulkClaims:
    """The live writer's rules, kept in memory for a replay into an empty schema.

    First occurrence of a natural key wins, children only from the event that claimed their
    parent (as `group_rows` + `write_rows` across batches), and every foreign key that is
    not such a parent link is checked against the keys claimed so far: a miss (the live
    projector would record the event in projection_errors) raises BulkUnsupported.
    """

    def __init__(self, deferred: list[Deferred]) -> None:
        self.seen: dict[str, set[Any]] = {t.name: set() for t in TABLES if not t.parent}
        self.fks: dict[str, list[tuple[Callable[[tuple[Any, ...]], Any], str]]] = {}
        for d in deferred:
            if d.kind != "f":
                continue
            spec = TABLE_BY_NAME[d.table]
            if spec.parent == d.ref_table and d.columns == spec.parent_key:
                continue  # a parent link: children are gated by their own event
            ref = TABLE_BY_NAME.get(d.ref_table or "")
            if ref is None or ref.parent is not None or d.ref_columns != ref.key:
                raise BulkUnsupported(f"foreign key {d.name} is not checkable in memory")
            getter = operator.itemgetter(*(spec.columns.index(c) for c in d.columns))
            self.fks.setdefault(d.table, []).append((getter, ref.name))

    def claim(self, events: Iterable[list[Row]]) -> dict[str, list[tuple[Any, ...]]]:
        """The rows of `events` that the live projector would insert, by table."""
        return self.claim_shaped((rows, False) for rows in events)

    def claim_shaped(
        self, events: Iterable[tuple[list[Row], bool]]
    ) -> dict[str, list[tuple[Any, ...]]]:
        """`claim` for (rows, known) pairs: `known` vouches that the rows have the common
        shape (`simple`), unchecked: the fast path's events have it by construction."""
        out: dict[str, list[tuple[Any, ...]]] = {t.name: [] for t in TABLES}
        seen = self.seen
        plans = self.plans(out)
        for rows, simple in events:
            # The common shapes first (a case result and its diagnostics, a decision): one
            # row of a root table, then only children of that row, each child key once.
            table, values = rows[0]
            key_of, keys, _parent, fks, _is_parent, dest = plans[table]
            if keys is not None and (simple or self.simple(rows, table, plans)):
                key = key_of(values)
                claimed = len(keys)
                keys.add(key)  # one hash of the key, where `in` then `add` take two
                if len(keys) == claimed:
                    continue
                for getter, ref in fks:
                    if getter(values) not in seen[ref]:
                        raise BulkUnsupported(
                            f"{table} row {key!r} has no {ref} row before it (an orphan)"
                        )
                dest.append(values)
                for child, child_values in rows[1:]:
                    plans[child][5].append(child_values)
                continue
            self._claim_event(rows, plans, seen)
        return out

    def plans(self, out: dict[str, list[tuple[Any, ...]]]) -> dict[str, Plan]:
        """One lookup per row: (key getter, seen keys | None for children, parent link,
        foreign keys to check, is a parent, destination list in `out`)."""
        return {
            t.name: (
                KEY_GETTERS[t.name],
                self.seen.get(t.name),
                PARENT_OF.get(t.name),
                tuple(self.fks.get(t.name, ())),
                t.name in PARENTS,
                out[t.name],
            )
            for t in TABLES
        }

    @staticmethod
    def simple(rows: list[Row], table: str, plans: dict[str, Plan]) -> bool:
        """Only children of the first row follow it, with distinct keys (checked cheaply)."""
        if len(rows) == 1:
            return True
        key = plans[table][0](rows[0][1])
        if len(rows) == 2:
            child, values = rows[1]
            _key_of, _keys, parent, fks, is_parent, _dest = plans[child]
            return (
                parent is not None
                and parent[0] == table
                and not fks
                and not is_parent
                and parent[1](values) == key
            )
        children: set[tuple[str, Any]] = set()
        for child, values in rows[1:]:
            key_of, _keys, parent, fks, is_parent, _dest = plans[child]
            if parent is None or parent[0] != table or fks or is_parent:
                return False
            if parent[1](values) != key:
                return False
            children.add((child, key_of(values)))
        return len(children) == len(rows) - 1

    @staticmethod
    def _claim_event(rows: list[Row], plans: dict[str, Plan], seen: dict[str, set[Any]]) -> None:
        # (table, key) of the parent rows this event claimed, and of its children
        claimed: set[tuple[str, Any]] | None = None
        for table, values in rows:
            key_of, keys, parent, fks, is_parent, dest = plans[table]
            key = key_of(values)
            if keys is not None:
                if key in keys:
                    continue
                keys.add(key)
            else:
                assert parent is not None
                if claimed is None or (parent[0], parent[1](values)) not in claimed:
                    continue
                if (table, key) in claimed:
                    continue  # a child's key extends its parent's: only this event has it
                claimed.add((table, key))
            for getter, ref in fks:
                if getter(values) not in seen[ref]:
                    raise BulkUnsupported(
                        f"{table} row {key!r} has no {ref} row before it (an orphan)"
                    )
            if is_parent:
                if claimed is None:
                    claimed = set()
                claimed.add((table, key))
            dest.append(values)


_TIMESTAMPTZ_OID = 1184


def _with_datetimes(row: tuple[Any, ...], stamps: tuple[int, ...]) -> tuple[Any, ...]:
    out = list(row)
    for i in stamps:
        value = out[i]
        if value is None:
            continue
        try:
            moment = datetime.fromisoformat(value)
        except (TypeError, ValueError) as e:
            raise BulkUnsupported(f"unreadable timestamp {value!r}") from e
        if moment.tzinfo is None:
            raise BulkUnsupported(f"timestamp without a time zone {value!r}")
        out[i] = moment
    return tuple(out)


def read_column_types(conn: psycopg.Connection, schema: str) -> dict[str, tuple[int, ...]]:
    """Type oid of every projected table's columns, in the writer's column order."""
    found = {
        (table, column): oid
        for table, column, oid in conn.execute(
            "select c.relname, a.attname, a.atttypid::int from pg_attribute a"
            " join pg_class c on c.oid = a.attrelid"
            " where c.relnamespace = to_regnamespace(%s) and c.relname = any(%s)"
            " and a.attnum > 0 and not a.attisdropped",
            (schema, [t.name for t in TABLES]),
        ).fetchall()
    }
    return {t.name: tuple(found[(t.name, c)] for c in t.columns) for t in TABLES}


class BulkLoader:
    """COPY into a fresh, empty schema with its keys, foreign keys and indexes dropped; at
    the end they are re-created from the catalog's own definitions (same names), in
    parallel on two connections, and foreign keys are validated against the loaded rows.

    The rows of the whole load go in ONE transaction (`COPY ... FREEZE` after a TRUNCATE in
    that transaction: no hint-bit rewrite when the indexes read the rows). While loading,
    the schema carries the BULK_MARKER table, which projectors refuse; an interrupted load
    leaves it behind, and the replay must start again (`--replace`). Sync connections, meant
    to run in a thread: the COPY then overlaps the caller's decoding.
    """

    def __init__(self, url: str, schema: str, *, workers: int = 2) -> None:
        self.url = url
        self.schema = schema
        self.workers = workers
        self.deferred: list[Deferred] = []
        self.copied: dict[str, int] = {t.name: 0 for t in TABLES}
        self.freeze = False
        """COPY ... FREEZE: this loader truncated the tables in its load transaction."""
        self.types: dict[str, tuple[int, ...]] = {}
        """Column type oids per table (binary COPY)."""
        self.stamps: dict[str, tuple[int, ...]] = {}
        """Indexes of each table's timestamptz columns."""
        self._conn: psycopg.Connection | None = None

    def _connect(self) -> psycopg.Connection:
        from projections.db import connect

        conn = connect(self.url, self.schema, app=REPLAY_APP, autocommit=True)
        conn.execute("set synchronous_commit = off")
        conn.execute("set maintenance_work_mem = '256MB'")
        return conn

    def open(self, *, shared: bool = False) -> BulkClaims:
        """Check the schema is fresh, drop its keys and indexes, start the load transaction.

        `shared`: other processes will load (`attach`), this loader only `finish`es.
        """
        conn = self._conn = self._connect()
        marker = conn.execute("select to_regclass(%s)", (BULK_MARKER,)).fetchone()
        if marker is None or marker[0] is None:
            raise BulkUnsupported(f"schema {self.schema} was not prepared for a bulk load")
        probe = sql.SQL(" union all ").join(
            sql.SQL("select 1 from (select 1 from {} limit 1) x").format(sql.Identifier(t))
            for t in (*(t.name for t in TABLES), "projection_offsets", "projection_errors")
        )
        if conn.execute(probe).fetchone() is not None:
            raise BulkUnsupported(f"schema {self.schema} is not empty")
        self.deferred = read_deferrable(conn, self.schema)
        self._read_types(conn)
        claims = BulkClaims(self.deferred)
        with conn.transaction():
            for kind in ("f", "p", "u", "i"):
                for d in self.deferred:
                    if d.kind == kind == "i":
                        conn.execute(sql.SQL("drop index {}").format(sql.Identifier(d.name)))
                    elif d.kind == kind:
                        conn.execute(
                            sql.SQL("alter table {} drop constraint {}").format(
                                sql.Identifier(d.table), sql.Identifier(d.name)
                            )
                        )
        if shared:
            return claims
        conn.autocommit = False
        conn.execute(
            sql.SQL("truncate {}").format(
                sql.SQL(", ").join(sql.Identifier(t.name) for t in TABLES)
            )
        )
        self.freeze = True
        return claims

    def attach(self, deferred: list[Deferred]) -> BulkClaims:
        """Load beside other loaders into a schema another loader `open`ed (`shared`)."""
        self.deferred = deferred
        claims = BulkClaims(deferred)
        self._conn = self._connect()
        self._read_types(self._conn)
        self._conn.autocommit = False
        return claims

    def _read_types(self, conn: psycopg.Connection) -> None:
        self.types = read_column_types(conn, self.schema)
        self.stamps = {
            table: tuple(i for i, oid in enumerate(types) if oid == _TIMESTAMPTZ_OID)
            for table, types in self.types.items()
        }

    def typed(self, rows: list[Row]) -> list[Row]:
        """An event's rows from the validating path (ISO strings) with datetimes, as the
        fast path folds them: one Python cannot read (or reads as naive) makes the replay
        fall back to the transactional path, where Postgres judges it as the live
        projector's would."""
        stamps = self.stamps
        return [(t, _with_datetimes(v, stamps[t]) if stamps[t] else v) for t, v in rows]

    def commit_rows(self) -> None:
        """An attached loader's end: its rows are in; the opener restores the constraints."""
        assert self._conn is not None
        self._conn.commit()

    def copy(self, grouped: dict[str, list[tuple[Any, ...]]]) -> None:
        """COPY one batch's claimed rows (inside the load transaction).

        Binary COPY: a third less work on both sides than text (no float or timestamp
        parsing in Postgres, no escaping here). Timestamps are aware datetimes (`typed`).
        """
        assert self._conn is not None
        with self._conn.cursor() as cur:
            for spec in TABLES:
                rows = grouped.get(spec.name)
                if not rows:
                    continue
                cols = sql.SQL(", ").join(map(sql.Identifier, spec.columns))
                stmt = sql.SQL("copy {} ({}) from stdin (format binary{})").format(
                    sql.Identifier(spec.name),
                    cols,
                    sql.SQL(", freeze" if self.freeze else ""),
                )
                with cur.copy(stmt) as cp:
                    cp.set_types(list(self.types[spec.name]))
                    write = cp.write_row
                    for r in rows:
                        write(r)
                self.copied[spec.name] += len(rows)

    def finish(
        self,
        offsets: list[tuple[str, int, int]],
        errors: list[tuple[str, int, int, str | None, str, str | None]],
    ) -> None:
        """Commit the rows, restore and validate the constraints, write errors and offsets,
        drop the marker. Raises (psycopg.Error) if the rows break a key or a foreign key."""
        conn = self._conn
        assert conn is not None
        if not conn.autocommit:
            conn.commit()
            conn.autocommit = True
        restore(self._connect, self.deferred, self.copied, workers=self.workers)
        with conn.transaction():
            with conn.cursor() as cur:
                if errors:
                    cur.executemany(
                        "insert into projection_errors"
                        ' (topic, partition, "offset", event_type, reason, raw_excerpt)'
                        " values (%s, %s, %s, %s, %s, %s)",
                        errors,
                    )
                if offsets:
                    cur.executemany(
                        "insert into projection_offsets (topic, partition, next_offset)"
                        " values (%s, %s, %s)",
                        offsets,
                    )
                cur.execute(sql.SQL("drop table {}").format(sql.Identifier(BULK_MARKER)))
            conn.execute("set synchronous_commit = on")  # the final commit is durable

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
