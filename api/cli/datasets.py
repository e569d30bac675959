"""`provenroute datasets`: check the dataset quotas, verify golden answers in the container."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from contracts.cases import dataset_hash
from datasets.loader import DatasetError, load_datasets, load_decider_cases
from datasets.validate import (
    CLASSIFIER_PER_PAIR,
    DECIDER_MIN_PER_PAIR,
    DECIDER_MIN_TASK_TYPES_PER_TIER,
    QuotaReport,
    quota_report,
)

if TYPE_CHECKING:
    from datasets.verify import CaseVerdict, Sandbox, SandboxFactory

T = TypeVar("T")

app = typer.Typer(
    help="Check the benchmark datasets' quotas and verify their golden answers.",
    no_args_is_help=True,
)

RootOption = Annotated[
    Path | None,
    typer.Option(
        "--root",
        help="Datasets root holding classifier/ and decider/ (default: the installed package).",
        file_okay=False,
        dir_okay=True,
    ),
]


def _load(
    load: Callable[[Path | None], T], root: Path | None, console: Console, as_json: bool = False
) -> T:
    try:
        return load(root)
    except DatasetError as e:
        if as_json:
            typer.echo(
                json.dumps(
                    {
                        "ok": False,
                        "problems": [
                            {"file": p.file, "case": p.case, "index": p.index, "message": p.message}
                            for p in e.problems
                        ],
                    },
                    indent=2,
                )
            )
        else:
            n = len(e.problems)
            console.print(
                f"[bold red]The datasets cannot be loaded ({n} problem{'s' if n != 1 else ''}):"
            )
            for p in e.problems:
                console.print(f"  [red]✗[/] {escape(str(p))}", highlight=False)
        raise typer.Exit(1) from None


@app.command("check")
def check(
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    root: RootOption = None,
) -> None:
    """Count cases per pair, per tier and per task type per tier; fail on any broken quota."""
    console = Console()
    data = _load(load_datasets, root, console, as_json)
    report = quota_report(data.classifier, data.decider)
    # Part of the carry key: a run carries earlier summaries only for the same content.
    hashes = {"classifier": dataset_hash(data.classifier), "decider": dataset_hash(data.decider)}
    if as_json:
        body = {"ok": report.ok, "dataset_hashes": hashes, **report.model_dump(mode="json")}
        typer.echo(json.dumps(body, indent=2))
    else:
        _print_report(console, report)
        for kind, digest in hashes.items():
            console.print(f"{kind} dataset hash: {digest}", highlight=False)
    if not report.ok:
        raise typer.Exit(1)


def _print_report(console: Console, report: QuotaReport) -> None:
    pairs = Table(title="Cases per (taskType, subtaskType)")
    pairs.add_column("taskType")
    pairs.add_column("subtaskType")
    pairs.add_column(f"classifier (={CLASSIFIER_PER_PAIR})", justify="right")
    pairs.add_column(f"decider (≥{DECIDER_MIN_PER_PAIR})", justify="right")
    for p in report.pairs:
        c = str(p.classifier) if p.classifier == CLASSIFIER_PER_PAIR else f"[red]{p.classifier}[/]"
        d = f"[red]{p.decider}[/]" if p.decider < DECIDER_MIN_PER_PAIR else str(p.decider)
        pairs.add_row(p.taskType, p.subtaskType, c, d)
    pairs.add_section()
    pairs.add_row("total", "", str(report.classifier_total), str(report.decider_total))
    console.print(pairs)

    tiers = Table(title="Decider cases per task type and tier")
    tiers.add_column("taskType")
    for row in report.tiers:
        tiers.add_column(row.tier, justify="right")
    task_types = list(report.tiers[0].by_task_type) if report.tiers else []
    for t in task_types:
        tiers.add_row(t, *(str(row.by_task_type[t]) for row in report.tiers))
    tiers.add_section()
    tiers.add_row(
        "cases (quota)",
        *(
            f"{row.cases} ({row.expected})"
            if row.cases == row.expected
            else f"[red]{row.cases}[/] ({row.expected})"
            for row in report.tiers
        ),
    )
    tiers.add_row(
        f"task types (≥{DECIDER_MIN_TASK_TYPES_PER_TIER})",
        *(
            str(n) if n >= DECIDER_MIN_TASK_TYPES_PER_TIER else f"[red]{n}[/]"
            for n in (row.distinct_task_types for row in report.tiers)
        ),
    )
    console.print(tiers)
    console.print(
        f"{report.decider_with_reference} of {report.decider_total} decider cases carry a "
        f"reference solution; {report.decider_with_post_check} change files and are also "
        "graded on the workspace (hidden post-check)."
    )
    if report.ok:
        console.print("[bold green]All dataset quotas hold.")
    else:
        console.print(f"[bold red]{len(report.failures)} quota failures:")
        for f in report.failures:
            console.print(
                f"  [red]✗[/] {escape(f'[{f.rule}]')} {escape(f.message)}", highlight=False
            )


@app.command("verify")
def verify(
    case: Annotated[
        list[str] | None,
        typer.Option("--case", help="Only this case id (repeatable). Default: every case."),
    ] = None,
    jobs: Annotated[
        int, typer.Option("--jobs", "-j", min=1, max=32, help="Containers run in parallel.")
    ] = 4,
    image: Annotated[
        str | None,
        typer.Option("--image", help="Container image (default: Settings().docker_image)."),
    ] = None,
    show_all: Annotated[
        bool, typer.Option("--all", help="List every case in the summary, not only failures.")
    ] = False,
    root: RootOption = None,
) -> None:
    """Run every decider case's reference solution in the container and check its answer."""
    from contracts.decider_grading import run_check
    from datasets.verify import verify_cases

    console = Console()
    cases = _load(load_decider_cases, root, console)
    if case:
        known = {c.id for c in cases}
        unknown = [c for c in case if c not in known]
        if unknown:
            console.print(f"[red]Unknown case id(s): {', '.join(unknown)}")
            raise typer.Exit(2)
        wanted = set(case)
        cases = [c for c in cases if c.id in wanted]
    factory = _docker_factory(image)
    with Progress(
        TextColumn("[bold]verify"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[failed]} failed"),
        TimeElapsedColumn(),
        TextColumn("{task.description}"),
        console=console,
        transient=False,
    ) as progress:
        task = progress.add_task("", total=len(cases), failed=0)
        failed = 0

        def on_result(v: CaseVerdict) -> None:
            nonlocal failed
            failed += 0 if v.ok else 1
            progress.update(task, advance=1, failed=failed, description=v.case_id)

        verdicts = asyncio.run(
            verify_cases(cases, factory, run_check, jobs=jobs, on_result=on_result)
        )
        progress.update(task, description="")
    _print_verdicts(console, verdicts, show_all)
    if any(not v.ok for v in verdicts):
        raise typer.Exit(1)


def _docker_factory(image: str | None) -> SandboxFactory:
    from infra.settings import Settings
    from streams.docker_sandbox import DockerSandbox

    chosen = image or Settings().docker_image
    run = f"datasets-verify-{os.getpid()}"

    def factory(index: int) -> Sandbox:
        sandbox: Sandbox = DockerSandbox(f"{run}:{index}", image=chosen)
        return sandbox

    return factory


def _print_verdicts(console: Console, verdicts: list[CaseVerdict], show_all: bool) -> None:
    summary = Table(title="Reference verification")
    summary.add_column("tier")
    for col in ("passed", "failed", "no reference", "total"):
        summary.add_column(col, justify="right")
    for tier in ("low", "medium", "high", None):
        rows = [v for v in verdicts if tier is None or v.tier == tier]
        if tier is None:
            summary.add_section()
        statuses = ("passed", "failed", "no_reference")
        counts = [sum(1 for v in rows if v.status == s) for s in statuses]
        summary.add_row(
            tier or "all",
            str(counts[0]),
            f"[red]{counts[1]}[/]" if counts[1] else "0",
            str(counts[2]),
            str(len(rows)),
        )
    console.print(summary)

    listed = verdicts if show_all else [v for v in verdicts if not v.ok]
    if listed:
        cases = Table(title="Cases" if show_all else "Failures")
        cases.add_column("case", overflow="fold")
        cases.add_column("tier")
        cases.add_column("check")
        cases.add_column("status")
        cases.add_column("seconds", justify="right")
        cases.add_column("detail", overflow="fold")
        for v in listed:
            status = {"passed": "[green]passed", "failed": "[red]FAILED", "no_reference": "—"}
            cases.add_row(
                v.case_id,
                v.tier,
                v.check_kind,
                status[v.status],
                f"{v.duration_s:.1f}",
                v.detail or (v.answer or ""),
            )
        console.print(cases)
    n_failed = sum(1 for v in verdicts if not v.ok)
    if n_failed:
        console.print(f"[bold red]{n_failed} of {len(verdicts)} cases failed verification.")
    else:
        console.print(f"[bold green]All {len(verdicts)} cases verified.")
