"""Per-user usage: classifier calls and their cost per gateway user and UTC day.

Reads the `usage_by_user_day_since` function of the projections (migration 0005), which
the `usage_by_user_day` view also shows whole. A query module of its own beside the read
model: billing reads, not routing state.
"""

from __future__ import annotations

import csv
from dataclasses import astuple, dataclass, fields
from datetime import date, datetime
from typing import Any, TextIO

import psycopg


@dataclass(frozen=True)
class UsageRow:
    day: date
    """UTC day of the decisions."""
    user_id: str | None
    """The gateway's user; None when the gateway did not name one."""
    decisions: int
    classifier_calls: int
    """Attempted classifier calls (answered, fell back, timed out or failed), billable."""
    unpriced_calls: int
    """Attempted calls whose cost is unknown (abandoned at the deadline, not reported)."""
    classifier_cost_usd: float
    """Sum of the known classifier costs."""


COLUMNS = tuple(f.name for f in fields(UsageRow))


def usage(conn: psycopg.Connection, since: datetime, user: str | None = None) -> list[UsageRow]:
    """Usage per (day, user) of decisions at or after `since`, for `user` or everyone."""
    rows = conn.execute("select * from usage_by_user_day_since(%s, %s)", (since, user)).fetchall()
    return [UsageRow(*r) for r in rows]


def write_csv(rows: list[UsageRow], out: TextIO | Any) -> None:
    writer = csv.writer(out)
    writer.writerow(COLUMNS)
    for r in rows:
        writer.writerow(["" if v is None else v for v in astuple(r)])
