"""Analyst exports of the projections (CSV, Parquet) and a row-for-row schema comparison
(replay's verification). Reads go through `projections.read_model`; these dump whole tables.

Every function takes a sync psycopg connection (`projections.db.connect`).
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from projections.tables import BOOKKEEPING_TABLES, PROJECTED_TABLES

EXPORTABLE = (
    *PROJECTED_TABLES,
    "run_history",
    "model_accuracy_by_tier",
    "decision_mix",
    "usage_by_user_day",
    "live_routing_table",
    "projection_errors",
)
"""Tables and views `export` accepts."""


def export_csv(conn: psycopg.Connection, table: str, out: io.TextIOBase | Any) -> int:
    """Write `table` (or view) as CSV with a header; returns the rows written."""
    if table not in EXPORTABLE:
        raise ValueError(f"cannot export {table!r}; choose one of {', '.join(EXPORTABLE)}")
    cur = conn.execute(sql.SQL("select * from {}").format(sql.Identifier(table)))
    writer = csv.writer(out)
    writer.writerow([d.name for d in cur.description or ()])
    n = 0
    for row in cur:
        writer.writerow(["" if v is None else v for v in row])
        n += 1
    return n


def export_parquet(conn: psycopg.Connection, table: str, path: Path) -> int:
    """Write `table` (or view) as Parquet (needs pyarrow); returns the rows written."""
    if table not in EXPORTABLE:
        raise ValueError(f"cannot export {table!r}; choose one of {', '.join(EXPORTABLE)}")
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError as e:  # optional dependency
        raise RuntimeError("parquet export needs pyarrow (pip install pyarrow)") from e
    cur = conn.execute(sql.SQL("select * from {}").format(sql.Identifier(table)))
    names = [d.name for d in cur.description or ()]
    rows = cur.fetchall()
    columns = {n: [r[i] for r in rows] for i, n in enumerate(names)}
    pq.write_table(pa.table(columns), path)
    return len(rows)


def compare_schemas(
    conn: psycopg.Connection, a: str, b: str, tables: tuple[str, ...] = PROJECTED_TABLES
) -> dict[str, tuple[int, int]]:
    """Per table, (rows only in a, rows only in b) — multiset difference; empty when equal."""
    out: dict[str, tuple[int, int]] = {}
    for t in (*tables, *BOOKKEEPING_TABLES):  # same log, same offsets and same errors
        qa = sql.Identifier(a, t)
        qb = sql.Identifier(b, t)
        only_a = conn.execute(
            sql.SQL("select count(*) from (select * from {} except all select * from {}) x").format(
                qa, qb
            )
        ).fetchone()
        only_b = conn.execute(
            sql.SQL("select count(*) from (select * from {} except all select * from {}) x").format(
                qb, qa
            )
        ).fetchone()
        assert only_a is not None and only_b is not None
        if only_a[0] or only_b[0]:
            out[t] = (only_a[0], only_b[0])
    return out
