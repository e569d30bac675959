"""Pipeline benchmark: benchmark runs over the SIMULATED fleet with zero simulated latency.

    .venv/bin/python bench/pipeline.py [--kinds classifier,decider] [--models all|ID,ID]
                                       [--reps 1] [--slots 4]
                                       [--harness builtin,kilo,mini-swe-agent] [--cases ID,ID]
                                       [--timeout 3600] [--json]

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
- post-checks (decider): `post_check_ms`, the hidden checks a case runs in the container
  after the agent finished (grading work, like the task time);
- orchestration overhead per case = wall x slots / cases - (model + task + post-checks)
  per case: the figure held to the target (<= 50 ms per case). It splits into
  - sandbox transport: `tool_wall_ms - tool_exec_ms` (round trips over the runner's
    stream of the tool calls, reads and writes included), workspace reset (`reset_ms`),
    container start per job (`container_start_ms`: what the job waited for its container,
    a warm pool claim, spread over the job's cases);
  - harness loop: the rest of the case's wall (`latency_ms`) on the host;
  - job bookkeeping: the job's span (`job_elapsed_ms` of its last case) not inside a case
    or the container start (grading, CaseGraded produce);
  - remaining orchestration: slot time not inside any job span, placed on the run's
    timeline with the CaseGraded timestamps: run start (StartRun to the first jobs: command
    handling, fan-out, dispatch), between jobs (next job's dispatch),
    run tail (slots idle once they have no job left while the longest jobs finish), and
    aggregation (the run's last CaseGraded to RunCompleted, counted x slots).

Container start per job is also quoted against its own bar (<= 1 s per job), cold
(`container_cold_start_ms`: create + start + warm-up, paid ahead in the warm pool).

A check as well as a benchmark: it fails (exit 1) unless every expected case of every run
was graded (RunCompleted says graded == expected, none ungraded, and a distinct CaseGraded
was read for each) and the orchestration overhead per case meets its target. `--json`
prints one JSON object of named figures (`overhead_ms_per_case` first: the builtin decider
run's) on stdout; the progress and the table go to stderr.

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
import functools
import json
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


from bench.pipeline_figures import OVERHEAD_TARGET_MS, RunFigures, figures_for, report
from contracts.command_decider import run_id_for
from contracts.commands import SaveBenchmarkConfig, StartRun
from contracts.config import BenchmarkConfig, DeciderModel, RunKind
from contracts.envelope import EventBase
from contracts.events import CaseGraded, CommandAccepted, CommandRejected, RunCompleted
from datasets.loader import load_classifier_cases, load_decider_cases
from infra.clock import utc_now
from infra.processes import ChildProcess, child_env, peak_rss_mb, start_sim_provider, start_worker
from infra.settings import Settings, assume_dev
from simulator.fleet import load_fleet
from streams.event_log import EventReader, new_command_id, post_command
from streams.kafka_admin import ensure_topics

ROOT = Path(__file__).resolve().parent.parent
EFFORT = {0: "low", 1: "low", 2: "medium", 3: "medium"}


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


async def one_run(
    settings: Settings, kind: RunKind, slots: int, harness: str = "builtin", timeout_s: float = 3600
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
            timeout_s,
        )
        wall = time.perf_counter() - t0
        t1_epoch = time.time()
    if any(isinstance(e, CommandRejected) for e in evs):
        raise SystemExit(f"run rejected: {evs}")
    graded = {e.event_id: e for e in evs if isinstance(e, CaseGraded) and e.run_id == run_id}
    fig = figures_for(kind, list(graded.values()), wall, slots, (t0_epoch, t1_epoch), harness)
    [done] = [e for e in evs if isinstance(e, RunCompleted) and e.run_id == run_id]
    fig.expected, fig.graded, fig.ungraded = done.expected, done.graded, done.ungraded
    return fig


def problems(fig: RunFigures, expected: int) -> list[str]:
    """Why a run does not count: a case not graded is a failed check, not a figure."""
    found = []
    if (fig.expected, fig.graded, fig.ungraded) != (expected, expected, 0):
        found.append(
            f"{fig.label}: RunCompleted graded {fig.graded} of {fig.expected} "
            f"({fig.ungraded} ungraded); {expected} expected"
        )
    if fig.cases != expected:
        found.append(f"{fig.label}: read {fig.cases} distinct CaseGraded, {expected} expected")
    return found


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
    p.add_argument("--timeout", type=float, default=3600, help="seconds one run may take")
    p.add_argument("--json", action="store_true", help="print one JSON object of figures")
    args = p.parse_args(argv)
    # With --json, stdout carries the JSON object alone.
    say = functools.partial(print, file=sys.stderr if args.json else sys.stdout, flush=True)
    deciders = args.cases.split(",") if args.cases else load_decider_cases()
    cases = {"classifier": len(load_classifier_cases()), "decider": len(deciders)}

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
    say(
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
                run = one_run(settings, kind, args.slots, harness, args.timeout)  # type: ignore[arg-type]
                fig = asyncio.run(run)
                figures.append(fig)
                say(f"  {kind} run ({harness}) done: {fig.cases} cases in {fig.wall_s:.1f}s")
        rss = peak_rss_mb(worker.pid)
    say()
    report(figures, say)
    say()
    say(f"worker peak RSS: {rss:.0f} MB" if rss else "worker peak RSS: n/a")
    with contextlib.suppress(Exception):
        asyncio.run(_delete_topics(settings.kafka_bootstrap, prefix))
    return verdict(figures, cases, len(models) * args.reps, rss, say, args.json)


def verdict(
    figures: list[RunFigures],
    cases: dict[str, int],
    draws: int,
    rss: float | None,
    say: Any,
    as_json: bool,
) -> int:
    """The checks (every case graded, the overhead target) and, with --json, the figures."""
    found = [m for f in figures for m in problems(f, draws * cases[f.kind])]
    headline = next((f for f in figures if f.label == "decider"), figures[-1])
    gates = {
        "every_case_graded": not found,
        "overhead_ms_per_case": headline.overhead_ms <= OVERHEAD_TARGET_MS,
    }
    for problem in found:
        say(f"CHECK FAILED: {problem}")
    missed = [k for k, ok in gates.items() if not ok]
    say("targets:", f"MISSED ({', '.join(missed)})" if missed else "met")
    if as_json:
        figures_json = {
            "overhead_ms_per_case": headline.overhead_ms,
            "headline_run": headline.label,
            "runs": {f.label: f.as_dict() for f in figures},
            "worker_peak_rss_mb": rss,
            "problems": found,
            "gates": gates,
            "ok": not missed,
        }
        print(json.dumps(figures_json))
    return 1 if missed else 0


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
