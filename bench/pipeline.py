"""Pipeline benchmark: benchmark runs over the SIMULATED fleet with zero simulated latency.

    .venv/bin/python bench/pipeline.py [--kinds classifier,decider] [--models all|ID,ID]
                                       [--reps 1] [--slots 4]
                                       [--harness builtin,kilo,mini-swe-agent] [--cases ID,ID]

Starts a simulated provider (PROVENROUTE_SIM_LATENCY_SCALE=0) and a real worker on a fresh
topic prefix (real Kafka, real Docker for decider jobs), saves a config over the fleet and
times one run per kind, from posting StartRun to reading RunCompleted. Prints per run the
end-to-end run time (wall), the worker's peak RSS, and a breakdown of the slot time
(wall x slots: what the run cost its job slots) per case, from the CaseGraded diagnostics:

- model: what the provider calls took (classifier: the call's wall time, which includes the
  retries the production client makes; decider: the harness's `model_latency_ms`);
- in-container task time (decider): `tool_exec_ms`, the in-container durations of the
  shell commands the tools ran. With the simulated provider a correct agentic draw runs
  the case's real reference solution (unit tests, mutation testing...), which can take
  seconds: that is the task's own work, not overhead;
- orchestration overhead per case = wall x slots / cases - (model + task) per case: the
  figure held to the target (<= 50 ms per case). It splits into
  - sandbox transport: `tool_wall_ms - tool_exec_ms` (docker exec round trips of the tool
    calls, reads and writes included), workspace reset (`reset_ms`), container start per
    job (`container_start_ms`: create + start + warm-up, spread over the job's cases);
  - harness loop: the rest of the case's wall (`latency_ms`) on the host;
  - job bookkeeping: the job's span (`job_elapsed_ms` of its last case) not inside a case
    or the container start (grading, CaseGraded produce);
  - remaining orchestration: slot time not inside any job span, placed on the run's
    timeline with the CaseGraded timestamps: run start (StartRun to the first jobs: command
    handling, fan-out, dispatch), between jobs (container removal, next job's dispatch),
    run tail (slots idle once they have no job left while the longest jobs finish), and
    aggregation (the run's last CaseGraded to RunCompleted, counted x slots).

Container start per job is also quoted against its own bar (<= 1 s per job).

`--harness` runs the decider benchmark once per named harness (the config's
deciderHarness) and prints, beside the breakdown, the per-case harness overhead: CLI
start-up (case start to the CLI's first model call), the CLI's time outside model calls,
and the model time as the job's model proxy measured it. `--cases` limits the decider
dataset (PROVENROUTE_WORKER_DECIDER_CASES), e.g. to the agentic cases.

Simulated timeouts are wrong draws that would stall a case for the provider timeout; the
benchmark sets that timeout to 5 s and counts the time as model latency.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


from contracts.command_decider import run_id_for
from contracts.commands import SaveBenchmarkConfig, StartRun
from contracts.config import BenchmarkConfig, DeciderModel, RunKind
from contracts.envelope import EventBase
from contracts.events import CaseGraded, CommandAccepted, CommandRejected, RunCompleted
from infra.clock import utc_now
from infra.processes import ChildProcess, child_env, peak_rss_mb, start_sim_provider, start_worker
from infra.settings import Settings, assume_dev
from simulator.fleet import load_fleet
from streams.event_log import EventReader, new_command_id, post_command
from streams.kafka_admin import ensure_topics

ROOT = Path(__file__).resolve().parent.parent
EFFORT = {0: "low", 1: "low", 2: "medium", 3: "medium"}


def _num(diag: dict[str, str], key: str) -> float:
    try:
        return float(diag.get(key, 0) or 0)
    except ValueError:
        return 0.0


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
    tool_wall_ms: float = 0.0
    tool_calls: int = 0
    reset_ms: float = 0.0
    start_ms: float = 0.0
    """Sum of container_start_ms over the jobs."""
    jobs: int = 0
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
    top_task: list[tuple[str, float]] | None = None
    """Cases with the most in-container task time (mean ms over models and reps)."""
    harness: str = "builtin"
    overhead: dict[str, float] | None = None
    """Decider runs: `harness_overhead` of the run's cases."""

    @property
    def slot_ms(self) -> float:
        return self.wall_s * self.slots * 1000

    def per_case(self, total_ms: float) -> float:
        return total_ms / self.cases if self.cases else 0.0

    @property
    def overhead_ms(self) -> float:
        """Orchestration overhead per case: slot time beyond model and task time."""
        return self.per_case(self.slot_ms - self.model_ms - self.task_ms)

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
        transport = self.tool_wall_ms - self.task_ms
        harness = self.busy_ms - self.model_ms - self.tool_wall_ms - self.reset_ms
        bookkeeping = self.span_ms - self.start_ms - self.busy_ms
        return [
            ("model (provider calls)", self.model_ms),
            ("in-container task time (tool_exec)", self.task_ms),
            ("sandbox: docker exec transport", transport),
            ("sandbox: workspace reset", self.reset_ms),
            ("sandbox: container start (per job)", self.start_ms),
            ("harness loop on the host", harness),
            ("job bookkeeping (grade, produce CaseGraded)", bookkeeping),
            ("orchestration: run start (fan-out, first dispatch)", self.head_ms),
            (
                "orchestration: between jobs (container removal, dispatch)",
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


WORKER: ChildProcess | None = None
"""The worker child; a wait gives up at once when it has died."""


async def wait_for(  # type: ignore[no-untyped-def]
    settings: Settings, reader: EventReader, pred, timeout: float
) -> list[EventBase]:
    seen: list[EventBase] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        seen += await reader.poll(0.1)
        if pred(seen):
            return seen
        if WORKER is not None and not WORKER.alive():
            raise SystemExit(f"the worker exited with {WORKER.proc.returncode}; see its log")
    raise TimeoutError("no answer from the worker")


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


async def one_run(
    settings: Settings, kind: RunKind, slots: int, harness: str = "builtin"
) -> RunFigures:
    command = StartRun(command_id=new_command_id(), issued_at=utc_now(), kind=kind, force=True)
    run_id = run_id_for(command.command_id)
    async with EventReader(settings, from_end=True) as reader:
        t0 = time.perf_counter()
        t0_epoch = time.time()
        await post_command(settings, command)
        evs = await wait_for(
            settings,
            reader,
            lambda s: any(
                (isinstance(e, RunCompleted) and e.run_id == run_id)
                or (isinstance(e, CommandRejected) and e.correlation_id == command.command_id)
                for e in s
            ),
            3600,
        )
        wall = time.perf_counter() - t0
        t1_epoch = time.time()
    if any(isinstance(e, CommandRejected) for e in evs):
        raise SystemExit(f"run rejected: {evs}")
    graded = {e.event_id: e for e in evs if isinstance(e, CaseGraded) and e.run_id == run_id}
    fig = figures_for(kind, list(graded.values()), wall, slots, (t0_epoch, t1_epoch))
    fig.harness = harness
    fig.overhead = harness_overhead(list(graded.values())) if kind == "decider" else None
    return fig


def _epoch(ts: str) -> float:
    return datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()


def figures_for(
    kind: str,
    graded: list[CaseGraded],
    wall_s: float,
    slots: int,
    window: tuple[float, float] | None = None,
) -> RunFigures:
    """Fold a run's CaseGraded events (one per case) into its totals; `window` is the run's
    (start, end) in epoch seconds, to place the jobs on the run's timeline."""
    """Fold a run's CaseGraded events (one per case) into its totals."""
    fig = RunFigures(
        kind=kind,
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
    jobs: dict[tuple[str | None, str], tuple[float, float]] = {}
    ends: dict[tuple[str | None, str], float] = {}
    task_by_case: dict[str, list[float]] = {}
    for e in graded:
        d = e.diagnostics
        fig.model_ms += _num(d, "model_latency_ms")
        task = _num(d, "tool_exec_ms")
        fig.task_ms += task
        fig.tool_wall_ms += _num(d, "tool_wall_ms")
        fig.tool_calls += int(_num(d, "tool_calls"))
        fig.reset_ms += _num(d, "reset_ms")
        task_by_case.setdefault(e.case_id, []).append(task)
        key = (e.job_id, d.get("job_attempt", ""))
        start, span = jobs.get(key, (0.0, 0.0))
        jobs[key] = (
            max(start, _num(d, "container_start_ms")),
            max(span, _num(d, "job_elapsed_ms")),
        )
        ends[key] = max(ends.get(key, 0.0), _epoch(e.occurred_at))
    fig.jobs = len(jobs)
    fig.start_ms = sum(s for s, _ in jobs.values())
    fig.start_max_ms = max((s for s, _ in jobs.values()), default=0.0)
    fig.span_ms = sum(s for _, s in jobs.values())
    if window is not None and jobs:
        t0, t1 = window
        n = min(slots, len(jobs))
        starts = sorted(ends[k] - jobs[k][1] / 1000 for k in jobs)[:n]
        last = sorted(ends.values())[-n:]
        fig.head_ms = sum(max(s - t0, 0.0) for s in starts) * 1000 + (slots - n) * wall_s * 1000
        fig.tail_ms = sum(last[-1] - e for e in last) * 1000
        fig.completion_ms = max(t1 - last[-1], 0.0) * 1000
    means = {c: statistics.mean(v) for c, v in task_by_case.items()}
    fig.top_task = sorted(means.items(), key=lambda kv: -kv[1])[:5]
    return fig


def report(figures: list[RunFigures]) -> None:
    print(
        f"{'run':<11}{'models':>7}{'cases':>7}{'jobs':>6}{'run time s':>12}"
        f"{'slot ms/case':>14}{'model':>9}{'task':>9}{'orch. overhead':>16}"
    )
    for f in figures:
        print(
            f"{f.kind:<11}{f.models:>7}{f.cases:>7}{f.jobs or '-':>6}{f.wall_s:>12.1f}"
            f"{f.per_case(f.slot_ms):>14.1f}{f.per_case(f.model_ms):>9.1f}"
            f"{f.per_case(f.task_ms):>9.1f}{f.overhead_ms:>16.1f}"
        )
    print("(ms per case; slot time = run time x slots; orchestration overhead = slot time")
    print(" per case - model - in-container task time; target <= 50 ms per case)")
    for f in figures:
        print()
        print(
            f"{f.kind} run: {f.wall_s:.1f} s x {f.slots} slots over {f.cases} cases = "
            f"{f.per_case(f.slot_ms):.1f} ms of slot time per case"
        )
        for name, total in f.breakdown():
            share = total / f.slot_ms * 100 if f.slot_ms else 0.0
            print(f"  {name:<64}{f.per_case(total):>9.1f} ms/case{share:>7.1f} %")
        if f.kind != "decider":
            continue
        transport = f.tool_wall_ms - f.task_ms
        sandbox = transport + f.reset_ms + f.start_ms
        print(
            f"  sandbox costs: {f.per_case(sandbox):.1f} ms/case in all; "
            f"{f.tool_calls} tool calls, "
            f"{transport / f.tool_calls if f.tool_calls else 0:.1f} ms transport each; "
            f"reset {f.per_case(f.reset_ms):.1f} ms/case"
        )
        print(
            f"  last CaseGraded -> RunCompleted read: {f.completion_ms:.0f} ms; "
            f"end-to-end run time {f.wall_s:.1f} s"
        )
        rest = f.slot_ms - f.model_ms - f.task_ms - sandbox - f.tail_ms
        print(
            f"  orchestration overhead {f.overhead_ms:.1f} ms/case = sandbox "
            f"{f.per_case(sandbox):.1f} + slots idle at the run's tail "
            f"{f.per_case(f.tail_ms):.1f} + Kafka/Faust/harness {f.per_case(rest):.1f}"
        )
        print(
            f"  container start: mean {f.start_ms / f.jobs if f.jobs else 0:.0f} ms, "
            f"max {f.start_max_ms:.0f} ms per job over {f.jobs} jobs (bar <= 1000 ms)"
        )
        if f.top_task:
            tops = ", ".join(f"{c} {ms:.0f}" for c, ms in f.top_task)
            print(f"  most in-container task time (mean ms per draw): {tops}")
    report_harnesses([f for f in figures if f.kind == "decider" and f.overhead])


def report_harnesses(figures: list[RunFigures]) -> None:
    """Per-case harness overhead of each decider run, side by side."""
    if not figures:
        return
    print()
    print(
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
        print(
            f"{f.harness:<16}{f.cases:>6}{o.get('wall', 0.0):>14.0f}{o.get('model', 0.0):>9.0f}"
            f"{o.get('cli_start', 0.0):>14.0f}{other:>11.0f}{extra:>12}"
        )
    print("(ms per case, means; model = the proxy's (CLI) or the client's (builtin) call time;")
    print(" CLI start-up = case start to the first model call; CLI other = the rest of the")
    print(" CLI's wall outside model calls: its tools, its own bookkeeping and exit)")


async def save_config(settings: Settings, config: BenchmarkConfig) -> None:
    command = SaveBenchmarkConfig(command_id=new_command_id(), issued_at=utc_now(), config=config)
    async with EventReader(settings, from_end=True) as reader:
        await post_command(settings, command)
        evs = await wait_for(
            settings,
            reader,
            lambda s: any(
                isinstance(e, CommandAccepted | CommandRejected)
                and e.correlation_id == command.command_id
                for e in s
            ),
            180,
        )
    if not any(isinstance(e, CommandAccepted) for e in evs):
        raise SystemExit(f"config rejected: {evs}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--kinds", default="classifier,decider")
    p.add_argument(
        "--models", default="all", help="'all' (the default fleet) or ids, comma separated"
    )
    p.add_argument("--reps", type=int, default=1)
    p.add_argument("--slots", type=int, default=4, help="worker job slots = run maxConcurrency")
    p.add_argument("--harness", default="builtin", help="decider harnesses to run, comma separated")
    p.add_argument("--cases", default="", help="decider case ids (default: the whole dataset)")
    args = p.parse_args(argv)

    fleet = load_fleet()
    models = [m.id for m in fleet.models] if args.models == "all" else args.models.split(",")
    config = BenchmarkConfig(
        classifierModels=tuple(models),
        deciderModels=tuple(
            DeciderModel(model=m, reasoningEffort=EFFORT.get(i, "high"))
            for i, m in enumerate(models)
        ),
        maxConcurrency=args.slots,
        classifierRepetitions=args.reps,
        deciderRepetitions=args.reps,
        classifierMaxP95LatencyMs=None,
        benchmarkIdentity="sim-benchmark",
    )
    prefix = f"bench{uuid.uuid4().hex[:8]}."
    assume_dev()
    settings = Settings(topic_prefix=prefix)
    asyncio.run(ensure_topics(settings.kafka_bootstrap, prefix))
    workdir = Path(tempfile.mkdtemp(prefix="provenroute-bench-pipeline-"))
    env = child_env(
        PROVENROUTE_TOPIC_PREFIX=prefix,
        PROVENROUTE_PROVIDER_TIMEOUT_S="5",
        PROVENROUTE_WORKER_JOB_SLOTS=str(args.slots),
    )
    if args.cases:
        env["PROVENROUTE_WORKER_DECIDER_CASES"] = args.cases
    print(
        f"pipeline benchmark (SIMULATED fleet, zero latency): {len(models)} models, "
        f"reps {args.reps}, {args.slots} job slots; logs in {workdir}"
    )
    figures: list[RunFigures] = []
    sim, sim_url = start_sim_provider(workdir, env, latency_scale=0.0, name="sim")
    env["PROVENROUTE_PROVIDER_BASE_URL"] = sim_url
    with sim, start_worker(workdir, env) as worker:
        global WORKER
        WORKER = worker
        for kind in args.kinds.split(","):
            for harness in args.harness.split(",") if kind == "decider" else ["builtin"]:
                run_config = config.model_copy(update={"deciderHarness": harness})
                asyncio.run(save_config(settings, run_config))
                fig = asyncio.run(one_run(settings, kind, args.slots, harness))  # type: ignore[arg-type]
                figures.append(fig)
                print(
                    f"  {kind} run ({harness}) done: {fig.cases} cases in {fig.wall_s:.1f}s",
                    flush=True,
                )
        rss = peak_rss_mb(worker.pid)
    print()
    report(figures)
    print()
    print(f"worker peak RSS: {rss:.0f} MB" if rss else "worker peak RSS: n/a")
    with contextlib.suppress(Exception):
        asyncio.run(_delete_topics(settings.kafka_bootstrap, prefix))
    return 0


async def _delete_topics(bootstrap: str, prefix: str) -> None:
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        names = [t for t in await admin.list_topics() if t.startswith(prefix)]
        if names:
            await admin.delete_topics(names)
    finally:
        await admin.close()


if __name__ == "__main__":
    raise SystemExit(main())
