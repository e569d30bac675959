"""The Faust app: one app, three agents (`streams.agents`), each a small class owning its
tables, around contracts' pure functions.

- `commands`   -> CommandAgent  -> events (+ case jobs)                 (concurrency 1)
- `case-jobs`  -> CaseJobAgent  -> CaseGraded, retries, dead letters   (concurrency 1 + tasks)
- `events`     -> Aggregator    -> completion events + publish          (concurrency 1)

Faust acks a message whose handler raised, so no exception escapes an agent: failures become
events, job retries or dead letters.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import faust
from faust.transport.drivers import aiokafka as faust_aiokafka

from contracts.config import RunKind
from contracts.events.runs import MeasurementConditions
from infra.clock import utc_now
from infra.settings import Settings
from streams.agents.aggregator import Aggregator
from streams.agents.case_jobs import CaseJobAgent, Emit, JobExecutor
from streams.agents.channels import Channels
from streams.agents.commands import CommandAgent
from streams.commit_guard import install as install_commit_guard
from streams.heartbeats import HeartbeatBoard
from streams.history import ModelHistory
from streams.janitor import remove_stale_containers, track_on_board
from streams.kafka_admin import ensure_named_topics, topics_led
from streams.topics import ALL_TOPICS, CASE_JOBS, COMMANDS, EVENTS, WORKER_HEARTBEATS

__all__ = ["Emit", "JobExecutor", "Worker", "run_worker"]

SWEEP_INTERVAL_S = 5.0
"""How often each worker nudges its runs' partitions to re-check unfinished runs."""
JANITOR_INTERVAL_S = 30.0
"""How often each worker removes the job containers of workers that stopped beating."""
HELD_REPORT_S = 30.0
"""How often a worker logs the jobs it has held for longer than this."""
ASSIGNMENT_CHECK_S = 10.0
"""How often a worker checks that the group gave it partitions (see `_check_assignment`)."""
REVOKE_SETTLE_S = 5.0
"""How long a rebalance waits for the aggregator's or command agent's event in hand."""

log = logging.getLogger("provenroute.worker")


class _IdempotentProducer(faust_aiokafka.Producer):  # type: ignore[misc]
    """Faust turns on producer idempotence only inside transactions; our events must not
    duplicate on a producer retry either (acks=all + idempotence)."""

    def _settings_extra(self) -> Mapping[str, Any]:
        return {**super()._settings_extra(), "acks": "all", "enable_idempotence": True}


faust_aiokafka.Transport.Producer = _IdempotentProducer


def make_app(settings: Settings, app_id: str | None = None) -> faust.App:
    return faust.App(
        app_id or f"{settings.topic_prefix}worker",
        broker=f"kafka://{settings.kafka_bootstrap}",
        store="memory://",
        web_enabled=False,
        topic_partitions=8,
        producer_acks=-1,
        consumer_auto_offset_reset="earliest",
        key_serializer="raw",
        value_serializer="raw",
        stream_wait_empty=False,
        broker_commit_interval=0.5,
        # A killed worker's partitions are reassigned after this, not Faust's 60 s.
        broker_session_timeout=10.0,
        broker_heartbeat_interval=2.0,
    )


class Worker:
    """The Faust app with the three agents wired onto their topics."""

    def __init__(
        self,
        settings: Settings,
        *,
        executor: JobExecutor,
        case_ids: Mapping[RunKind, Sequence[str]],
        dataset_hashes: Mapping[RunKind, str],
        conditions: Callable[[], Awaitable[MeasurementConditions]] | None = None,
        clock: Callable[[], str] = utc_now,
        app_id: str | None = None,
        prewarm: Callable[[], None] | None = None,
    ) -> None:
        self.settings = settings
        self.prewarm = prewarm
        """Called once the heartbeat board is up (CaseExecutor.prewarm: the sandbox pool
        starts its spares; after the board, so they are labelled with it)."""
        # One worker per process: the consumer class is the transport's, process-wide.
        install_commit_guard(
            [settings.topic(spec.name) for spec in (COMMANDS, EVENTS, CASE_JOBS)],
            reread=[settings.topic(spec.name) for spec in (COMMANDS, EVENTS)],
        )
        self.app = make_app(settings, app_id)
        self.channels = Channels.declare(self.app, settings)
        self.board = HeartbeatBoard(
            settings.kafka_bootstrap, settings.topic(WORKER_HEARTBEATS.name)
        )
        self.aggregator = Aggregator(
            self.app,
            self.channels,
            clock,
            case_ids,
            settings.run_max_ungraded_share,
            holders=self.board,
            stall_resend_s=settings.run_stall_resend_s,
        )
        self.history = ModelHistory(settings)
        self.commands = CommandAgent(
            self.app,
            self.channels,
            history=self.history.current,
            case_ids=case_ids,
            dataset_hashes=dataset_hashes,
            conditions=conditions,
            credentials=frozenset(settings.provider_credentials),
            clock=clock,
        )
        self.case_jobs = CaseJobAgent(
            self.channels,
            executor,
            progress=self.aggregator.run_progress,
            job_slots=settings.worker_job_slots,
            clock=clock,
            fence=self.board,
        )
        self.app.agent(self.channels.commands, name="commands")(self.commands.run)
        self.app.agent(self.channels.case_jobs, name="case-jobs")(self.case_jobs.run)
        # The ticks topic is co-partitioned with events, so partition p's ticks reach the
        # owner of partition p's runs (Faust assigns co-partitioned topics together).
        runs_in = self.app.topic(
            self.channels.events.get_topic_name(), self.channels.run_ticks.get_topic_name()
        )
        self.app.agent(runs_in, name="aggregator")(self.aggregator.run)
        self.app.timer(SWEEP_INTERVAL_S, name="run-sweep")(self._tick_owned_partitions)
        self.app.task(self._start_board)
        self.app.timer(JANITOR_INTERVAL_S, name="janitor")(self._sweep_containers)
        self.app.timer(ASSIGNMENT_CHECK_S, name="assignment-check")(self._check_assignment)
        self.app.timer(HELD_REPORT_S, name="held-jobs")(self._report_held_jobs)
        self._unassigned_checks = 0
        self.app.on_partitions_revoked.connect(self._on_revoked)
        self.app.on_before_shutdown.connect(self._on_shutdown)

    def changelog_topics(self) -> list[tuple[str, int, dict[str, str]]]:
        """Each table's changelog as Faust would create it: (name, partitions, config)."""
        out: list[tuple[str, int, dict[str, str]]] = []
        for table in self.app.tables.values():
            topic = table.changelog_topic
            flags = [
                f for f, on in (("compact", topic.compacting), ("delete", topic.deleting)) if on
            ]
            config = {"cleanup.policy": ",".join(flags)} if flags else {}
            out.append((topic.get_topic_name(), topic.partitions, config))
        return out

    async def declare_topics(self) -> None:
        """Before Faust starts: the tables' changelogs exist and every topic the worker
        reads or writes has a leader (see `streams.kafka_admin.topics_led`)."""
        changelogs = self.changelog_topics()
        await ensure_named_topics(self.settings.kafka_bootstrap, changelogs)
        names = [name for name, _, _ in changelogs] + [
            self.settings.topic(spec.name) for spec in ALL_TOPICS
        ]
        await topics_led(self.settings.kafka_bootstrap, names)

    async def _tick_owned_partitions(self) -> None:
        """Unfinished runs are swept at start (the first tick) and every interval after."""
        events = self.channels.events.get_topic_name()
        for tp in self.app.assignor.assigned_actives():
            if tp.topic == events:
                await self.channels.run_ticks.send(value=b"tick", partition=tp.partition)

    async def _on_revoked(self, sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        # The event being folded writes its tables after Faust's flush on revoke (see
        # `streams.agents.in_hand`): wait for it, then flush those writes, before the
        # partitions go to their next owner, who recovers the tables from the changelogs.
        agents = (self.aggregator, self.commands)
        settled = await asyncio.gather(*(a.in_hand.settled(REVOKE_SETTLE_S) for a in agents))
        for agent, done in zip(agents, settled, strict=True):
            if not done:
                log.warning(
                    "rebalance: %s still busy after %.0f s", type(agent).__name__, REVOKE_SETTLE_S
                )
        await self.app.producer.flush()
        self.aggregator.forget_cached()

    async def _start_board(self) -> None:
        await self.board.start()
        track_on_board(self.board.live_set)
        if self.prewarm is not None:
            self.prewarm()

    async def _check_assignment(self) -> None:
        """Rejoin the group when it left this worker without partitions.

        Two workers started together: faust-streaming 0.15.3 can join the group before its
        agents subscribed their topics (`Subscribed to topic(s):` empty), get nothing, and
        the subscription that follows a moment later triggers no rejoin, so this worker
        idles and the partitions the leader handed it go unread — a run whose events sit
        there never proceeds (seen in the two-worker kill test). With no more live workers
        than case-job partitions every worker must hold some, so an empty assignment twice
        in a row means exactly that; a rejoin lets the leader assign again.
        """
        thread: Any = getattr(self.app.consumer, "_thread", None)
        consumer = getattr(thread, "_consumer", None)
        if thread is None or consumer is None or not self.board.ready.is_set():
            return
        starved = (
            bool(consumer.subscription())
            and not consumer.assignment()
            and len(self.board.live()) <= CASE_JOBS.partitions
        )
        self._unassigned_checks = self._unassigned_checks + 1 if starved else 0
        if self._unassigned_checks >= 2:
            self._unassigned_checks = 0
            log.warning("the group gave this worker no partitions; rejoining it")
            thread.thread_loop.call_soon_threadsafe(consumer._coordinator.request_rejoin)

    async def _report_held_jobs(self) -> None:
        held = self.case_jobs.report(older_than_s=HELD_REPORT_S)
        if held:
            log.info(
                "jobs held over %.0f s: %s",
                HELD_REPORT_S,
                ", ".join(f"{j} ({s:.0f} s)" for j, s in held[:8]),
            )

    async def _sweep_containers(self) -> None:
        if not self.board.ready.is_set():
            return
        await self.board.sync()
        try:
            removed = await asyncio.to_thread(_sweep, self.board.live_set())
        except Exception as e:  # no Docker here (a classifier-only host): nothing to sweep
            log.debug("container sweep skipped: %s", e)
            return
        if removed:
            log.warning("removed %d job containers of stopped workers: %s", len(removed), removed)

    async def _on_shutdown(self, sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        await self.history.stop()
        track_on_board(None)
        await self.board.stop()


def _sweep(board: Any) -> list[str]:
    import docker

    client = docker.from_env(timeout=10)
    try:
        return remove_stale_containers(client, board)
    finally:
        client.close()


def run_worker(worker: Worker, loglevel: str = "info") -> None:
    """Run the Faust worker in the foreground until stopped."""
    asyncio.run(worker.declare_topics())
    faust.Worker(worker.app, loglevel=loglevel, quiet=True).execute_from_commandline()
