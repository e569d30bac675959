"""Pipeline benchmark: benchmark runs over the SIMULATED fleet with zero simulated latency.

    .venv/bin/python bench/pipeline.py [--kinds classifier,decider] [--models all|ID,ID]
                                       [--reps 1] [--slots 4]

Starts a simulated provider (PROVENROUTE_SIM_LATENCY_SCALE=0) and a real worker on a fresh
topic prefix (real Kafka, real Docker for decider jobs), saves a config over the fleet and
times one run per kind, from posting StartRun to reading RunCompleted. Prints per run:

- end-to-end run time (wall);
- orchestration overhead per case = (wall - model latency) / cases, where model latency is
  what the provider calls took (classifier: the call's wall time, which includes the
  retries the production client makes; decider: the harness's `model_latency_ms`) summed
  over cases and divided by the slots that ran in parallel — so with zero simulated latency
  nearly all of the wall time is overhead (target <= 50 ms per case);
- the same figure per slot (wall x slots / cases - model latency per case), i.e. what one
  case costs a job slot beyond its model calls;
- case busy time (mean CaseGraded.latency_ms) and the worker's peak RSS.

Simulated timeouts are wrong draws that would stall a case for the provider timeout; the
benchmark sets that timeout to 5 s and counts the time as model latency.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx

from api.commands.infra import ensure_topics
from api.settings import Settings
from api.sim.fleet import load_fleet
from contracts.admin import run_id_for
from contracts.commands import SaveBenchmarkConfig, StartRun
from contracts.config import BenchmarkConfig, DeciderModel, RunKind
from contracts.envelope import EventBase
from contracts.events import CaseGraded, CommandAccepted, CommandRejected, RunCompleted
from streams.log import EventReader, new_command_id, now_utc, post_command

ROOT = Path(__file__).resolve().parent.parent
EFFORT = {0: "low", 1: "low", 2: "medium", 3: "medium"}


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def peak_rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


@contextlib.contextmanager
def child(argv: list[str], env: dict[str, str], log: Path):  # type: ignore[no-untyped-def]
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            argv,
            env=env,
            cwd=log.parent,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            yield proc
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()


@dataclass
class RunFigures:
    kind: str
    models: int
    cases: int
    wall_s: float
    model_s: float
    busy_ms: float
    slots: int

    @property
    def overhead_ms(self) -> float:
        """(wall - model latency spread over the parallel slots) per case."""
        return (self.wall_s - self.model_s / self.slots) / self.cases * 1000

    @property
    def per_slot_ms(self) -> float:
        """A slot's time per case beyond its model calls."""
        return (self.wall_s * self.slots - self.model_s) / self.cases * 1000


WORKER: subprocess.Popen[bytes] | None = None
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
        if WORKER is not None and WORKER.poll() is not None:
            raise SystemExit(f"the worker exited with {WORKER.returncode}; see its log")
    raise TimeoutError("no answer from the worker")


async def one_run(settings: Settings, kind: RunKind, slots: int) -> RunFigures:
    command = StartRun(command_id=new_command_id(), issued_at=now_utc(), kind=kind, force=True)
    run_id = run_id_for(command.command_id)
    async with EventReader(settings, from_end=True) as reader:
        t0 = time.perf_counter()
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
    if any(isinstance(e, CommandRejected) for e in evs):
        raise SystemExit(f"run rejected: {evs}")
    graded = {e.event_id: e for e in evs if isinstance(e, CaseGraded) and e.run_id == run_id}
    if kind == "classifier":
        model_ms = sum(e.latency_ms for e in graded.values())
    else:
        model_ms = sum(float(e.diagnostics.get("model_latency_ms", 0)) for e in graded.values())
    return RunFigures(
        kind=kind,
        models=len({e.model for e in graded.values()}),
        cases=len(graded),
        wall_s=wall,
        model_s=model_ms / 1000,
        busy_ms=statistics.mean(e.latency_ms for e in graded.values()),
        slots=slots,
    )


async def save_config(settings: Settings, config: BenchmarkConfig) -> None:
    command = SaveBenchmarkConfig(command_id=new_command_id(), issued_at=now_utc(), config=config)
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
    settings = Settings(topic_prefix=prefix)
    asyncio.run(ensure_topics(settings.kafka_bootstrap, prefix))
    workdir = Path(tempfile.mkdtemp(prefix="provenroute-bench-pipeline-"))
    port = free_port()
    sim_url = f"http://127.0.0.1:{port}/v1"
    env = {
        **os.environ,
        "PROVENROUTE_SIM_LATENCY_SCALE": "0",
        "PROVENROUTE_TOPIC_PREFIX": prefix,
        "PROVENROUTE_PROVIDER_BASE_URL": sim_url,
        "PROVENROUTE_PROVIDER_TIMEOUT_S": "5",
        "PROVENROUTE_WORKER_JOB_SLOTS": str(args.slots),
    }
    cli = [sys.executable, "-m", "api.cli"]
    print(
        f"pipeline benchmark (SIMULATED fleet, zero latency): {len(models)} models, "
        f"reps {args.reps}, {args.slots} job slots; logs in {workdir}"
    )
    figures: list[RunFigures] = []
    with child([*cli, "sim-provider", "--port", str(port)], env, workdir / "sim.log"):
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{sim_url}/models", timeout=2).status_code == 200:
                    break
            time.sleep(0.2)
        with child([*cli, "worker", "--loglevel", "info"], env, workdir / "worker.log") as worker:
            global WORKER
            WORKER = worker
            asyncio.run(save_config(settings, config))
            for kind in args.kinds.split(","):
                fig = asyncio.run(one_run(settings, kind, args.slots))  # type: ignore[arg-type]
                figures.append(fig)
                print(f"  {kind} run done: {fig.cases} cases in {fig.wall_s:.1f}s", flush=True)
            rss = peak_rss_mb(worker.pid)
    print()
    print(
        f"{'run':<11}{'models':>7}{'cases':>7}{'run time s':>12}{'model s':>9}"
        f"{'overhead ms/case':>18}{'per slot ms/case':>18}{'case busy ms':>14}"
    )
    for f in figures:
        print(
            f"{f.kind:<11}{f.models:>7}{f.cases:>7}{f.wall_s:>12.1f}{f.model_s:>9.1f}"
            f"{f.overhead_ms:>18.1f}{f.per_slot_ms:>18.1f}{f.busy_ms:>14.1f}"
        )
    print(f"worker peak RSS: {rss:.0f} MB" if rss else "worker peak RSS: n/a")
    print("target: orchestration overhead <= 50 ms per case beyond the model's own latency")
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
