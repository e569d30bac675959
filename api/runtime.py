"""Everything the decide service runs, started and stopped by the app's lifespan.

Start-up is bounded: it waits at most `decide_startup_timeout_s` for this replica's copy of
the sessions log to catch up and the routing state to load, then serves anyway (fresh picks
until sessions are ready); /readyz says when both happened. Readiness never depends on other
replicas: none owns a partition of the sessions log.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections import OrderedDict
from typing import Any

from api.decide.emitter import Emitter
from api.decide.live import LiveRouting
from api.decide.metrics import DecideMetrics
from api.decide.service import DecideConfig, DecideService
from api.decide.sessions import Sessions
from api.decide.spool import Spool
from contracts.codec import encode_command
from contracts.envelope import CommandBase
from contracts.events.runs import conditions_differ
from infra.provider.client import ProviderClient
from infra.provider.conditions import probe_conditions
from infra.settings import Settings
from projections.read_model import PostgresReadModel, ReadModel
from streams.topics import COMMANDS, DECISIONS, SESSIONS

log = logging.getLogger("provenroute.decide.runtime")

POSTED_REMEMBERED = 10_000


class Runtime:
    def __init__(
        self,
        settings: Settings,
        *,
        read_model: ReadModel | None = None,
        provider: Any = None,
    ) -> None:
        self.settings = settings
        self.metrics = DecideMetrics()
        self.read_model: ReadModel = read_model or PostgresReadModel(
            settings.database_url, settings.db_schema
        )
        self._provider = provider
        self.replica_id = settings.decide_replica_id or f"{socket.gethostname()}-{os.getpid()}"
        self.started_at = time.monotonic()
        self.posted: OrderedDict[str, str] = OrderedDict()
        """Ids (-> type) of commands this process posted, for `pending` answers."""
        # Built in start(): they bind to the running loop.
        self.emitter: Emitter | None = None
        self.sessions: Sessions | None = None
        self.live: LiveRouting | None = None
        self.service: DecideService | None = None
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[Any]] = []
        self.condition_differences: list[str] = []
        """How the classifier winner's measurement conditions differ from this service's."""

    # ---- lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        s = self.settings
        self._stop = asyncio.Event()
        await self._ensure_topics()
        self.emitter = Emitter(
            s.kafka_bootstrap,
            self.metrics,
            queue_size=s.decide_event_queue_size,
            spool=Spool(s.decide_spool_dir / s.topic_prefix.rstrip(".")),
        )
        self.emitter.start()
        self.sessions = Sessions(
            bootstrap=s.kafka_bootstrap,
            topic=s.topic(SESSIONS.name),
            replica_id=self.replica_id,
            metrics=self.metrics,
            ttl_s=s.decide_session_ttl_s,
            queue_size=s.decide_event_queue_size,
        )
        self.live = LiveRouting(
            self.read_model,
            listen_url=s.database_url,
            schema=s.db_schema,
            refresh_interval_s=s.decide_refresh_interval_s,
            on_change=self._on_live_change,
        )
        provider = self._provider or ProviderClient.from_settings(s)
        self._provider = provider
        self.service = DecideService(
            DecideConfig(
                budget_s=s.decide_budget_ms / 1000.0,
                margin_s=s.decide_margin_ms / 1000.0,
                default_classifier_model=s.default_classifier_model,
                decisions_topic=s.topic(DECISIONS.name),
            ),
            live=self.live,
            sessions=self.sessions,
            provider=provider,
            emitter=self.emitter,
            metrics=self.metrics,
        )
        self._tasks = [asyncio.create_task(self.live.run(self._stop), name="decide-live")]
        self.sessions.start()
        try:
            async with asyncio.timeout(s.decide_startup_timeout_s):
                await self.live.wait_table_loaded()
                await self.sessions.wait_ready()
        except TimeoutError:
            log.warning(
                "decide service serving before it is ready (sessions ready=%s, table loaded=%s)",
                self.sessions.ready,
                self.live.loaded["table"],
            )
        self.metrics.ready.set(1 if self.ready else 0)
        self._tasks.append(asyncio.create_task(self.check_conditions(), name="decide-conditions"))

    async def check_conditions(self) -> list[str]:
        """Warn when the classifier winner was measured under other conditions than this
        service meets: another provider, another simulated latency scale, another deadline
        (its p95 and timeout share then describe something else). Returns the differences."""
        live, service = self.live, self.service
        winner = live.winner if live is not None else None
        if winner is None or service is None or service.classifier().source != "winner":
            return []
        try:
            measured = await self.read_model.run_conditions(winner.run_id)
            if measured is None:
                return []
            differences = conditions_differ(measured, await probe_conditions(self.settings))
        except Exception as e:
            log.warning("could not compare the winner's measurement conditions: %s", e)
            return []
        self.condition_differences = differences
        if differences:
            log.warning(
                "classifier winner %s was measured (run %s) under other conditions than this "
                "service calls it: %s",
                winner.model,
                winner.run_id,
                "; ".join(differences),
            )
        return differences

    async def _ensure_topics(self) -> None:
        from streams.kafka_admin import ensure_topics

        s = self.settings
        try:
            async with asyncio.timeout(min(15.0, s.decide_startup_timeout_s)):
                await ensure_topics(
                    s.kafka_bootstrap, s.topic_prefix, (SESSIONS, DECISIONS, COMMANDS)
                )
        except Exception as e:  # Kafka down: sessions stay unready, picks fresh
            log.warning("could not ensure the decide topics: %s", e)

    async def stop(self) -> None:
        self._stop.set()
        for task in self._tasks:
            with contextlib.suppress(TimeoutError, asyncio.CancelledError, Exception):
                await asyncio.wait_for(asyncio.shield(task), 5.0)
            task.cancel()
        if self.emitter is not None:
            await self.emitter.stop()
        if self.sessions is not None:
            await self.sessions.stop()
        with contextlib.suppress(Exception):
            await self.read_model.close()
        close = getattr(self._provider, "aclose", None)
        if close is not None:
            with contextlib.suppress(Exception):
                await close()

    # ---- state -----------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        return bool(
            self.sessions is not None
            and self.sessions.ready
            and self.live is not None
            and self.live.loaded["table"]
        )

    def _on_live_change(self, live: LiveRouting) -> None:
        self.metrics.table_loaded.set(1 if live.table is not None else 0)

    def status(self) -> dict[str, Any]:
        live, sessions, emitter = self.live, self.sessions, self.emitter
        return {
            # A full queue means decision events are backing up (spooled to disk): still
            # answering, but say so, so a balancer can move traffic to another replica.
            "ready": self.ready and not (emitter is not None and emitter.queue_full),
            "replica": self.replica_id,
            "sessions": sessions.status() if sessions else {"ready": False},
            "routing_table": {
                "loaded": bool(live and live.loaded["table"]),
                "version": live.table.version if live and live.table else None,
                "listening": bool(live and live.listening),
                "errors": {k: v for k, v in (live.errors.items() if live else ()) if v},
            },
            "classifier": (
                {
                    "model": c.model,
                    "source": c.source,
                    "measured_under_other_conditions": self.condition_differences,
                }
                if self.service and (c := self.service.classifier())
                else None
            ),
            "kafka_producer": bool(emitter and emitter.connected),
            "decision_queue": emitter.status() if emitter else None,
            "uptime_s": round(time.monotonic() - self.started_at, 1),
        }

    # ---- admin commands ----------------------------------------------------------------

    async def post_command(self, command: CommandBase) -> None:
        """Post to the command topic and wait for the ack (raises when Kafka is down)."""
        assert self.emitter is not None
        await self.emitter.send_now(
            self.settings.topic(COMMANDS.name),
            command.command_id.encode(),
            encode_command(command),
        )
        self.posted[command.command_id] = command.type
        while len(self.posted) > POSTED_REMEMBERED:
            self.posted.popitem(last=False)
