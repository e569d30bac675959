"""`provenroute worker | config set/show | run start/show`: the benchmark pipeline's CLI.

Commands are posted to the command topic; answers are read back from the event log by the
command's id (its events' correlation id).
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer
import yaml
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from contracts.command_decider import run_id_for
from contracts.commands import SaveBenchmarkConfig, StartRun
from contracts.config import BenchmarkConfig, RunKind
from contracts.envelope import EventBase
from contracts.events import (
    BenchmarkConfigSaved,
    CaseGraded,
    CaseJobDeadLettered,
    CaseJobsFannedOut,
    ClassifierWinnerPublished,
    CommandAccepted,
    CommandRejected,
    ModelSummarized,
    RoutingTablePublished,
    RoutingTablePublishSkipped,
    RunCompleted,
    RunStarted,
)
from contracts.results import ModelSummary
from contracts.routing_table import ClassifierWinner, RoutingTable
from infra.clock import utc_now
from infra.settings import Settings
from projections.read_model import open_read_model
from streams.event_log import BrokerUnavailable, EventReader, new_command_id, post_command

console = Console(width=None if sys.stdout.isatty() else 140)
config_app = typer.Typer(
    help="The benchmark config (saved through the command topic).", no_args_is_help=True
)
run_app = typer.Typer(help="Benchmark runs.", no_args_is_help=True)


def worker(loglevel: str = typer.Option("info", help="Log level.")) -> None:
    """Run the Faust worker: commands, case jobs, aggregation and publishing."""
    from streams.app import run_worker
    from streams.bootstrap import build_worker, prepare_host

    settings = Settings()
    prepare_host(settings)
    run_worker(build_worker(settings), loglevel=loglevel)


# ---------------------------------------------------------------------------- config
def load_config_file(path: Path) -> BenchmarkConfig:
    try:
        data: Any = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as e:
        raise typer.BadParameter(f"cannot read {path}: {e}") from e
    try:
        return BenchmarkConfig.model_validate(data)
    except ValidationError as e:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'config'}: {err['msg']}"
            for err in e.errors()
        )
        raise typer.BadParameter(f"invalid config in {path}: {problems}") from e


async def await_outcome(
    reader: EventReader,
    command_id: str,
    timeout_s: float,
    seen: Callable[[EventBase], None] | None = None,
) -> EventBase:
    """The command's answer. The worker sends it after the events it answers for (a run's
    RunStarted, a saved config), so those pass by first: `seen` gets each of them."""
    async for ev in reader.follow(timeout_s):
        if ev.correlation_id == command_id and isinstance(ev, CommandAccepted | CommandRejected):
            return ev
        if seen is not None:
            seen(ev)
    raise TimeoutError  # pragma: no cover - follow raises first


@config_app.command("set")
def config_set(
    file: Path = typer.Option(..., "-f", "--file", help="YAML or JSON BenchmarkConfig."),
    timeout: float = typer.Option(60.0, help="Seconds to wait for the worker's answer."),
) -> None:
    """Validate FILE, post SaveBenchmarkConfig and wait for the worker to accept it."""
    config = load_config_file(file)
    settings = Settings()
    command = SaveBenchmarkConfig(command_id=new_command_id(), issued_at=utc_now(), config=config)

    async def go() -> EventBase:
        async with EventReader(settings, from_end=True) as reader:
            await post_command(settings, command)
            return await await_outcome(reader, command.command_id, timeout)

    outcome = _run_or_timeout(go(), command.command_id)
    if isinstance(outcome, CommandRejected):
        console.print(f"[red]rejected[/]: {outcome.reason}")
        raise typer.Exit(1)
    console.print(f"[green]config saved[/] (command {command.command_id})")


@config_app.command("show")
def config_show() -> None:
    """Print the live config (the latest BenchmarkConfigSaved on the log)."""
    settings = Settings()

    async def go() -> BenchmarkConfig | None:
        latest = None
        async with EventReader(settings) as reader:
            async for ev in reader.history():
                if isinstance(ev, BenchmarkConfigSaved):
                    latest = ev.config
        return latest

    config = _run_against_kafka(go())
    if config is None:
        console.print("no config saved yet: runs are refused until one is (provenroute config set)")
        raise typer.Exit(1)
    typer.echo(yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False))


# ---------------------------------------------------------------------------- runs
class RunView:
    """What the CLI shows of a run, folded from its events."""

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        self.started: RunStarted | None = None
        self.expected: int | None = None
        self.graded: set[tuple[str, str, int]] = set()
        self.dead = 0
        self.completed: RunCompleted | None = None
        self.summaries: list[ModelSummarized] = []
        self.table: RoutingTable | None = None
        self.skipped: RoutingTablePublishSkipped | None = None
        self.winner: ClassifierWinner | None = None

    def apply(self, ev: EventBase) -> None:
        if getattr(ev, "run_id", None) != self.run_id:
            return
        if isinstance(ev, RunStarted):
            self.started = ev
        elif isinstance(ev, CaseJobsFannedOut):
            self.expected = ev.expected_results
        elif isinstance(ev, CaseGraded):
            self.graded.add((ev.model, ev.case_id, ev.rep))
        elif isinstance(ev, CaseJobDeadLettered):
            self.dead += len(ev.case_ids)
        elif isinstance(ev, ModelSummarized):
            self.summaries.append(ev)
        elif isinstance(ev, RunCompleted):
            self.completed = ev
        elif isinstance(ev, RoutingTablePublished):
            self.table = ev.table
        elif isinstance(ev, RoutingTablePublishSkipped):
            self.skipped = ev
        elif isinstance(ev, ClassifierWinnerPublished):
            self.winner = ev.winner

    @property
    def concluded(self) -> bool:
        # RunCompleted comes after the run's publish events.
        return self.completed is not None and self.started is not None


def _run_against_kafka(coro: Any) -> Any:
    try:
        return asyncio.run(coro)
    except BrokerUnavailable as e:
        console.print(f"[red]{e}[/]: is Kafka running (`make services-up`)?")
        raise typer.Exit(2) from e


def _run_or_timeout(coro: Any, command_id: str) -> Any:
    try:
        return _run_against_kafka(coro)
    except TimeoutError as e:
        console.print(
            f"[red]no answer from the worker for command {command_id}[/]: is "
            "`provenroute worker` running?"
        )
        raise typer.Exit(2) from e


@run_app.command("start")
def run_start(
    kind: RunKind = typer.Option(..., "--kind", help="classifier or decider."),
    force: bool = typer.Option(False, "--force", help="Re-run every model (no carrying)."),
    wait: bool = typer.Option(False, "--wait", help="Follow the run with a progress bar."),
    timeout: float = typer.Option(3600.0, help="Seconds to wait with --wait."),
) -> None:
    """Post StartRun; with --wait, show progress until the run is published."""
    settings = Settings()
    command = StartRun(command_id=new_command_id(), issued_at=utc_now(), kind=kind, force=force)
    run_id = run_id_for(command.command_id)

    async def go() -> RunView | CommandRejected:
        async with EventReader(settings, from_end=True) as reader:
            await post_command(settings, command)
            view = RunView(run_id)
            outcome = await await_outcome(reader, command.command_id, 60.0, seen=view.apply)
            if isinstance(outcome, CommandRejected):
                return outcome
            console.print(f"run [bold]{run_id}[/] started ({kind}{', forced' if force else ''})")
            if not wait:
                return view
            with Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=console,
            ) as progress:
                task = progress.add_task(f"{kind} run", total=None)
                async for ev in reader.follow(timeout):
                    view.apply(ev)
                    progress.update(
                        task, total=view.expected, completed=len(view.graded) + view.dead
                    )
                    if view.concluded:
                        break
            return view

    result = _run_or_timeout(go(), command.command_id)
    if isinstance(result, CommandRejected):
        console.print(f"[red]rejected[/]: {result.reason}")
        raise typer.Exit(1)
    if wait:
        print_run(result)
        if result.completed is not None and result.completed.status == "failed":
            raise typer.Exit(1)


@run_app.command("show")
def run_show(run_id: str) -> None:
    """Print a run's progress, summaries and what it published, read from the PostgreSQL
    projections: the projector (`provenroute project`) must be running for them to be
    current."""
    settings = Settings()

    async def go() -> tuple[dict[str, Any] | None, RoutingTable | None, ClassifierWinner | None]:
        async with open_read_model(
            settings.database_url, settings.db_schema, app="provenroute-cli"
        ) as read:
            run = await read.run(run_id)
            if run is None:
                return None, None, None
            version = run.get("table_version")
            table = await read.routing_table(version) if version else None
            return run, table, await read.classifier_winner_of(run_id)

    run, table, winner = _run_against_kafka(go())
    if run is None:
        console.print(
            f"[red]unknown run {run_id}[/] in the projections (is `provenroute project` running?)"
        )
        raise typer.Exit(1)
    ungraded = run.get("ungraded") or 0
    expected = run.get("expected_results")
    console.print(
        f"run {run_id}: {run['kind']}{', forced' if run.get('force') else ''}, {run['status']}, "
        f"{run.get('results_projected') or 0}/{expected if expected is not None else '?'} results"
        + (f", {ungraded} ungraded (dead-lettered)" if ungraded else "")
        + f"; started {run['started_at']}"
        + (f", completed {run['completed_at']}" if run.get("completed_at") else "")
        + f"; models {run.get('models_enqueued') or 0} run, {run.get('models_carried') or 0}"
        " carried"
        + (f"; spend ${run['spend_usd']:.6f}" if run.get("spend_usd") is not None else "")
    )
    if run.get("failure_reason"):
        console.print(f"[red]failed[/]: {escape(run['failure_reason'])}")
    print_outcome(
        [ModelSummary.model_validate(s) for s in run["summaries"]],
        table,
        run.get("skip_reason"),
        winner,
    )


def print_run(view: RunView) -> None:
    """A run followed on the log (`run start --wait`)."""
    started = view.started
    state = view.completed.status if view.completed else "running"
    done = len(view.graded) + view.dead
    console.print(
        f"run {view.run_id}: {started.kind if started else '?'}, {state}, "
        f"{done}/{view.expected if view.expected is not None else '?'} results"
        + (f", {view.dead} ungraded (dead-lettered)" if view.dead else "")
    )
    if view.completed is not None and view.completed.failure_reason:
        console.print(f"[red]failed[/]: {escape(view.completed.failure_reason)}")
    print_outcome(
        [ev.summary for ev in view.summaries],
        view.table,
        view.skipped.reason if view.skipped else None,
        view.winner,
    )


def print_outcome(
    summaries: list[ModelSummary],
    table: RoutingTable | None,
    skip_reason: str | None,
    winner: ClassifierWinner | None,
) -> None:
    """A run's summaries and what it published (a routing table, a skip, a winner)."""
    if summaries:
        t = Table(title="model summaries")
        for col in (
            "model",
            "tier",
            "accuracy",
            "lower bound",
            "graded",
            "avg cost $",
            "p95 ms",
            "timeouts (share)",
            "carried",
            "harness",
        ):
            t.add_column(col)
        for s in summaries:
            t.add_row(
                s.model,
                s.tier,
                f"{s.accuracy:.3f}",
                f"{s.accuracy_lower_bound:.3f}",
                str(s.graded),
                "-" if s.avg_cost_usd is None else f"{s.avg_cost_usd:.6f}",
                "-" if s.p95_latency_ms is None else f"{s.p95_latency_ms:.0f}",
                f"{s.timeouts} ({s.timeouts / s.graded:.0%})" if s.graded else str(s.timeouts),
                "yes" if s.carried else "",
                s.harness or "",
            )
        console.print(t)
    if table is not None:
        print_routing_table(table)
    if skip_reason is not None:
        console.print(f"[yellow]publish skipped[/]: {skip_reason}")
    if winner is not None:
        w = winner
        console.print(
            f"classifier winner: [bold]{w.model}[/] accuracy {w.accuracy:.3f}, "
            f"avg cost ${_num(w.avgCostUsd, '.6f')}, p95 {_num(w.p95LatencyMs, '.0f')} ms "
            f"({w.reason})"
        )


def _num(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def print_routing_table(table: RoutingTable) -> None:
    t = Table(
        title=f"routing table {table.version} (minAccuracy {table.minAccuracy}, "
        f"{table.acceptance}, switchCostFactor {table.switchCostFactor})"
    )
    for col in (
        "tier",
        "rank",
        "model",
        "effort",
        "accuracy",
        "lower bound",
        "avg cost $",
        "meets",
        "harness",
    ):
        t.add_column(col)
    for tier in ("low", "medium", "high"):
        for i, c in enumerate(table.tiers[tier], 1):  # type: ignore[index]
            t.add_row(
                tier if i == 1 else "",
                str(i),
                c.model,
                c.reasoningEffort,
                f"{c.accuracy:.3f}",
                f"{c.accuracyLowerBound:.3f}",
                f"{c.avgCostUsd:.6f}",
                "yes" if c.meetsThreshold else "no",
                c.harness,
            )
    console.print(t)
