"""Figures of the pipeline benchmark: a run's CaseGraded events folded into where its slot
time went (see bench/pipeline.py for what each part means), as a table or named figures."""

from __future__ import annotations

import re
import statistics
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from contracts.events import CaseGraded

OVERHEAD_TARGET_MS = 50.0
"""Orchestration overhead per case (DESIGN.md quality bars, issue 14)."""


def _num(diag: dict[str, str], key: str) -> float:
    try:
        return float(diag.get(key, 0) or 0)
    except ValueError:
        return 0.0


def _epoch(ts: str) -> float:
    return datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", name.split("(")[0].lower()).strip("_")


@dataclass
class RunFigures:
    """Totals over a run's graded cases, in ms unless named otherwise."""

    kind: str
    models: int
    cases: int
    wall_s: float
    slots: int
    busy_ms: float
    """Sum of CaseGraded.latency_ms (the cases' own wall time)."""
    model_ms: float
    task_ms: float = 0.0
    post_check_ms: float = 0.0
    """The hidden post-checks (grading that runs the case's checks in the container)."""
    tool_wall_ms: float = 0.0
    tool_calls: int = 0
    reset_ms: float = 0.0
    start_ms: float = 0.0
    """Sum over the jobs of what each waited for its container (a warm pool claim)."""
    cold_start_ms: float = 0.0
    """Sum over the jobs of their container's create + start + warm-up (paid in the pool)."""
    jobs: int = 0
    reused_jobs: int = 0
    """Jobs that got a used container of their run (recycled, no start at all)."""
    reused_start_ms: float = 0.0
    """Sum over those jobs of what each waited for it (its recycle, if not done yet)."""
    span_ms: float = 0.0
    """Sum over the jobs of their span (start of the job to its last CaseGraded)."""
    start_max_ms: float = 0.0
    head_ms: float = 0.0
    """Slot time from posting StartRun to each slot's first job starting (S earliest)."""
    tail_ms: float = 0.0
    """Slot time from each slot's last job ending to the run's last CaseGraded (S latest):
    slots idle while the run's longest jobs finish."""
    completion_ms: float = 0.0
    """From the run's last CaseGraded to reading RunCompleted (one latency, not x slots)."""
    top_task: list[tuple[str, float]] = field(default_factory=list)
    """Cases with the most in-container task time (mean ms over models and reps)."""
    expected: int = 0
    """Results the run's RunCompleted expected; `graded` of them were graded."""
    graded: int = 0
    ungraded: int = 0
    harness: str = "builtin"
    overhead: dict[str, float] | None = None
    """Decider runs: `harness_overhead` of the run's cases."""

    @property
    def label(self) -> str:
        return self.kind if self.harness == "builtin" else f"{self.kind}:{self.harness}"

    @property
    def slot_ms(self) -> float:
        return self.wall_s * self.slots * 1000

    def per_case(self, total_ms: float) -> float:
        return total_ms / self.cases if self.cases else 0.0

    @property
    def work_ms(self) -> float:
        """The benchmark's own work: model calls, the tools' commands, the post-checks."""
        return self.model_ms + self.task_ms + self.post_check_ms

    @property
    def overhead_ms(self) -> float:
        """Orchestration overhead per case: slot time beyond the benchmark's own work."""
        return self.per_case(self.slot_ms - self.work_ms)

    @property
    def transport_ms(self) -> float:
        return self.tool_wall_ms - self.task_ms

    def breakdown(self) -> list[tuple[str, float]]:
        """(component, total ms); the components add up to the slot time."""
        if self.kind == "classifier":
            return [
                ("model (provider calls)", self.model_ms),
                (
                    "remaining orchestration (Kafka/Faust/aggregation/idle)",
                    self.slot_ms - self.busy_ms,
                ),
            ]
        harness = self.busy_ms - self.model_ms - self.tool_wall_ms - self.reset_ms
        bookkeeping = self.span_ms - self.start_ms - self.busy_ms - self.post_check_ms
        return [
            ("model (provider calls)", self.model_ms),
            ("in-container task time (tool_exec)", self.task_ms),
            ("in-container post-checks (hidden grading)", self.post_check_ms),
            ("sandbox: runner stream transport", self.transport_ms),
            ("sandbox: workspace reset", self.reset_ms),
            ("sandbox: container start (what each job waited)", self.start_ms),
            ("harness loop on the host", harness),
            ("job bookkeeping (grade, produce CaseGraded)", bookkeeping),
            ("orchestration: run start (fan-out, first dispatch)", self.head_ms),
            (
                "orchestration: between jobs (dispatch)",
                self.slot_ms
                - self.span_ms
                - self.head_ms
                - self.tail_ms
                - self.completion_ms * self.slots,
            ),
            ("orchestration: run tail (slots idle, waiting on the last jobs)", self.tail_ms),
            (
                "orchestration: aggregation + RunCompleted (x slots)",
                self.completion_ms * self.slots,
            ),
        ]

    def as_dict(self) -> dict[str, Any]:
        """Named figures (per case unless the name says otherwise)."""
        out: dict[str, Any] = {
            "kind": self.kind,
            "harness": self.harness,
            "models": self.models,
            "cases": self.cases,
            "jobs": self.jobs,
            "expected": self.expected,
            "graded": self.graded,
            "ungraded": self.ungraded,
            "wall_s": self.wall_s,
            "slots": self.slots,
            "slot_ms_per_case": self.per_case(self.slot_ms),
            "overhead_ms_per_case": self.overhead_ms,
        }
        for name, total in self.breakdown():
            out[f"{_slug(name)}_ms_per_case"] = self.per_case(total)
        if self.kind == "decider":
            out |= {
                "tool_calls": self.tool_calls,
                "transport_ms_per_tool_call": (
                    self.transport_ms / self.tool_calls if self.tool_calls else 0.0
                ),
                "container_start_mean_ms": self.start_ms / self.jobs if self.jobs else 0.0,
                "container_start_max_ms": self.start_max_ms,
                "container_cold_start_mean_ms": (
                    self.cold_start_ms / self.jobs if self.jobs else 0.0
                ),
                "jobs_container_reused": self.reused_jobs,
                "container_start_reused_mean_ms": (
                    self.reused_start_ms / self.reused_jobs if self.reused_jobs else 0.0
                ),
                "container_start_not_reused_mean_ms": (
                    (self.start_ms - self.reused_start_ms) / (self.jobs - self.reused_jobs)
                    if self.jobs > self.reused_jobs
                    else 0.0
                ),
            }
        if self.overhead:
            out |= {f"harness_{k}_ms_per_case": v for k, v in self.overhead.items()}
        return out


def harness_overhead(graded: list[CaseGraded]) -> dict[str, float]:
    """Mean ms per case: wall, model, CLI start-up, CLI rest (agent-CLI harnesses)."""
    n = len(graded) or 1

    def mean(key: str) -> float:
        return sum(_num(e.diagnostics, key) for e in graded) / n

    wall = sum(e.latency_ms for e in graded) / n
    return {
        "wall": wall,
        "model": mean("model_latency_ms"),
        "cli_start": mean("cli_first_call_ms"),
        "cli": mean("cli_ms"),
        "reset": mean("reset_ms"),
    }


def figures_for(
    kind: str,
    graded: list[CaseGraded],
    wall_s: float,
    slots: int,
    window: tuple[float, float] | None = None,
    harness: str = "builtin",
) -> RunFigures:
    """Fold a run's CaseGraded events (one per case) into its totals; `window` is the run's
    (start, end) in epoch seconds, to place the jobs on the run's timeline."""
    fig = RunFigures(
        kind=kind,
        harness=harness,
        models=len({e.model for e in graded}),
        cases=len(graded),
        wall_s=wall_s,
        slots=slots,
        busy_ms=sum(e.latency_ms for e in graded),
        model_ms=0.0,
    )
    if kind == "classifier":
        fig.model_ms = fig.busy_ms
        return fig
    jobs: dict[tuple[str | None, str], tuple[float, float, float]] = {}
    ends: dict[tuple[str | None, str], float] = {}
    task_by_case: dict[str, list[float]] = {}
    reused: set[tuple[str | None, str]] = set()
    for e in graded:
        d = e.diagnostics
        fig.model_ms += _num(d, "model_latency_ms")
        task = _num(d, "tool_exec_ms")
        fig.task_ms += task
        fig.tool_wall_ms += _num(d, "tool_wall_ms")
        fig.tool_calls += int(_num(d, "tool_calls"))
        fig.reset_ms += _num(d, "reset_ms")
        fig.post_check_ms += _num(d, "post_check_ms")
        task_by_case.setdefault(e.case_id, []).append(task)
        key = (e.job_id, d.get("job_attempt", ""))
        if d.get("container_reused") == "true":
            reused.add(key)
        start, cold, span = jobs.get(key, (0.0, 0.0, 0.0))
        jobs[key] = (
            max(start, _num(d, "container_start_ms")),
            max(cold, _num(d, "container_cold_start_ms")),
            max(span, _num(d, "job_elapsed_ms")),
        )
        ends[key] = max(ends.get(key, 0.0), _epoch(e.occurred_at))
    fig.jobs = len(jobs)
    fig.start_ms = sum(s for s, _, _ in jobs.values())
    fig.cold_start_ms = sum(c for _, c, _ in jobs.values())
    fig.start_max_ms = max((s for s, _, _ in jobs.values()), default=0.0)
    fig.reused_jobs = len(reused)
    fig.reused_start_ms = sum(jobs[k][0] for k in reused)
    fig.span_ms = sum(s for _, _, s in jobs.values())
    if window is not None and jobs:
        t0, t1 = window
        n = min(slots, len(jobs))
        starts = sorted(ends[k] - jobs[k][2] / 1000 for k in jobs)[:n]
        last = sorted(ends.values())[-n:]
        fig.head_ms = sum(max(s - t0, 0.0) for s in starts) * 1000 + (slots - n) * wall_s * 1000
        fig.tail_ms = sum(last[-1] - e for e in last) * 1000
        fig.completion_ms = max(t1 - last[-1], 0.0) * 1000
    means = {c: statistics.mean(v) for c, v in task_by_case.items()}
    fig.top_task = sorted(means.items(), key=lambda kv: -kv[1])[:5]
    fig.overhead = harness_overhead(graded)
    return fig


def report(figures: list[RunFigures], say: Any = print) -> None:
    say(
        f"{'run':<11}{'models':>7}{'cases':>7}{'jobs':>6}{'run time s':>12}"
        f"{'slot ms/case':>14}{'model':>9}{'task':>9}{'post':>8}{'orch. overhead':>16}"
    )
    for f in figures:
        say(
            f"{f.label:<11}{f.models:>7}{f.cases:>7}{f.jobs or '-':>6}{f.wall_s:>12.1f}"
            f"{f.per_case(f.slot_ms):>14.1f}{f.per_case(f.model_ms):>9.1f}"
            f"{f.per_case(f.task_ms):>9.1f}{f.per_case(f.post_check_ms):>8.1f}"
            f"{f.overhead_ms:>16.1f}"
        )
    say("(ms per case; slot time = run time x slots; orchestration overhead = slot time per")
    say(" case - model - in-container task time - post-checks (the hidden grading commands);")
    say(f" target <= {OVERHEAD_TARGET_MS:.0f} ms)")
    for f in figures:
        say()
        say(
            f"{f.label} run: {f.wall_s:.1f} s x {f.slots} slots over {f.cases} cases = "
            f"{f.per_case(f.slot_ms):.1f} ms of slot time per case; "
            f"graded {f.graded} of {f.expected} expected"
        )
        for name, total in f.breakdown():
            share = total / f.slot_ms * 100 if f.slot_ms else 0.0
            say(f"  {name:<64}{f.per_case(total):>9.1f} ms/case{share:>7.1f} %")
        if f.kind != "decider":
            continue
        sandbox = f.transport_ms + f.reset_ms + f.start_ms
        say(
            f"  sandbox costs: {f.per_case(sandbox):.1f} ms/case in all; "
            f"{f.tool_calls} tool calls, "
            f"{f.transport_ms / f.tool_calls if f.tool_calls else 0:.2f} ms transport each; "
            f"reset {f.per_case(f.reset_ms):.2f} ms/case"
        )
        say(
            f"  last CaseGraded -> RunCompleted read: {f.completion_ms:.0f} ms; "
            f"end-to-end run time {f.wall_s:.1f} s"
        )
        rest = f.slot_ms - f.work_ms - sandbox - f.tail_ms
        say(
            f"  orchestration overhead {f.overhead_ms:.1f} ms/case = sandbox "
            f"{f.per_case(sandbox):.1f} + slots idle at the run's tail "
            f"{f.per_case(f.tail_ms):.1f} + Kafka/Faust/harness {f.per_case(rest):.1f}"
        )
        jobs = f.jobs or 1
        say(
            f"  container start: each job waited mean {f.start_ms / jobs:.0f} ms, max "
            f"{f.start_max_ms:.0f} ms over {f.jobs} jobs (warm pool); a cold start took "
            f"mean {f.cold_start_ms / jobs:.0f} ms (bar <= 1000 ms); {f.reused_jobs} jobs "
            "got a used container of their run (recycled, no start)"
        )
        if f.top_task:
            tops = ", ".join(f"{c} {ms:.0f}" for c, ms in f.top_task)
            say(f"  most in-container task time (mean ms per draw): {tops}")
    report_harnesses([f for f in figures if f.kind == "decider" and f.overhead], say)


def report_harnesses(figures: list[RunFigures], say: Any = print) -> None:
    """Per-case harness overhead of each decider run, side by side."""
    if not figures:
        return
    say()
    say(
        f"{'harness':<16}{'cases':>6}{'wall ms/case':>14}{'model':>9}{'CLI start-up':>14}"
        f"{'CLI other':>11}{'vs builtin':>12}"
    )
    base = next(
        (f.overhead["wall"] for f in figures if f.harness == "builtin" and f.overhead), None
    )
    for f in figures:
        o = f.overhead or {}
        other = max(o.get("cli", 0.0) - o.get("cli_start", 0.0) - o.get("model", 0.0), 0.0)
        extra = "" if base is None else f"{o.get('wall', 0.0) - base:+.0f}"
        say(
            f"{f.harness:<16}{f.cases:>6}{o.get('wall', 0.0):>14.0f}{o.get('model', 0.0):>9.0f}"
            f"{o.get('cli_start', 0.0):>14.0f}{other:>11.0f}{extra:>12}"
        )
    say("(ms per case, means; model = the proxy's (CLI) or the client's (builtin) call time;")
    say(" CLI start-up = case start to the first model call; CLI other = the rest of the")
    say(" CLI's wall outside model calls: its tools, its own bookkeeping and exit)")
