"""Shaping read-model answers for the pages: run progress, published versions, table diffs."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from infra.settings import Settings
from projections.queries import TableDiff


def run_progress(run: dict[str, Any] | None) -> dict[str, Any]:
    """The numbers the live progress bar shows, from a run_history row (None: not yet seen)."""
    if run is None:
        return {"status": "pending", "done": 0, "expected": None, "percent": 0}
    expected = run.get("expected_results")
    done = run.get("results_projected") or 0
    completed = run.get("status") == "completed"
    if completed:
        percent = 100
    elif expected:
        percent = min(99, int(done * 100 / expected))
    else:
        percent = 0
    return {
        "status": run.get("status") or "running",
        "done": done,
        "expected": expected,
        "percent": percent,
        "graded": run.get("graded"),
        "ungraded": run.get("ungraded"),
        "outcome": run.get("outcome"),
        "models_enqueued": run.get("models_enqueued"),
        "models_carried": run.get("models_carried"),
        "jobs": run.get("jobs"),
    }


@dataclass(frozen=True)
class Version:
    version: str
    kind: str
    completed_at: str | None


def published_versions(runs: list[dict[str, Any]]) -> list[Version]:
    """Every published routing table (newest first), from the run history."""
    return [
        Version(r["table_version"], r["kind"], r.get("completed_at"))
        for r in runs
        if r.get("table_version")
    ]


async def table_diff(settings: Settings, a: str, b: str) -> tuple[TableDiff | None, str | None]:
    """The projections' own diff of two tables (by version or timestamp); or why not."""

    def go() -> tuple[TableDiff | None, str | None]:
        from projections.db import connect
        from projections.queries import diff_tables, resolve_table

        with connect(settings.database_url, settings.db_schema, app="provenroute-ui") as conn:
            ta, tb = resolve_table(conn, a), resolve_table(conn, b)
        if ta is None or tb is None:
            missing = a if ta is None else b
            return None, f"No routing table {missing!r}."
        return diff_tables(ta, tb), None

    try:
        return await asyncio.to_thread(go)
    except Exception as e:
        return None, f"Could not compare the tables: {e!s}"[:300]
