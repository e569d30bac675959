"""`provenroute usage --since TS [--user U] [--format table|csv]`: classifier cost per user."""

from __future__ import annotations

import sys
from enum import StrEnum
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from api.cli.whatif import parse_moment
from infra.settings import Settings
from projections.db import connect
from projections.usage import usage, write_csv


class UsageFormat(StrEnum):
    table = "table"
    csv = "csv"


def usage_cmd(
    since: Annotated[
        str, typer.Option("--since", help="ISO timestamp or date (UTC when no zone is given).")
    ],
    user: Annotated[str | None, typer.Option("--user", help="Only this gateway user.")] = None,
    format: Annotated[UsageFormat, typer.Option("--format", "-f")] = UsageFormat.table,
) -> None:
    """Classifier calls and their cost per gateway user and UTC day, from the projections."""
    settings = Settings()
    with connect(settings.database_url, settings.db_schema) as conn:
        rows = usage(conn, parse_moment(since), user)
    if format is UsageFormat.csv:
        write_csv(rows, sys.stdout)
        return
    grid = Table("day", "user", "decisions", "classifier calls", "unpriced", "cost USD")
    for r in rows:
        grid.add_row(
            r.day.isoformat(),
            r.user_id or "(not given)",
            str(r.decisions),
            str(r.classifier_calls),
            str(r.unpriced_calls),
            f"{r.classifier_cost_usd:.6f}",
        )
    console = Console()
    console.print(grid)
    total = sum(r.classifier_cost_usd for r in rows)
    console.print(f"total {total:.6f} USD over {sum(r.classifier_calls for r in rows)} calls")
