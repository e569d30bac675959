"""Read models over the projections: time travel, provenance, table diffs, history, export.

Every function takes a sync psycopg connection whose search_path is the schema to read
(`projections.db.connect`). Results are small frozen dataclasses, not rows, so the CLI,
the admin API and tests share one shape.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from datetime import datetime
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
    "live_routing_table",
    "projection_errors",
)
"""Tables and views `export` accepts."""


@dataclass(frozen=True)
class Candidate:
    tier: str
    rank: int
    model: str
    reasoning_effort: str
    accuracy: float
    accuracy_lower_bound: float
    avg_cost_usd: float
    p95_latency_ms: float | None
    graded: int
    meets_threshold: bool


@dataclass(frozen=True)
class TableAt:
    version: str
    run_id: str
    published_at: datetime
    min_accuracy: float
    switch_cost_factor: float
    acceptance: str
    candidates: tuple[Candidate, ...]

    def tier(self, tier: str) -> list[Candidate]:
        return [c for c in self.candidates if c.tier == tier]


@dataclass(frozen=True)
class Provenance:
    """Where one cell (version, tier, model) of a routing table comes from."""

    version: str
    tier: str
    model: str
    summary_run_id: str
    """The run whose model_summaries row the cell was built from (the publishing run)."""
    measured_in_run: str
    """The run whose case results produced the numbers (differs when carried)."""
    carried: bool
    accuracy: float | None
    graded: int | None
    case_results: int
    """Case results of (measured_in_run, model, tier) in the projection."""
    passed: int
    cost_usd: float | None


def _candidates(conn: psycopg.Connection, version: str) -> tuple[Candidate, ...]:
    rows = conn.execute(
        "select tier, rank, model, reasoning_effort, accuracy, accuracy_lower_bound,"
        " avg_cost_usd, p95_latency_ms, graded, meets_threshold"
        " from routing_table_candidates where version = %s"
        " order by case tier when 'low' then 0 when 'medium' then 1 else 2 end, rank",
        (version,),
    ).fetchall()
    return tuple(Candidate(*r) for r in rows)


def routing_table(conn: psycopg.Connection, version: str) -> TableAt | None:
    row = conn.execute(
        "select version, run_id, published_at, min_accuracy, switch_cost_factor, acceptance"
        " from routing_tables where version = %s",
        (version,),
    ).fetchone()
    if row is None:
        return None
    version_, run_id, published_at, min_acc, factor, acceptance = row
    return TableAt(
        version_, run_id, published_at, min_acc, factor, acceptance, _candidates(conn, version_)
    )


def routing_table_as_of(conn: psycopg.Connection, as_of: datetime | None = None) -> TableAt | None:
    """The table that was live at `as_of` (the latest published at or before it); None if none."""
    row = conn.execute(
        "select version from routing_tables"
        " where %(t)s::timestamptz is null or published_at <= %(t)s::timestamptz"
        " order by published_at desc, version desc limit 1",
        {"t": as_of},
    ).fetchone()
    return None if row is None else routing_table(conn, row[0])


def provenance(conn: psycopg.Connection, version: str, tier: str, model: str) -> Provenance:
    row = conn.execute(
        "select t.run_id, s.carried, coalesce(s.source_run_id, s.run_id), s.accuracy, s.graded"
        " from routing_tables t"
        " left join model_summaries s"
        "   on s.run_id = t.run_id and s.model = %(m)s and s.tier = %(tier)s"
        " where t.version = %(v)s",
        {"v": version, "m": model, "tier": tier},
    ).fetchone()
    if row is None:
        raise LookupError(f"no routing table {version!r}")
    run_id, carried, measured, accuracy, graded = row
    measured = measured or run_id
    counts = conn.execute(
        "select count(*), count(*) filter (where score >= 1.0), sum(cost_usd)"
        " from case_results where run_id = %s and model = %s and tier = %s",
        (measured, model, tier),
    ).fetchone()
    assert counts is not None
    return Provenance(
        version, tier, model, run_id, measured, bool(carried), accuracy, graded, *counts
    )


def case_results_of(
    conn: psycopg.Connection, run_id: str, model: str, tier: str, limit: int = 100
) -> list[dict[str, Any]]:
    cur = conn.execute(
        "select case_id, rep, score, latency_ms, cost_usd, timed_out, job_id"
        " from case_results where run_id = %s and model = %s and tier = %s"
        " order by case_id, rep limit %s",
        (run_id, model, tier, limit),
    )
    names = [d.name for d in cur.description or ()]
    return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]


# ---- diff ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Change:
    tier: str
    model: str
    kind: str
    """entered, left, rank_up, rank_down, numbers (same rank, accuracy/cost moved)."""
    before: Candidate | None
    after: Candidate | None

    def explain(self) -> str:
        def nums(c: Candidate) -> str:
            gate = "meets" if c.meets_threshold else "below"
            return f"acc {c.accuracy:.3f} ({gate} threshold), ${c.avg_cost_usd:.6f}/case"

        b, a = self.before, self.after
        if self.kind == "entered" and a is not None:
            return f"{self.model} entered {self.tier} at rank {a.rank}: {nums(a)}"
        if self.kind == "left" and b is not None:
            return f"{self.model} left {self.tier} (was rank {b.rank}: {nums(b)})"
        assert a is not None and b is not None
        if self.kind == "numbers":
            return f"{self.model} stays rank {a.rank} in {self.tier}: {nums(b)} -> {nums(a)}"
        return (
            f"{self.model} moved rank {b.rank} -> {a.rank} in {self.tier}: {nums(b)} -> {nums(a)}"
        )


@dataclass(frozen=True)
class TableDiff:
    a: TableAt
    b: TableAt
    changes: tuple[Change, ...]
    settings: tuple[str, ...] = field(default=())
    """Changed table-wide settings (minAccuracy, switchCostFactor, acceptance)."""


def diff_tables(a: TableAt, b: TableAt) -> TableDiff:
    """What changed from table `a` to table `b`, tier by tier."""
    changes: list[Change] = []
    for tier in ("low", "medium", "high"):
        before = {c.model: c for c in a.tier(tier)}
        after = {c.model: c for c in b.tier(tier)}
        for model in sorted(before.keys() | after.keys()):
            x, y = before.get(model), after.get(model)
            if x is None:
                changes.append(Change(tier, model, "entered", None, y))
            elif y is None:
                changes.append(Change(tier, model, "left", x, None))
            elif x.rank != y.rank:
                kind = "rank_up" if y.rank < x.rank else "rank_down"
                changes.append(Change(tier, model, kind, x, y))
            elif (x.accuracy, x.avg_cost_usd, x.meets_threshold) != (
                y.accuracy,
                y.avg_cost_usd,
                y.meets_threshold,
            ):
                changes.append(Change(tier, model, "numbers", x, y))
    settings = [
        f"{name}: {va} -> {vb}"
        for name, va, vb in (
            ("minAccuracy", a.min_accuracy, b.min_accuracy),
            ("switchCostFactor", a.switch_cost_factor, b.switch_cost_factor),
            ("acceptance", a.acceptance, b.acceptance),
        )
        if va != vb
    ]
    return TableDiff(a, b, tuple(changes), tuple(settings))


def resolve_table(conn: psycopg.Connection, ref: str) -> TableAt | None:
    """A table by version (run id), or the one live at `ref` when it parses as a timestamp."""
    found = routing_table(conn, ref)
    if found is not None:
        return found
    try:
        moment = datetime.fromisoformat(ref)
    except ValueError:
        return None
    return routing_table_as_of(conn, moment)


# ---- history, export, comparison ---------------------------------------------------------


def run_history(conn: psycopg.Connection, limit: int = 50) -> list[dict[str, Any]]:
    cur = conn.execute("select * from run_history order by started_at desc limit %s", (limit,))
    names = [d.name for d in cur.description or ()]
    return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]


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
