"""Writes a batch of folded rows: COPY into per-connection temp tables, then one
`INSERT ... SELECT ... ON CONFLICT DO NOTHING` per table, parents before children.

The caller owns the transaction (rows and offsets commit together).
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

_PARENTS = frozenset(t.parent for t in TABLES if t.parent)
RETURNING_TABLES = _PARENTS | {"routing_tables", "classifier_winners", "classifier_overrides"}
"""Tables whose freshly inserted keys the writer reports (children gating, NOTIFY)."""


def _tmp(name: str) -> str:
    return f"tmp_{name}"


def group_rows(rows: Iterable[Row]) -> dict[str, list[tuple[Any, ...]]]:
    """Rows by table, deduplicated by natural key (first occurrence wins)."""
    seen: dict[str, dict[Any, tuple[Any, ...]]] = {}
    getters = _KEY_GETTERS
    for table, values in rows:
        by_key = seen.get(table)
        if by_key is None:
            by_key = seen[table] = {}
        key = getters[table](values)
        if key not in by_key:
            by_key[key] = values
    return {t: list(v.values()) for t, v in seen.items()}


_KEY_GETTERS: dict[str, Callable[[tuple[Any, ...]], Any]] = {
    t.name: operator.itemgetter(*t.key_index)  # type: ignore[attr-defined]
    for t in TABLES
}


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
