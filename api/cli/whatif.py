"""`provenroute whatif`: replay a window of real decisions against another routing table.

The decisions come from the decisions topic (log order); the tables, a run's summaries and
its config snapshot from the projection. The replay itself is the pure
`contracts.whatif.replay`, which calls the decision engine `/decide` uses.
"""

from __future__ import annotations

import asyncio
import csv
import sys
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import orjson
import typer
from rich.console import Console
from rich.table import Table

from api.whatif_report import WhatIfError, build_report
from contracts.whatif import TOTAL, WhatIfReport, report_records
from infra.settings import Settings


class Format(StrEnum):
    table = "table"
    csv = "csv"
    parquet = "parquet"
    json = "json"


class AcceptanceOpt(StrEnum):
    point = "point"
    lower_bound = "lower_bound"


def parse_moment(value: str) -> datetime:
    try:
        moment = datetime.fromisoformat(value)
    except ValueError as e:
        raise typer.BadParameter(f"not an ISO-8601 timestamp: {value!r}") from e
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def whatif_cmd(
    since: Annotated[str, typer.Option(help="Replay decisions logged at or after (ISO-8601).")],
    until: Annotated[
        str | None, typer.Option(help="... and before this moment (default: now).")
    ] = None,
    table: Annotated[
        str | None,
        typer.Option(help="Candidate: a published table (version, 'latest', or a moment)."),
    ] = None,
    run: Annotated[
        str | None,
        typer.Option(help="Candidate: rebuilt from this decider run's summaries (or 'latest')."),
    ] = None,
    min_accuracy: Annotated[
        float | None,
        typer.Option(min=0.0, max=1.0, help="With --run: another accuracy threshold."),
    ] = None,
    acceptance: Annotated[
        AcceptanceOpt | None, typer.Option(help="With --run: point or lower_bound acceptance.")
    ] = None,
    switch_cost_factor: Annotated[
        float | None, typer.Option(min=1.0, help="With --run: another switch-cost factor.")
    ] = None,
    fmt: Annotated[Format, typer.Option("--format", help="table, csv, parquet or json.")] = (
        Format.table
    ),
    output: Annotated[
        Path | None, typer.Option(help="Write here instead of stdout (required for parquet).")
    ] = None,
) -> None:
    """What-if: replay logged /decide traffic through the decision engine against a table."""
    err = Console(stderr=True)
    if (table is None) == (run is None):
        raise typer.BadParameter("give exactly one of --table and --run")
    if table is not None and (
        min_accuracy is not None or acceptance is not None or switch_cost_factor is not None
    ):
        raise typer.BadParameter(
            "--min-accuracy, --acceptance and --switch-cost-factor go with --run"
        )
    if fmt is Format.parquet and output is None:
        raise typer.BadParameter("--format parquet needs --output FILE")
    start = parse_moment(since)
    end = parse_moment(until) if until is not None else None
    if end is not None and end <= start:
        raise typer.BadParameter("--until must be after --since")
    try:
        report = asyncio.run(
            build_report(
                Settings(),
                since=start,
                until=end,
                table=table,
                run=run,
                min_accuracy=min_accuracy,
                acceptance=acceptance.value if acceptance else None,  # type: ignore[arg-type]
                switch_cost_factor=switch_cost_factor,
            )
        )
    except WhatIfError as e:
        err.print(f"[red]{e}[/red]")
        raise typer.Exit(2) from None
    write_report(report, fmt, output)


def write_report(report: WhatIfReport, fmt: Format, output: Path | None) -> None:
    if fmt is Format.parquet:
        import pyarrow as pa
        import pyarrow.parquet as pq

        assert output is not None
        pq.write_table(pa.Table.from_pylist(report_records(report)), output)
        return
    if fmt is Format.json:
        text = orjson.dumps(report.model_dump(mode="json"), option=orjson.OPT_INDENT_2).decode()
    elif fmt is Format.csv:
        text = _csv(report)
    else:
        console = Console(file=output.open("w") if output else None, width=140)
        render(report, console)
        return
    if output is None:
        sys.stdout.write(text + ("" if text.endswith("\n") else "\n"))
    else:
        output.write_text(text)


def _csv(report: WhatIfReport) -> str:
    import io

    records = report_records(report)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(records[0]))
    writer.writeheader()
    writer.writerows(records)
    return buf.getvalue()


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{v:.1%}"


def render(report: WhatIfReport, console: Console) -> None:
    t = Table(
        title=f"what-if against table {report.candidate_version} "
        f"({report.decisions} decisions, {report.unreplayable} without a tier)",
    )
    for col in ("tier", "decisions", "changed"):
        t.add_column(col, justify="right" if col != "tier" else "left")
    for side in ("served", "what-if"):
        t.add_column(f"{side} spend $", justify="right")
        t.add_column(f"{side} accuracy (lb)", justify="right")
        t.add_column(f"{side} sticky", justify="right")
        t.add_column(f"{side} switches", justify="right")
    for r in report.rows:
        cells = [r.tier, str(r.decisions), str(r.changed)]
        for f in (r.actual, r.whatif):
            cells += [
                f"{f.spend_usd:.4f}",
                f"{_pct(f.expected_accuracy)} ({_pct(f.expected_accuracy_lower_bound)})",
                _pct(f.sticky_share),
                str(f.switches),
            ]
        t.add_row(*cells, style="bold" if r.tier == TOTAL else None)
    console.print(t)
    if report.changes:
        c = Table(title="decisions that change")
        for col in ("tier", "served", "what-if", "decisions"):
            c.add_column(col)
        for ch in report.changes:
            c.add_row(ch.tier, ch.served or "(null)", ch.candidate or "(null)", str(ch.decisions))
        console.print(c)
    else:
        console.print("no decision changes")
