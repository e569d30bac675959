"""Chaos benchmark: a classifier run under a fault must still give exactly one result per
(run, model, case, rep) and the same classifier winner as an uninterrupted run.

    .venv/bin/python -m bench.chaos [--scenario worker-kill|broker-restart|postgres-outage|all]

DESIGN.md, quality bars: "kill -9 of a worker, a broker restart or a Postgres outage mid-run:
the run completes with exactly one result per (run, model, case, rep) and the same routing
table". Every scenario uses its own topic prefix, a private SIMULATED provider (latency scaled
by --latency-scale so a run lasts tens of seconds) and its own worker process(es):

- baseline         an uninterrupted run (same config) on the shared broker: the reference;
- worker-kill      SIGKILL the worker once a share of the results is in, start a new one;
- broker-restart   a PRIVATE KRaft broker (same jars, own ports, own temp data dir) that is
                   stopped with SIGTERM mid-run, left down for --outage-s, started again;
- postgres-outage  the projector (`provenroute project`) writes into a fresh schema through a
                   private TCP proxy to the shared Postgres; the proxy is cut for --outage-s
                   mid-run; afterwards the projected rows must match the log.

Checks per scenario: the run completes; the distinct CaseGraded keys == expected_results of
CaseJobsFannedOut, each key under exactly one event id; ModelSummarized graded counts sum to
it (one summary per (model, tier)); the ClassifierWinnerPublished and every (model, tier)
summary (accuracy, graded, cost) equal the baseline's (the simulated provider is
deterministic per (model, case, rep); latency is wall-clock and not compared; the config
sets no p95 budget, so latency cannot move the winner).

Nothing shared is restarted: the shared broker, Postgres and dockerd keep running; the run
deletes the topics and drops the schema it created, kills the processes it started and
removes the private broker's data directory.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import re
import shutil
import signal
import sys
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psycopg
from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient

from bench.chaos_support import (
    PgProxy,
    PrivateKafka,
    RssSampler,
    Tail,
    run_async,
    wait_until,
)
from contracts.command_decider import run_id_for
from contracts.commands import SaveBenchmarkConfig, StartRun
from contracts.config import BenchmarkConfig, DeciderModel
from contracts.envelope import EventBase, iso_utc
from contracts.events import (
    CaseGraded,
    CaseJobDeadLettered,
    CaseJobsFannedOut,
    ClassifierWinnerPublished,
    CommandAccepted,
    CommandRejected,
    ModelSummarized,
    RunCompleted,
)
from infra.processes import ChildProcess, cli, start_sim_provider
from infra.settings import Settings, assume_dev
from streams.event_log import EventReader, post_command
from streams.kafka_admin import ensure_topics
from streams.topics import DECISIONS, EVENTS

SCENARIOS = ("worker-kill", "broker-restart", "postgres-outage")
LOG_ROOT = Path("/tmp/provenroute-chaos")

# Four SIMULATED models without timeout failures (a simulated timeout costs the worker its
# whole client timeout) and without the slow sim/reasoner, so a run lasts tens of seconds.
CONFIG = BenchmarkConfig(
    classifierModels=("sim/tiny", "sim/flash-lite", "sim/balanced", "sim/frontier"),
    deciderModels=(DeciderModel(model="sim/balanced"),),
    minAccuracy=0.7,
    maxConcurrency=4,
    classifierRepetitions=1,
    classifierMaxP95LatencyMs=None,  # wall-clock latency must not be able to move the winner
)


E = TypeVar("E", bound=EventBase)


def now_iso() -> str:
    from datetime import UTC

    return iso_utc(datetime.now(UTC))


def new_id() -> str:
    return str(uuid.uuid4())


# --------------------------------------------------------------------------- results
@dataclass
class Check:
    name: str
    ok: bool
    detail: str = ""


@dataclass
class Outcome:
    scenario: str
    checks: list[Check] = field(default_factory=list)
    fault: str = "-"
    timings: dict[str, float] = field(default_factory=dict)
    rss_mb: dict[str, float] = field(default_factory=dict)
    """Peak RSS per process (worker-0, worker-1, projector, broker)."""
    notes: list[str] = field(default_factory=list)
    winner: tuple[Any, ...] | None = None
    summaries: dict[tuple[str, str], tuple[Any, ...]] = field(default_factory=dict)
    error: str | None = None
    logs: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.error is None and bool(self.checks) and all(c.ok for c in self.checks)

    def check(self, name: str, ok: bool, detail: str = "") -> bool:
        self.checks.append(Check(name, bool(ok), detail))
        return bool(ok)


# --------------------------------------------------------------------------- the log
async def _read_all(settings: Settings) -> list[EventBase]:
    out: list[EventBase] = []
    async with EventReader(settings) as reader:
        async for ev in reader.history():
            out.append(ev)
    return out


def read_all(settings: Settings, attempts: int = 5) -> list[EventBase]:
    for i in range(attempts):
        try:
            return run_async(_read_all(settings))
        except Exception:
            if i == attempts - 1:
                raise
            time.sleep(2)
    return []


def winner_key(w: ClassifierWinnerPublished) -> tuple[Any, ...]:
    x = w.winner
    cost = None if x.avgCostUsd is None else round(x.avgCostUsd, 12)
    return (x.model, round(x.accuracy, 9), cost, x.reason)


def summary_key(s: ModelSummarized) -> tuple[Any, ...]:
    x = s.summary
    cost = None if x.avg_cost_usd is None else round(x.avg_cost_usd, 12)
    return (x.graded, round(x.accuracy, 9), cost, x.timeouts, x.carried)


def verify_log(out: Outcome, run_id: str, events: list[EventBase], baseline: Outcome | None) -> int:
    """The log-level checks; returns the distinct result count."""
    mine = [e for e in events if getattr(e, "run_id", None) == run_id]

    def distinct(cls: type[E]) -> list[E]:
        """Events of `cls`, deduplicated by event id (a redelivery repeats the same id)."""
        return list({e.event_id: e for e in mine if isinstance(e, cls)}.values())

    completed = distinct(RunCompleted)
    out.check("run completed", len(completed) == 1, f"{len(completed)} distinct RunCompleted")
    fanned = distinct(CaseJobsFannedOut)
    expected = fanned[0].expected_results if len(fanned) == 1 else -1
    want = len(CONFIG.classifierModels) * 72 * CONFIG.classifierRepetitions
    out.check("expected_results", expected == want, f"fan-out says {expected}, config {want}")

    graded = [e for e in mine if isinstance(e, CaseGraded)]
    ids: dict[tuple[str, str, int], set[str]] = defaultdict(set)
    scores: dict[tuple[str, str, int], set[float]] = defaultdict(set)
    for g in graded:
        key = (g.model, g.case_id, g.rep)
        ids[key].add(g.event_id)
        scores[key].add(g.score)
    multi_id = sum(1 for v in ids.values() if len(v) > 1)
    conflicting = sum(1 for v in scores.values() if len(v) > 1)
    dups = len(graded) - len(ids)
    dead = sum(len(d.case_ids) for d in distinct(CaseJobDeadLettered))
    out.check(
        "one CaseGraded per key",
        len(ids) == expected and multi_id == 0 and dead == 0,
        f"{len(ids)} distinct / {expected} expected, {dups} duplicate deliveries, "
        f"{multi_id} keys with >1 event id, {dead} dead-lettered",
    )
    if conflicting:
        out.notes.append(f"{conflicting} keys re-executed with a different score")
    if completed:
        c = completed[0]
        out.check(
            "RunCompleted counts",
            c.graded == expected and c.ungraded == 0,
            f"graded {c.graded}, ungraded {c.ungraded}, expected {c.expected}",
        )

    per_mt: dict[tuple[str, str], set[str]] = defaultdict(set)
    summaries: dict[tuple[str, str], ModelSummarized] = {}
    for sm in distinct(ModelSummarized):
        mt = (sm.summary.model, sm.summary.tier)
        per_mt[mt].add(sm.event_id)
        summaries[mt] = sm
    total = sum(s.summary.graded for s in summaries.values() if not s.summary.carried)
    out.check(
        "summaries sum to expected",
        total == expected and all(len(v) == 1 for v in per_mt.values()),
        f"sum graded {total} over {len(summaries)} (model, tier) summaries",
    )
    out.summaries = {k: summary_key(v) for k, v in summaries.items()}

    winners = distinct(ClassifierWinnerPublished)
    if out.check("one winner published", len(winners) == 1, f"{len(winners)} distinct"):
        out.winner = winner_key(winners[0])
    if baseline is not None:
        out.check(
            "winner == baseline",
            out.winner is not None and out.winner == baseline.winner,
            f"{out.winner} vs {baseline.winner}",
        )
        diff = [
            k
            for k in set(out.summaries) | set(baseline.summaries)
            if out.summaries.get(k) != baseline.summaries.get(k)
        ]
        out.check(
            "summaries == baseline",
            not diff,
            "identical" if not diff else f"differ at {sorted(diff)[:4]}",
        )
    return len(ids)


# --------------------------------------------------------------------------- the session
@dataclass
class Session:
    args: argparse.Namespace
    base: Settings
    workdir: Path
    sim_url: str
    rss: RssSampler
    baseline: Outcome | None = None


class Scenario:
    """One prefix, one tail, worker processes; subclasses inject the fault."""

    name = "baseline"
    bootstrap_is_private = False

    def __init__(self, session: Session) -> None:
        self.s = session
        self.args = session.args
        self.out = Outcome(self.name)
        short = {
            "baseline": "base",
            "worker-kill": "kill",
            "broker-restart": "brk",
            "postgres-outage": "pg",
        }[self.name]
        self.prefix = f"chaos-{short}-{uuid.uuid4().hex[:8]}."
        self.dir = session.workdir / self.name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.workers: list[ChildProcess] = []
        self.children: list[ChildProcess] = []
        self._tail: Tail | None = None
        self.settings: Settings = session.base
        self.run_id = ""
        self.expected = 0
        self.cleanups: list[Callable[[], None]] = []

    @property
    def tail(self) -> Tail:
        assert self._tail is not None, "set up first"
        return self._tail

    # -- set-up / tear-down ------------------------------------------------------------
    def bootstrap(self) -> str:
        return self.s.base.kafka_bootstrap

    def setup(self) -> None:
        self.settings = self.s.base.model_copy(
            update={"topic_prefix": self.prefix, "kafka_bootstrap": self.bootstrap()}
        )
        run_async(ensure_topics(self.settings.kafka_bootstrap, self.prefix))
        if not self.bootstrap_is_private:
            self.cleanups.append(self._delete_topics)
        self._tail = Tail(self.settings)
        self.cleanups.append(self._tail.close)

    def _delete_topics(self) -> None:
        async def go() -> list[str]:
            admin = AIOKafkaAdminClient(bootstrap_servers=self.settings.kafka_bootstrap)
            await admin.start()
            try:
                names = [t for t in await admin.list_topics() if t.startswith(self.prefix)]
                if names:
                    await admin.delete_topics(names)
                return names
            finally:
                await admin.close()

        try:
            names = run_async(go())
            self.out.notes.append(f"deleted {len(names)} topics {self.prefix}*")
        except Exception as e:
            self.out.notes.append(f"could not delete topics {self.prefix}*: {e!r}")

    def teardown(self) -> None:
        for c in self.children:
            c.stop()
            if c.peak_rss_kb:
                self.out.rss_mb[c.name] = c.peak_rss_mb
        for fn in reversed(self.cleanups):
            with contextlib.suppress(Exception):
                fn()
        for d in self.dir.glob("*-data"):  # Faust data dirs (cwd of the workers)
            shutil.rmtree(d, ignore_errors=True)

    # -- processes ---------------------------------------------------------------------
    def env(self) -> dict[str, str]:
        import os

        return {
            **os.environ,
            "PROVENROUTE_TOPIC_PREFIX": self.prefix,
            "PROVENROUTE_KAFKA_BOOTSTRAP": self.settings.kafka_bootstrap,
            "PROVENROUTE_PROVIDER_BASE_URL": self.s.sim_url,
            "PROVENROUTE_PROVIDER_TIMEOUT_S": "20",
            # A SIGKILLed member holds its partitions until its session expires.
            "BROKER_SESSION_TIMEOUT": "10",
            "BROKER_HEARTBEAT_INTERVAL": "1",
        }

    def spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> ChildProcess:
        child = self.s.rss.add(ChildProcess(name, argv, env or self.env(), self.dir))
        self.children.append(child)
        return child

    def start_worker(self) -> ChildProcess:
        w = self.spawn(f"worker-{len(self.workers)}", cli("worker", "--loglevel", "info"))
        self.workers.append(w)
        return w

    def any_worker_alive(self) -> bool:
        return any(w.alive() for w in self.workers)

    # -- commands ----------------------------------------------------------------------
    def post_and_wait(self, command: Any, timeout_s: float = 180.0) -> EventBase:
        run_async(post_command(self.settings, command))
        cid = command.command_id

        def answered() -> bool:
            return bool(
                self.tail.seen(
                    lambda e: (
                        isinstance(e, CommandAccepted | CommandRejected) and e.correlation_id == cid
                    )
                )
            )  # type: ignore[union-attr]

        wait_until(answered, timeout_s, f"answer to {command.type}", alive=self.any_worker_alive)
        ev = self.tail.seen(
            lambda e: (
                getattr(e, "correlation_id", None) == cid
                and isinstance(e, CommandAccepted | CommandRejected)
            )
        )[0]
        if isinstance(ev, CommandRejected):
            raise RuntimeError(f"{command.type} rejected: {ev.reason}")
        return ev

    # -- the run -----------------------------------------------------------------------
    def mid_run(self) -> None:
        """Wait until --fault-at of the results are in (the run far from finished)."""
        target = max(1, int(self.expected * self.args.fault_at))
        wait_until(
            lambda: self.tail.distinct(self.run_id) >= target,
            300,
            f"{target} results",
            alive=self.any_worker_alive,
        )

    def fault(self) -> None:
        """Inject the scenario's fault (baseline: none)."""

    def execute(self) -> Outcome:
        out = self.out
        t0 = time.monotonic()
        try:
            self.setup()
            out.timings["setup s"] = time.monotonic() - t0
            self.start_worker()
            t = time.monotonic()
            self.post_and_wait(
                SaveBenchmarkConfig(command_id=new_id(), issued_at=now_iso(), config=CONFIG)
            )
            out.timings["worker ready s"] = time.monotonic() - t
            start = StartRun(command_id=new_id(), issued_at=now_iso(), kind="classifier")
            t_run = time.monotonic()
            self.post_and_wait(start)
            self.run_id = run_id_for(start.command_id)
            wait_until(
                lambda: bool(
                    self.tail.seen(
                        lambda e: isinstance(e, CaseJobsFannedOut) and e.run_id == self.run_id
                    )
                ),
                60,
                "fan-out",
            )
            fan = self.tail.seen(
                lambda e: isinstance(e, CaseJobsFannedOut) and e.run_id == self.run_id
            )[0]
            self.expected = fan.expected_results  # type: ignore[attr-defined]
            self.fault()
            wait_until(
                lambda: self.tail.completed(self.run_id),
                self.args.timeout,
                "RunCompleted",
                alive=self.any_worker_alive,
            )
            out.timings["run s"] = time.monotonic() - t_run
            self.after_run()
            events = read_all(self.settings)
            verify_log(out, self.run_id, events, self.s.baseline)
            self.extra_checks(events)
        except Exception as e:
            out.error = f"{type(e).__name__}: {e}"
            with contextlib.suppress(Exception):
                out.notes += self.diagnose()
            out.logs += [c.tail() for c in self.children]
        finally:
            for c in self.children:
                c.sample()
            out.timings["total s"] = time.monotonic() - t0
            self.teardown()
        return out

    def after_run(self) -> None:
        pass

    def diagnose(self) -> list[str]:
        """What the log and the consumer group say when a run did not complete: results
        missing per job, the group's committed offsets against the end offsets, and every
        event of the prefix dumped to events.jsonl (the topics are deleted afterwards)."""
        from contracts.codec import encode_event
        from contracts.jobs import plan_jobs
        from datasets.loader import load_classifier_cases

        notes: list[str] = []
        events = read_all(self.settings)
        with open(self.dir / "events.jsonl", "wb") as f:
            for e in events:
                f.write(encode_event(e) + b"\n")
        mine = [e for e in events if getattr(e, "run_id", None) == self.run_id]
        got = {(e.model, e.case_id, e.rep) for e in mine if isinstance(e, CaseGraded)}
        kinds = Counter(e.type for e in mine)
        notes.append(f"log: {len(got)}/{self.expected} distinct results; events {dict(kinds)}")
        cases = sorted(c.id for c in load_classifier_cases())
        jobs = plan_jobs(
            run_id=self.run_id,
            kind="classifier",
            models=[(m, None) for m in CONFIG.classifierModels],
            case_ids=cases,
            repetitions=CONFIG.classifierRepetitions,
            credential=None,
            correlation_id=None,
        )
        missing = {
            j.job_id.split(":", 1)[-1]: [c for c in j.case_ids if (j.model, c, j.rep) not in got]
            for j in jobs
        }
        missing = {k: v for k, v in missing.items() if v}
        notes.append(
            f"jobs with missing results ({len(missing)}): {dict(list(missing.items())[:6])}"
        )

        async def offsets() -> list[str]:

            admin = AIOKafkaAdminClient(bootstrap_servers=self.settings.kafka_bootstrap)
            consumer = AIOKafkaConsumer(bootstrap_servers=self.settings.kafka_bootstrap)
            await admin.start()
            await consumer.start()
            try:
                group = f"{self.prefix}worker"
                committed = await admin.list_consumer_group_offsets(group)
                out = []
                for name in ("case-jobs", "events", "commands"):
                    topic = self.settings.topic(name)
                    tps = [tp for tp in committed if tp.topic == topic]
                    ends = await consumer.end_offsets(tps) if tps else {}
                    lag = {
                        tp.partition: ends[tp] - committed[tp].offset
                        for tp in tps
                        if ends[tp] != committed[tp].offset
                    }
                    out.append(
                        f"group {group} {name}: committed {sum(committed[tp].offset for tp in tps)}"
                        f" / end {sum(ends.values())}, lag by partition {lag}"
                    )
                return out
            finally:
                await consumer.stop()
                await admin.close()

        notes += run_async(offsets())
        return notes

    def extra_checks(self, events: list[EventBase]) -> None:
        pass

    def first_result_after(self, moment: float) -> float | None:
        """Seconds from `moment` to the first result key first seen after it."""
        w = self.tail.watch(self.run_id)
        later = [t for t in list(w.first_seen.values()) if t > moment]
        return min(later) - moment if later else None


# --------------------------------------------------------------------------- scenarios
class Baseline(Scenario):
    name = "baseline"


class WorkerKill(Scenario):
    name = "worker-kill"

    def fault(self) -> None:
        self.mid_run()
        n = self.tail.distinct(self.run_id)
        victim = self.workers[-1]
        victim.kill9()
        t_kill = time.monotonic()
        done_before = self.tail.completed(self.run_id)
        self.out.fault = f"SIGKILL at {n}/{self.expected}"
        self.out.check(
            "fault hit mid-run",
            not done_before and n < self.expected,
            f"{n}/{self.expected} results when killed",
        )
        time.sleep(0.5)
        self.start_worker()
        self.t_restart = time.monotonic()
        self.t_kill = t_kill

    def after_run(self) -> None:
        gap = self.first_result_after(self.t_restart)
        if gap is not None:
            self.out.timings["resume s"] = gap


class BrokerRestart(Scenario):
    name = "broker-restart"
    bootstrap_is_private = True

    def bootstrap(self) -> str:
        t = time.monotonic()
        self.kafka = PrivateKafka(self.dir / "kafka-logs")
        self.cleanups.append(self.kafka.destroy)
        self.kafka.format()
        self.kafka.start()
        self.kafka.wait_ready(120)
        self.out.timings["broker up s"] = time.monotonic() - t
        self.out.notes.append(
            f"private broker 127.0.0.1:{self.kafka.port} (controller {self.kafka.controller_port}),"
            f" data {self.kafka.data_root}"
        )
        return self.kafka.bootstrap

    def fault(self) -> None:
        self.mid_run()
        n = self.tail.distinct(self.run_id)
        self.kafka.sample()
        t_down = time.monotonic()
        stop_s = self.kafka.stop(signal.SIGTERM)
        time.sleep(max(0.0, self.args.outage_s - stop_s))
        alive_during = [w.alive() for w in self.workers]
        self.kafka.start()
        ready_s = self.kafka.wait_ready(120)
        t_up = time.monotonic()
        self.t_up = t_up
        self.out.timings["broker stop s"] = stop_s
        self.out.timings["outage s"] = t_up - t_down
        self.out.timings["broker ready s"] = ready_s
        self.out.fault = f"SIGTERM broker at {n}/{self.expected}"
        self.out.check(
            "fault hit mid-run",
            n < self.expected and not self.tail.completed(self.run_id),
            f"{n}/{self.expected} results when stopped",
        )
        self.out.check(
            "worker survived the outage",
            all(alive_during) and self.any_worker_alive(),
            f"alive during outage: {alive_during}",
        )
        if not self.any_worker_alive():
            self.out.notes.append("worker exited during the outage; harness restarted it")
            self.start_worker()

    def after_run(self) -> None:
        self.kafka.sample()
        gap = self.first_result_after(self.t_up)
        if gap is not None:
            self.out.timings["resume s"] = gap
        self.out.rss_mb["broker"] = self.kafka.peak_rss_kb / 1024


class PostgresOutage(Scenario):
    name = "postgres-outage"

    def setup(self) -> None:
        super().setup()
        self.schema = f"chaos_{uuid.uuid4().hex[:10]}"
        url = self.s.base.database_url
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f'create schema "{self.schema}"')
        self.cleanups.append(self._drop_schema)
        info = psycopg.conninfo.conninfo_to_dict(url)
        self.proxy = PgProxy(str(info.get("host") or "127.0.0.1"), int(info.get("port") or 5432))
        self.cleanups.append(self.proxy.close)
        self.proxy.start()
        info["port"] = str(self.proxy.port)
        env = {
            **self.env(),
            "PROVENROUTE_DATABASE_URL": psycopg.conninfo.make_conninfo("", **info),
            "PROVENROUTE_DB_SCHEMA": self.schema,
        }
        self.projector = self.spawn("projector", cli("project", "--schema", self.schema), env)
        self.out.notes.append(f"schema {self.schema}, proxy 127.0.0.1:{self.proxy.port}")

    def _drop_schema(self) -> None:
        with psycopg.connect(self.s.base.database_url, autocommit=True) as conn:
            conn.execute(f'drop schema if exists "{self.schema}" cascade')
        self.out.notes.append(f"dropped schema {self.schema}")

    def query(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        with psycopg.connect(
            self.s.base.database_url, autocommit=True, options=f"-c search_path={self.schema}"
        ) as conn:
            return conn.execute(sql, params).fetchall()

    def projected_offsets(self) -> int:
        try:
            return int(
                self.query("select coalesce(sum(next_offset), 0) from projection_offsets")[0][0]
            )
        except psycopg.Error:
            return 0  # tables not migrated yet

    def fault(self) -> None:
        self.mid_run()
        wait_until(
            lambda: self.projected_offsets() > 0,
            60,
            "projector committed",
            alive=self.projector.alive,
        )
        n = self.tail.distinct(self.run_id)
        t_cut = time.monotonic()
        self.proxy.cut()
        # A COMMIT already on the wire may still land: sample once the cut has settled.
        time.sleep(1.0)
        before = self.projected_offsets()
        time.sleep(max(0.0, self.args.outage_s - 1.0))
        during = self.projected_offsets()
        n_after = self.tail.distinct(self.run_id)
        self.proxy.start()  # same port
        self.t_up = time.monotonic()
        self.out.timings["outage s"] = self.t_up - t_cut
        with contextlib.suppress(TimeoutError, RuntimeError):  # checked after the run anyway
            self.out.timings["resume s"] = wait_until(
                lambda: self.projected_offsets() > during,
                60,
                "projector resumed",
                alive=self.projector.alive,
                interval_s=0.1,
            )
        self.out.fault = f"proxy cut at {n}/{self.expected}"
        self.out.check(
            "fault hit mid-projection",
            n < self.expected and during == before and n_after > n,
            f"offsets {before} -> {during} while cut; results {n} -> {n_after}",
        )

    def end_offsets(self) -> int:
        async def go() -> int:
            c = AIOKafkaConsumer(bootstrap_servers=self.settings.kafka_bootstrap)
            await c.start()
            try:
                from aiokafka import TopicPartition

                tps = []
                for spec in (EVENTS, DECISIONS):
                    topic = self.settings.topic(spec.name)
                    tps += [TopicPartition(topic, p) for p in range(spec.partitions)]
                return sum((await c.end_offsets(tps)).values())
            finally:
                await c.stop()

        return int(run_async(go()))

    def after_run(self) -> None:
        t = time.monotonic()
        end = self.end_offsets()
        try:
            wait_until(
                lambda: self.projected_offsets() >= end,
                120,
                "projector caught up",
                alive=self.projector.alive,
                interval_s=0.5,
            )
            self.out.timings["catch-up s"] = time.monotonic() - t
        except (TimeoutError, RuntimeError) as e:
            self.out.check("projector caught up", False, str(e))

    def extra_checks(self, events: list[EventBase]) -> None:
        self.out.check("projector alive after outage", self.projector.alive())
        self.projector.stop()
        text = self.projector.text()
        m = re.search(r"(\d+) events applied, (\d+) ignored, (\d+) failed, (\d+) reconnects", text)
        reconnects = int(m.group(4)) if m else -1
        lost = text.count("lost the database") + text.count("database unavailable")
        self.out.check(
            "projector noticed the outage",
            reconnects >= 1 or lost > 0,
            f"{reconnects} reconnects, {lost} outage log lines",
        )
        if m:
            self.out.notes.append(f"projector: {m.group(0)}")

        rid = self.run_id
        rows = self.query(
            "select count(*), count(distinct (model, case_id, rep))"
            " from case_results where run_id = %s",
            rid,
        )[0]
        distinct_log = len(
            {
                (e.model, e.case_id, e.rep)
                for e in events
                if isinstance(e, CaseGraded) and e.run_id == rid
            }
        )
        self.out.check(
            "case_results == distinct results",
            rows[0] == rows[1] == distinct_log == self.expected,
            f"{rows[0]} rows, {rows[1]} distinct, log {distinct_log}",
        )
        proj = {
            (m_, t_): (g, round(a, 9))
            for m_, t_, g, a in self.query(
                "select model, tier, graded, accuracy from model_summaries where run_id = %s", rid
            )
        }
        logged = {
            (e.summary.model, e.summary.tier): (e.summary.graded, round(e.summary.accuracy, 9))
            for e in events
            if isinstance(e, ModelSummarized) and e.run_id == rid
        }
        self.out.check(
            "model_summaries == log",
            proj == logged,
            f"{len(proj)} projected, {len(logged)} on the log",
        )
        win = self.query("select model from classifier_winners where run_id = %s", rid)
        self.out.check(
            "classifier_winners == log",
            [w[0] for w in win] == [self.out.winner[0] if self.out.winner else None],
            f"{win}",
        )
        errors = self.query("select count(*) from projection_errors")[0][0]
        self.out.check("no projection_errors", errors == 0, f"{errors}")
        dup = self.query(
            "select count(*) from (select 1 from case_results where run_id = %s"
            " group by model, case_id, rep having count(*) > 1) d",
            rid,
        )[0][0]
        if dup:
            self.out.notes.append(f"{dup} duplicated case_results keys")


CLASSES: dict[str, type[Scenario]] = {
    "worker-kill": WorkerKill,
    "broker-restart": BrokerRestart,
    "postgres-outage": PostgresOutage,
}


# --------------------------------------------------------------------------- main
def start_sim(workdir: Path, scale: float, rss: RssSampler) -> tuple[ChildProcess, str]:
    import os

    sim, url = start_sim_provider(workdir, os.environ, latency_scale=scale, name="sim")
    return rss.add(sim), url


def code_version() -> str:
    """HEAD plus a digest of the pipeline's sources as they are on disk (the tree may carry
    uncommitted work: the digest says which code the workers ran)."""
    import hashlib
    import subprocess

    root = Path(__file__).resolve().parent.parent
    head = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True
    ).stdout.strip()
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--", "streams", "contracts", "projections", "api"],
        cwd=root,
        capture_output=True,
        text=True,
    ).stdout.splitlines()
    digest = hashlib.sha256()
    for package in ("streams", "contracts", "projections", "api"):
        for f in sorted((root / package).rglob("*.py")):
            digest.update(f.read_bytes())
    return f"{head or '?'} (+{len(dirty)} uncommitted files, sources {digest.hexdigest()[:10]})"


def print_table(outcomes: list[Outcome], args: argparse.Namespace) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=200)
    t = Table(
        title=f"chaos: classifier run, {len(CONFIG.classifierModels)} SIMULATED models x 72 "
        f"cases x {CONFIG.classifierRepetitions} rep, latency scale {args.latency_scale}"
    )
    for col in (
        "scenario",
        "verdict",
        "fault",
        "outage s",
        "run s",
        "resume s",
        "results",
        "winner",
        "peak RSS MB",
    ):
        t.add_column(col)
    for o in outcomes:
        res = next(
            (
                c.detail.split(",")[0] + ", " + c.detail.split(",")[1].strip()
                for c in o.checks
                if c.name == "one CaseGraded per key"
            ),
            "-",
        )
        rss = " ".join(f"{k}={v:.0f}" for k, v in o.rss_mb.items())
        t.add_row(
            o.scenario,
            "[green]PASS[/]" if o.ok else "[red]FAIL[/]",
            o.fault,
            f"{o.timings['outage s']:.1f}" if "outage s" in o.timings else "-",
            f"{o.timings['run s']:.1f}" if "run s" in o.timings else "-",
            f"{o.timings['resume s']:.1f}" if "resume s" in o.timings else "-",
            res,
            o.winner[0] if o.winner else "-",
            rss or "-",
        )
    console.print(t)
    for o in outcomes:
        console.print(
            f"[bold]{o.scenario}[/] ({'PASS' if o.ok else 'FAIL'}): "
            + ", ".join(f"{k} {v:.1f}" for k, v in o.timings.items())
        )
        for c in o.checks:
            mark = "[green]ok[/]  " if c.ok else "[red]FAIL[/]"
            console.print(f"  {mark} {c.name}: {c.detail}")
        for n in o.notes:
            console.print(f"  note: {n}")
        if o.error:
            console.print(f"  [red]error[/]: {o.error}")
            for log in o.logs:
                console.print(log, markup=False, highlight=False)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--scenario", choices=(*SCENARIOS, "all"), default="all")
    p.add_argument(
        "--latency-scale",
        type=float,
        default=0.2,
        help="PROVENROUTE_SIM_LATENCY_SCALE of the private simulated provider.",
    )
    p.add_argument("--outage-s", type=float, default=10.0, help="Broker/Postgres downtime.")
    p.add_argument(
        "--fault-at",
        type=float,
        default=0.3,
        help="Share of the expected results in before the fault.",
    )
    p.add_argument("--timeout", type=float, default=300.0, help="Ceiling of one run.")
    p.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="Run each chosen scenario this many times (fault points spread "
        "evenly between --fault-at and 0.9).",
    )
    args = p.parse_args(argv)

    chosen = SCENARIOS if args.scenario == "all" else (args.scenario,)
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    workdir = LOG_ROOT / stamp
    workdir.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(
        filename=workdir / "chaos.log",
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    assume_dev()
    base = Settings()
    rss = RssSampler()
    print(
        f"chaos: scenarios {', '.join(chosen)}; logs in {workdir}; code {code_version()}",
        flush=True,
    )
    sim: ChildProcess | None = None
    outcomes: list[Outcome] = []
    # SIGTERM becomes KeyboardInterrupt so the clean-up below runs.
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        sim, url = start_sim(workdir, args.latency_scale, rss)
        session = Session(args, base, workdir, url, rss)
        print("baseline: uninterrupted run ...", flush=True)
        session.baseline = Baseline(session).execute()
        outcomes.append(session.baseline)
        if not session.baseline.ok:
            print("baseline failed; the scenarios would have nothing to compare with", flush=True)
        else:
            for name in chosen:
                for i in range(args.repeat):
                    at = args.fault_at
                    if args.repeat > 1:
                        at += (0.9 - args.fault_at) * i / (args.repeat - 1)
                    session.args = argparse.Namespace(**{**vars(args), "fault_at": at})
                    print(f"{name} (fault at {at:.0%} of the results) ...", flush=True)
                    outcomes.append(CLASSES[name](session).execute())
    except KeyboardInterrupt:
        print("interrupted: cleaning up", flush=True)
    finally:
        if sim is not None:
            sim.stop()
        rss.close()
    print_table(outcomes, args)
    ok = len(outcomes) == 1 + len(chosen) * args.repeat and all(o.ok for o in outcomes)
    print(f"verdict: {'PASS' if ok else 'FAIL'}", flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
