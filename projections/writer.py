"""Writes folded rows.

Live path (`write_rows`): COPY into per-connection temp tables, then one `INSERT ... SELECT
... ON CONFLICT DO NOTHING` per table, parents before children; the caller owns the
transaction (rows and offsets commit together).

The bulk path (replays into a fresh schema) applies the same rules in memory:
`projections.bulk_writer`.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterable
from typing import Any

import psycopg
from psycopg import sql

from projections.fold import Row
from projections.tables import TABLES, TableSpec

Key = tuple[Any, ...]

PARENTS = frozenset(t.parent for t in TABLES if t.parent)
RETURNING_TABLES = PARENTS | {"routing_tables", "classifier_winners", "classifier_overrides"}
"""Tables whose freshly inserted keys the writer reports (children gating, NOTIFY)."""


def _tmp(name: str) -> str:
    return f"tmp_{name}"


def group_rows(events: Iterable[list[Row]]) -> dict[str, list[tuple[Any, ...]]]:
    """The rows of `events` (each event's folded rows, in log order) by table.

    Deduplicated by natural key, first occurrence wins; a child row is kept only when its
    parent row is kept from the SAME event, so a re-delivered fact with other details never
    grafts its children onto the first version (in a batch or across batches alike).
    """
    out: dict[str, dict[Any, tuple[Any, ...]]] = {}
    keys = KEY_GETTERS
    for rows in events:
        claimed: dict[str, set[Any]] | None = None
        for table, values in rows:
            parent = PARENT_OF.get(table)
            if parent is not None:
                name, parent_key = parent
                if claimed is None or parent_key(values) not in claimed.get(name, ()):
                    continue
            by_key = out.get(table)
            if by_key is None:
                by_key = out[table] = {}
            key = keys[table](values)
            if key in by_key:
                continue
            by_key[key] = values
            if table in PARENTS:
                if claimed is None:
                    claimed = {}
                claimed.setdefault(table, set()).add(key)
    return {t: list(v.values()) for t, v in out.items()}


KEY_GETTERS: dict[str, Callable[[tuple[Any, ...]], Any]] = {
    t.name: operator.itemgetter(*t.key_index)  # type: ignore[attr-defined]
    for t in TABLES
}
"""Natural key of a row: a scalar for one-column keys, else a tuple (itemgetter's shapes)."""

PARENT_OF: dict[str, tuple[str, Callable[[tuple[Any, ...]], Any]]] = {
    t.name: (t.parent, operator.itemgetter(*(t.columns.index(c) for c in t.parent_key)))
    for t in TABLES
    if t.parent
}
"""Child table -> (parent table, getter of the parent's key in the parent's key shape)."""


async def setup_temp_tables(conn: psycopg.AsyncConnection) -> None:
    """Create the staging temp tables of this connection (once per connection)."""
    async with conn.transaction():
        for spec in TABLES:
            await conn.execute(
                sql.SQL(
                    "create temp table if not exists {} (like {} including defaults) "
                    "on commit delete rows"
                ).format(sql.Identifier(_tmp(spec.name)), sql.Identifier(spec.name))
            )


def _parent_index(spec: TableSpec) -> list[int]:
    return [spec.columns.index(c) for c in spec.parent_key]


async def write_rows(
    conn: psycopg.AsyncConnection,
    grouped: dict[str, list[tuple[Any, ...]]],
    *,
    clear_staging: bool = False,
) -> dict[str, set[Key]]:
    """Insert `grouped` (from `group_rows`); returns the keys inserted into RETURNING_TABLES.

    Staging tables empty themselves at commit; `clear_staging` empties them after each use
    too, for callers that write several times in one transaction.
    """
    inserted: dict[str, set[Key]] = {}
    async with conn.cursor() as cur:
        for spec in TABLES:
            rows = grouped.get(spec.name)
            if not rows:
                continue
            if spec.parent is not None:
                fresh = inserted.get(spec.parent, set())
                idx = _parent_index(spec)
                rows = [r for r in rows if tuple(r[i] for i in idx) in fresh]
                if not rows:
                    continue
            cols = sql.SQL(", ").join(map(sql.Identifier, spec.columns))
            tmp = sql.Identifier(_tmp(spec.name))
            async with cur.copy(sql.SQL("copy {} ({}) from stdin").format(tmp, cols)) as copy:
                for r in rows:
                    await copy.write_row(r)
            insert = sql.SQL("insert into {} ({}) select {} from {} on conflict do nothing").format(
                sql.Identifier(spec.name), cols, cols, tmp
            )
            if spec.name in RETURNING_TABLES:
                key_cols = sql.SQL(", ").join(map(sql.Identifier, spec.key))
                await cur.execute(insert + sql.SQL(" returning ") + key_cols)
                inserted[spec.name] = {tuple(k) for k in await cur.fetchall()}
            else:
                await cur.execute(insert)
            if clear_staging:
                await cur.execute(sql.SQL("delete from {}").format(tmp))
    return inserted
