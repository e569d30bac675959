"""`provenroute harness try`: one decider case through one agent harness, shown in full."""

from __future__ import annotations

import asyncio
import json
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from contracts.config import HARNESSES, HarnessName
from datasets.loader import load_decider_cases
from infra.settings import Settings
from streams.harness_try import TryOutcome, try_case

app = typer.Typer(help="Debug the agent harnesses decider cases run through.")
console = Console(highlight=False, soft_wrap=True)


@app.command("try")
def try_cmd(
    harness: Annotated[str, typer.Option("--harness", help="builtin, kilo or mini-swe-agent")],
    model: Annotated[str, typer.Option("--model", help="Provider model id, e.g. sim/frontier")],
    case_id: Annotated[str, typer.Option("--case", help="A decider case id")],
    effort: Annotated[
        str | None, typer.Option("--effort", help="Reasoning effort to pin (default: none)")
    ] = None,
    identity: Annotated[
        str | None,
        typer.Option("--identity", help="Named provider credential (default: the default key)"),
    ] = None,
    rep: Annotated[int, typer.Option("--rep", help="Repetition number (seeds the draw)")] = 0,
) -> None:
    """Run CASE in a fresh container through HARNESS against the configured provider; print
    the raw event stream, the model proxy's call log and the graded result."""
    if harness not in HARNESSES:
        raise typer.BadParameter(f"--harness must be one of {', '.join(HARNESSES)}")
    cases = {c.id: c for c in load_decider_cases()}
    if case_id not in cases:
        raise typer.BadParameter(f"no decider case {case_id!r}")
    outcome = asyncio.run(
        try_case(
            Settings(),
            harness=harness,  # type: ignore[arg-type]
            model=model,
            case=cases[case_id],
            reasoning_effort=effort,
            credential=identity,
            rep=rep,
        )
    )
    show(outcome, harness)  # type: ignore[arg-type]
    raise typer.Exit(0 if outcome.passed else 1)


def show(outcome: TryOutcome, harness: HarnessName) -> None:
    r = outcome.result
    for i, run in enumerate(r.cli_runs, 1):
        console.rule(
            f"attempt {i}: raw CLI output (exit {run['exit_code']}, {run['duration_ms']:.0f} ms)"
        )
        console.print(run["stdout"] or "(no output)", markup=False)
        for path, text in (run.get("read_back") or {}).items():
            console.rule(f"{path}")
            console.print(text or "(missing)", markup=False)
        if run["stderr"]:
            console.rule("stderr (redacted)")
            console.print(run["stderr"], markup=False)
    if harness == "builtin":
        console.rule("transcript (the built-in loop calls the provider from the worker)")
        console.print(r.transcript_tail, markup=False)
    else:
        console.rule("model proxy call log")
        calls = Table(
            "#", "at ms", "ms", "status", "stream", "in", "out", "cost $", "finish", "error"
        )
        for c in r.proxy_calls:
            calls.add_row(
                str(c["index"]),
                f"{c['at_ms']:.0f}",
                f"{c['duration_ms']:.0f}",
                str(c["status"]),
                "yes" if c["stream"] else "",
                str(c["prompt_tokens"]),
                str(c["completion_tokens"]),
                "-" if c["cost_usd"] is None else f"{c['cost_usd']:.6f}",
                c["finish_reason"] or "",
                c["error"] or "",
            )
        console.print(calls)
    console.rule("graded result")
    summary = {
        "harness": r.harness,
        "answer": r.answer,
        "passed": outcome.passed,
        "check": outcome.check.detail if outcome.check else "no answer",
        "stop_reason": r.stop_reason,
        "timed_out": r.timed_out,
        "attempts": r.attempts,
        "model_calls": r.steps,
        "tool_calls": r.tool_calls,
        "cost_usd": r.cost_usd,
        "latency_ms": round(r.latency_ms, 1),
        "cli_ms": round(r.cli_ms, 1),
        "model_latency_ms": round(r.model_latency_ms, 1),
    }
    console.print(json.dumps(summary, indent=2), markup=False)
