"""End-to-end fixtures: a SIMULATED provider and a real worker as child processes, on the
real broker and Docker engine, each test with its own topic prefix.

Helpers are synchronous: each Kafka interaction runs `asyncio.run` in a helper thread, so
tests never share an event loop with pytest-asyncio's fixtures.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
import uuid
from collections.abc import Callable, Coroutine, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest
from aiokafka import AIOKafkaConsumer

from contracts.commands import SaveBenchmarkConfig, SetClassifierOverride, StartRun
from contracts.config import BenchmarkConfig, RunKind
from contracts.envelope import EventBase
from contracts.events import (
    CaseGraded,
    CaseJobsFannedOut,
    CommandAccepted,
    CommandRejected,
    ModelSummarized,
    RunCompleted,
    RunModelCarried,
    RunModelEnqueued,
    RunStarted,
)
from infra.clock import utc_now
from infra.processes import ChildProcess, start_sim_provider, start_worker
from infra.settings import PROJECT_ROOT, Settings
from streams.event_log import EventReader, post_command, post_raw

T = TypeVar("T")

E2E_TIMEOUT_S = 240.0
"""Ceiling of any single wait: a hung pipeline fails the test instead of stalling CI."""


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/e2e" in str(item.fspath):
            item.add_marker(pytest.mark.integration)


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to completion on a fresh loop in a helper thread."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


def start_sim(workdir: Path, latency_scale: float) -> tuple[ChildProcess, str]:
    return start_sim_provider(workdir, os.environ, latency_scale=latency_scale)


@pytest.fixture(scope="session")
def sim_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A SIMULATED provider with zero latency, shared by the session."""
    proc, url = start_sim(tmp_path_factory.mktemp("sim"), 0.0)
    yield url
    proc.stop()


@pytest.fixture
def slow_sim_url(tmp_path: Path) -> Iterator[str]:
    """A SIMULATED provider with real (scaled) latency, to catch a run mid-flight."""
    proc, url = start_sim(tmp_path, float(os.environ.get("E2E_SLOW_SIM_SCALE", "0.05")))
    yield url
    proc.stop()


# --------------------------------------------------------------------- the pipeline
@dataclass
class RunResult:
    """Everything the log says about one run (duplicates kept: the log is at-least-once)."""

    run_id: str
    events: list[EventBase]

    def of(self, cls: type[T]) -> list[T]:
        return [e for e in self.events if isinstance(e, cls)]

    def one(self, cls: type[T]) -> T:
        """The event of `cls`, deduplicated by event id (a redelivery repeats the same id)."""
        found = {getattr(e, "event_id"): e for e in self.of(cls)}  # noqa: B009
        assert len(found) == 1, f"expected one {cls.__name__}, got {len(found)}"
        return next(iter(found.values()))

    @property
    def started(self) -> RunStarted:
        return self.one(RunStarted)

    @property
    def completed(self) -> RunCompleted:
        return self.one(RunCompleted)

    @property
    def fanned_out(self) -> CaseJobsFannedOut:
        return self.one(CaseJobsFannedOut)

    @property
    def enqueued(self) -> set[str]:
        return {e.model for e in self.of(RunModelEnqueued)}

    @property
    def carried(self) -> set[str]:
        return {e.model for e in self.of(RunModelCarried)}

    @property
    def graded(self) -> list[CaseGraded]:
        return self.of(CaseGraded)

    @property
    def summaries(self) -> dict[tuple[str, str], ModelSummarized]:
        """By (model, tier); duplicates of one summary id collapse."""
        out: dict[tuple[str, str], ModelSummarized] = {}
        for e in self.of(ModelSummarized):
            key = (e.summary.model, e.summary.tier)
            assert key not in out or out[key].event_id == e.event_id
            out[key] = e
        return out


@dataclass
class Pipeline:
    """One test's world: its topic prefix, a SIMULATED provider and a worker process."""

    settings: Settings
    sim_url: str
    workdir: Path
    worker_env_extra: dict[str, str] = field(default_factory=dict)
    workers: list[ChildProcess] = field(default_factory=list)

    @property
    def prefix(self) -> str:
        return self.settings.topic_prefix

    # -- processes
    def worker_env(self) -> dict[str, str]:
        return {
            **os.environ,
            "PROVENROUTE_TOPIC_PREFIX": self.prefix,
            "PROVENROUTE_PROVIDER_BASE_URL": self.sim_url,
            "PROVENROUTE_PROVIDER_TIMEOUT_S": "20",
            # A SIGKILLed member holds its partitions until its session expires; Faust's
            # default (60 s) would stall the restarted worker for a minute.
            "BROKER_SESSION_TIMEOUT": "10",
            "BROKER_HEARTBEAT_INTERVAL": "1",
            **self.worker_env_extra,
        }

    def start_worker(self, **env: str) -> ChildProcess:
        """A worker process; `env` adds variables (e.g. PROVENROUTE_FAULT) to this one."""
        # cwd is the test's tmp dir: Faust writes its data dir into the working directory.
        n = len(self.workers)
        proc = start_worker(self.workdir, {**self.worker_env(), **env}, name=f"worker-{n}")
        self.workers.append(proc)
        return proc

    @property
    def worker(self) -> ChildProcess:
        return self.workers[-1]

    def stop(self) -> None:
        for w in self.workers:
            w.stop()

    def diagnostics(self) -> str:
        return "\n".join(w.tail() for w in self.workers)

    # -- commands
    def post(self, command: SaveBenchmarkConfig | StartRun | SetClassifierOverride) -> str:
        run_async(post_command(self.settings, command))
        return command.command_id

    def post_raw(self, value: bytes) -> None:
        run_async(post_raw(self.settings, value))

    def save_config(self, config: BenchmarkConfig) -> CommandAccepted:
        cid = self.post(
            SaveBenchmarkConfig(command_id=new_id(), issued_at=utc_now(), config=config)
        )
        outcome = self.outcome(cid)
        assert isinstance(outcome, CommandAccepted), outcome
        return outcome

    def start_run(self, kind: RunKind, *, force: bool = False) -> str:
        """Post StartRun and return its run id once accepted."""
        from contracts.command_decider import run_id_for

        cid = self.post(StartRun(command_id=new_id(), issued_at=utc_now(), kind=kind, force=force))
        outcome = self.outcome(cid)
        assert isinstance(outcome, CommandAccepted), outcome
        return run_id_for(cid)

    # -- the log
    def outcome(
        self, command_id: str, timeout_s: float = 120.0
    ) -> CommandAccepted | CommandRejected:
        def answered(evs: Sequence[EventBase]) -> bool:
            return any(_is_outcome(e, command_id) for e in evs)

        evs = self.wait(answered, timeout_s)
        return next(e for e in evs if _is_outcome(e, command_id))  # type: ignore[return-value]

    def run(self, run_id: str, timeout_s: float = E2E_TIMEOUT_S) -> RunResult:
        """Wait for the run's RunCompleted, then return the run's events."""

        def done(evs: Sequence[EventBase]) -> bool:
            return any(isinstance(e, RunCompleted) and e.run_id == run_id for e in evs)

        evs = self.wait(done, timeout_s)
        # RunCompleted is the last event of the run's completion batch on its partition,
        # so everything the completion published has been read already.
        return RunResult(run_id, [e for e in evs if getattr(e, "run_id", None) == run_id])

    def events(self) -> list[EventBase]:
        """Every event on the log so far."""

        async def go() -> list[EventBase]:
            out: list[EventBase] = []
            async with EventReader(self.settings) as reader:
                async for ev in reader.history():
                    out.append(ev)
            return out

        return run_async(go())

    def wait(
        self, predicate: Callable[[Sequence[EventBase]], bool], timeout_s: float = E2E_TIMEOUT_S
    ) -> list[EventBase]:
        """Read the log from the start until `predicate(all events so far)` holds."""

        async def go() -> list[EventBase]:
            seen: list[EventBase] = []
            deadline = time.monotonic() + timeout_s
            async with EventReader(self.settings) as reader:
                while time.monotonic() < deadline:
                    seen += await reader.poll(0.3)
                    if predicate(seen):
                        return seen
                    if self.workers and not any(w.alive() for w in self.workers):
                        break
                c = reader.consumer
                where = {tp.partition: (await c.position(tp), c.highwater(tp)) for tp in reader.tps}
            raise TimeoutError(
                f"condition not met within {timeout_s:.0f}s ({len(seen)} events read; "
                f"partition: (position, highwater) {where})"
            )

        try:
            return run_async(go())
        except TimeoutError as e:
            raise AssertionError(f"{e}\n{self.diagnostics()}") from e

    def raw_topic(self, name: str, timeout_s: float = 10.0) -> list[bytes]:
        """Raw values of a (small) topic of this prefix, read from the start."""

        async def go() -> list[bytes]:
            consumer = AIOKafkaConsumer(
                self.settings.topic(name),
                bootstrap_servers=self.settings.kafka_bootstrap,
                enable_auto_commit=False,
                group_id=None,
                auto_offset_reset="earliest",
            )
            await consumer.start()
            try:
                out: list[bytes] = []
                deadline = time.monotonic() + timeout_s
                while time.monotonic() < deadline:
                    batch = await consumer.getmany(timeout_ms=300)
                    for msgs in batch.values():
                        out += [m.value for m in msgs if m.value is not None]
                    if out and not batch:
                        break
                return out
            finally:
                await consumer.stop()

        return run_async(go())


def _is_outcome(e: EventBase, command_id: str) -> bool:
    return isinstance(e, CommandAccepted | CommandRejected) and e.correlation_id == command_id


def new_id() -> str:
    return str(uuid.uuid4())


LOG_ROOT = Path(os.environ.get("E2E_LOG_DIR", "/tmp/provenroute-e2e"))
"""Worker logs and Faust data dirs live here, one folder per topic prefix (kept for
post-mortems: pytest's tmp dirs rotate away while other suites run)."""


def _pipeline(settings: Settings, sim: str, _tmp: Path) -> Pipeline:
    workdir = LOG_ROOT / settings.topic_prefix.rstrip(".")
    workdir.mkdir(parents=True, exist_ok=True)
    return Pipeline(settings=settings, sim_url=sim, workdir=workdir)


@pytest.fixture
def pipeline(
    kafka_prefix: str, settings_for: Callable[..., Settings], sim_url: str, tmp_path: Path
) -> Iterator[Pipeline]:
    """A running worker on a fresh topic prefix, wired to the zero-latency sim."""
    p = _pipeline(settings_for(kafka_prefix), sim_url, tmp_path)
    p.start_worker()
    yield p
    p.stop()


@pytest.fixture
def idle_pipeline(
    kafka_prefix: str, settings_for: Callable[..., Settings], sim_url: str, tmp_path: Path
) -> Iterator[Pipeline]:
    """Like `pipeline`, but the test starts (and may kill) workers itself."""
    p = _pipeline(settings_for(kafka_prefix), sim_url, tmp_path)
    yield p
    p.stop()


@pytest.fixture
def slow_pipeline(
    kafka_prefix: str, settings_for: Callable[..., Settings], slow_sim_url: str, tmp_path: Path
) -> Iterator[Pipeline]:
    """No worker yet, wired to a sim with latency (for the kill test)."""
    p = _pipeline(settings_for(kafka_prefix), slow_sim_url, tmp_path)
    yield p
    p.stop()


@pytest.fixture(scope="session", autouse=True)
def _clean_containers_after() -> Iterator[None]:
    """Sweep job containers SIGKILLed workers of this session left behind."""
    yield
    with contextlib.suppress(Exception):
        import docker

        from streams.janitor import remove_stale_containers

        remove_stale_containers(docker.from_env())


__all__ = ["PROJECT_ROOT", "ChildProcess", "Pipeline", "RunResult", "new_id", "utc_now"]
