"""Shaping read-model answers for the pages: run progress, published versions, table diffs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from contracts.routing_diff import TableDiff, diff_tables
from projections.read_model import ReadModel

ENDED = frozenset({"completed", "failed"})
"""Run statuses after which nothing changes any more."""


def run_progress(run: dict[str, Any] | None) -> dict[str, Any]:
    """The numbers the live progress bar shows, from a run_history row (None: not yet seen)."""
    if run is None:
        return {"status": "pending", "done": 0, "expected": None, "percent": 0}
    expected = run.get("expected_results")
    done = run.get("results_projected") or 0
    if run.get("status") in ENDED:
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
        "failure_reason": run.get("failure_reason"),
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


async def table_diff(read_model: ReadModel, a: str, b: str) -> tuple[TableDiff | None, str | None]:
    """The diff of two tables (each by version or timestamp) from the read model; or why not."""
    try:
        ta, tb = await read_model.resolve_table(a), await read_model.resolve_table(b)
    except Exception as e:
        return None, f"Could not compare the tables: {e!s}"[:300]
    if ta is None or tb is None:
        missing = a if ta is None else b
        return None, f"No routing table {missing!r}."
    return diff_tables(ta, tb), None
