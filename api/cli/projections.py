"""`provenroute project | replay | routing-table show/diff | export`: the projections' CLI.

Register with `register(app)` (adds the three commands and the `routing-table` group).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from contracts.routing_diff import diff_tables
from contracts.routing_table import RoutingTable
from contracts.taxonomy import TIERS
from infra.settings import Settings
from projections.db import connect
from projections.export import EXPORTABLE, compare_schemas, export_csv, export_parquet
from projections.projector import ProjectorStats, run_projector
from projections.read_model import PostgresReadModel, open_read_model
from projections.replay import ReplayError, replay

routing_table_app = typer.Typer(
    help="The published routing tables: time travel and diffs.", no_args_is_help=True
)


def _parse_ts(value: str) -> datetime:
    try:
        moment = datetime.fromisoformat(value)
    except ValueError as e:
        raise typer.BadParameter(f"not an ISO-8601 timestamp: {value!r}") from e
    if moment.tzinfo is None:
        from datetime import UTC

        moment = moment.replace(tzinfo=UTC)
    return moment


def project_cmd(
    schema: Annotated[
        str | None, typer.Option(help="Schema (default: settings.db_schema).")
    ] = None,
) -> None:
    """Run the projector in the foreground (events + decisions -> PostgreSQL) until Ctrl-C.

    Start several for a hot standby: one is active, the others take over when it dies.
    """
    settings = Settings()
    console = Console(stderr=True)
    # "standing by" / "active" are log lines: show them.
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")

    async def main() -> ProjectorStats:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, stop.set)
        console.print(
            f"projecting {settings.topic('events')} and {settings.topic('decisions')} "
            f"into schema {schema or settings.db_schema} (Ctrl-C stops)"
        )
        return await run_projector(settings, stop=stop, schema=schema)

    stats = asyncio.run(main())
    console.print(
        f"stopped: {stats.events_applied} events applied, {stats.ignored} ignored, "
        f"{stats.failed} failed, {stats.reconnects} reconnects"
    )


def replay_cmd(
    schema: Annotated[
        str | None, typer.Option(help="Target schema (default: <live>_replay_<timestamp>).")
    ] = None,
    until: Annotated[
        str | None, typer.Option(help="Stop at the last event at or before this ISO timestamp.")
    ] = None,
    swap: Annotated[bool, typer.Option(help="Swap the rebuilt schema in as the live one.")] = False,
    replace: Annotated[
        bool, typer.Option(help="Drop the target schema first if it exists.")
    ] = False,
    verify: Annotated[
        bool, typer.Option(help="Compare the rebuilt schema with the live one, row for row.")
    ] = False,
) -> None:
    """Rebuild every projection from offset 0 into a fresh schema."""
    settings = Settings()
    console = Console(stderr=True)
    if until is not None:
        _parse_ts(until)
    with Progress(
        TextColumn("[bold]replay"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]:>10} ev/s"),
        TimeElapsedColumn(),
        console=console,
    ) as progress:
        task = progress.add_task("replay", total=None, rate="")

        def on_progress(stats: ProjectorStats) -> None:
            done = stats.events_applied + stats.ignored + stats.failed
            progress.update(
                task, completed=done, total=stats.to_drain, rate=f"{stats.events_per_s:,.0f}"
            )

        try:
            result = asyncio.run(
                replay(
                    settings,
                    schema=schema,
                    until=until,
                    swap=swap,
                    replace=replace,
                    on_progress=on_progress,
                )
            )
        except ReplayError as e:
            console.print(f"[red]{e}[/red]")
            raise typer.Exit(2) from None
    s = result.stats
    console.print(
        f"replayed {s.events_applied:,} events ({s.ignored} ignored, {s.failed} failed) "
        f"into [bold]{result.schema}[/bold] in {s.elapsed_s:.1f}s: {s.events_per_s:,.0f} events/s"
        f" ({result.mode})"
    )
    if result.swapped_out:
        console.print(f"swapped in; the previous live schema is now {result.swapped_out}")
    if verify and not swap:
        with connect(settings.database_url, settings.db_schema) as conn:
            diffs = compare_schemas(conn, settings.db_schema, result.schema)
        if diffs:
            for t, (a, b) in diffs.items():
                console.print(f"[red]{t}: {a} rows only in live, {b} only in {result.schema}")
            raise typer.Exit(1)
        console.print(f"{result.schema} equals {settings.db_schema} row for row")


def _read_model(settings: Settings) -> contextlib.AbstractAsyncContextManager[PostgresReadModel]:
    return open_read_model(settings.database_url, settings.db_schema, app="provenroute-cli")


async def _print_table(console: Console, t: RoutingTable, read: PostgresReadModel) -> None:
    console.print(
        f"routing table [bold]{t.version}[/bold] published {t.published_at} "
        f"(minAccuracy {t.minAccuracy}, switchCostFactor {t.switchCostFactor}, "
        f"{t.acceptance})"
    )
    grid = Table(
        "tier",
        "#",
        "model",
        "effort",
        "harness",
        "accuracy",
        "$/case",
        "p95 ms",
        "graded",
        "provenance",
    )
    for tier in TIERS:
        for rank, c in enumerate(t.tiers.get(tier, ()), start=1):
            p = await read.provenance(t.version, tier, c.model)
            source = (
                f"run {p.summary_run_id} · summary {p.model}/{p.tier}"
                + (f" carried from {p.measured_in_run}" if p.carried else "")
                + f" · {p.case_results} case results in {p.measured_in_run}"
            )
            grid.add_row(
                tier,
                str(rank),
                c.model,
                c.reasoningEffort,
                c.harness,
                f"{c.accuracy:.3f}" + ("" if c.meetsThreshold else " (below)"),
                f"{c.avgCostUsd:.6f}",
                "-" if c.p95LatencyMs is None else f"{c.p95LatencyMs:.0f}",
                str(c.graded),
                source,
            )
    console.print(grid)


@routing_table_app.command("show")
def show_cmd(
    as_of: Annotated[
        str | None, typer.Option("--as-of", help="ISO timestamp: the table live at that moment.")
    ] = None,
) -> None:
    """Show the live routing table (or the one live at --as-of), with each cell's provenance."""
    settings = Settings()
    console = Console()
    moment = _parse_ts(as_of) if as_of else None

    async def go() -> bool:
        async with _read_model(settings) as read:
            t = await read.routing_table_as_of(moment)
            if t is not None:
                await _print_table(console, t, read)
            return t is not None

    if not asyncio.run(go()):
        console.print("no routing table was published" + (f" by {as_of}" if as_of else ""))
        raise typer.Exit(1)


@routing_table_app.command("diff")
def diff_cmd(
    a: Annotated[str, typer.Argument(help="Version (run id) or ISO timestamp.")],
    b: Annotated[str, typer.Argument(help="Version (run id) or ISO timestamp.")],
) -> None:
    """Explain what changed between two published tables."""
    settings = Settings()
    console = Console()

    async def go() -> tuple[RoutingTable | None, RoutingTable | None]:
        async with _read_model(settings) as read:
            return await read.resolve_table(a), await read.resolve_table(b)

    ta, tb = asyncio.run(go())
    for ref, t in ((a, ta), (b, tb)):
        if t is None:
            console.print(f"[red]no routing table for {ref!r}")
            raise typer.Exit(1)
    assert ta is not None and tb is not None
    d = diff_tables(ta, tb)
    console.print(f"{ta.version} ({ta.published_at}) -> {tb.version} ({tb.published_at})")
    for line in d.settings:
        console.print(f"  settings: {line}")
    if not d.changes:
        console.print("  no candidate changed")
    for c in d.changes:
        console.print(f"  [{c.kind}] {c.explain()}", markup=False)


class ExportFormat(StrEnum):
    csv = "csv"
    parquet = "parquet"


def export_cmd(
    table: Annotated[str, typer.Argument(help=f"One of: {', '.join(EXPORTABLE)}.")],
    format: Annotated[ExportFormat, typer.Option("--format", "-f")] = ExportFormat.csv,
    output: Annotated[
        Path | None, typer.Option("-o", "--output", help="File (CSV: default stdout).")
    ] = None,
) -> None:
    """Export a projection table or analyst view as CSV or Parquet."""
    settings = Settings()
    console = Console(stderr=True)
    try:
        with connect(settings.database_url, settings.db_schema) as conn:
            if format is ExportFormat.parquet:
                path = output or Path(f"{table}.parquet")
                n = export_parquet(conn, table, path)
                console.print(f"wrote {n} rows to {path}")
            elif output is None:
                export_csv(conn, table, sys.stdout)
            else:
                with output.open("w", newline="") as f:
                    n = export_csv(conn, table, f)
                console.print(f"wrote {n} rows to {output}")
    except (ValueError, RuntimeError) as e:
        console.print(f"[red]{e}")
        raise typer.Exit(2) from None


def register(app: typer.Typer) -> None:
    """Add `project`, `replay`, `routing-table` and `export` to the top-level CLI."""
    app.command("project")(project_cmd)
    app.command("replay")(replay_cmd)
    app.add_typer(routing_table_app, name="routing-table")
    app.command("export")(export_cmd)
