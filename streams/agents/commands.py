"""The command agent: admin commands in, decided events out.

The commands topic has one partition, so one worker decides every command, in order. A
StartRun's case jobs are not sent from here: the run's aggregator releases them at the
run's pace (see `streams.agents.aggregator`), re-planned from the run's events. So the
stored decision is the events alone — a few kB whatever the run's size, far below Kafka's
1 MB message limit (a plan of 30 models x 76 cases x 5 reps is 2,400 jobs, ~1 MB).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import faust
import orjson
from tenacity import AsyncRetrying, before_sleep_log, stop_after_attempt, wait_exponential

from contracts.codec import DecodeError, decode_command, decode_event, encode_event
from contracts.command_decider import (
    ADMIN_KEY,
    AdminState,
    CommandOutcome,
    ModelRecord,
    decide_command,
    evolve_admin,
    reject,
)
from contracts.commands import Command, StartRun
from contracts.config import RunKind
from contracts.envelope import EventBase
from contracts.events import CommandAccepted, CommandRejected, raw_excerpt
from contracts.events.runs import MeasurementConditions
from streams import topics as specs
from streams.agents.channels import Channels, json_schema
from streams.agents.in_hand import InHand

log = logging.getLogger("provenroute.worker")

HANDLE_ATTEMPTS = 4
"""Tries at handling one command before it is rejected with the internal error."""


class CommandAgent:
    """Owns the `admin` table (live config, override) and the `decided` table (what each
    command id was answered with, so a redelivery re-sends instead of re-deciding)."""

    def __init__(
        self,
        app: faust.App,
        channels: Channels,
        *,
        history: Callable[[], Awaitable[Mapping[str, ModelRecord]]],
        case_ids: Mapping[RunKind, Sequence[str]],
        dataset_hashes: Mapping[RunKind, str],
        credentials: frozenset[str],
        conditions: Callable[[], Awaitable[MeasurementConditions]] | None = None,
        clock: Callable[[], str],
    ) -> None:
        self.channels = channels
        self.history = history
        self.case_ids = case_ids
        self.dataset_hashes = dataset_hashes
        self.conditions = conditions
        self.credentials = credentials
        self.clock = clock
        schema = json_schema()
        # Faust requires a table's changelog to match its source topic's partitions.
        partitions = specs.COMMANDS.partitions
        self.admin = app.Table("admin", default=None, schema=schema, partitions=partitions)
        self.decided = app.Table("decided", default=None, schema=schema, partitions=partitions)
        self.in_hand = InHand()

    def admin_state(self) -> AdminState:
        raw = self.admin.get(ADMIN_KEY)
        return AdminState.model_validate(raw) if raw else AdminState()

    async def run(self, stream: Any) -> None:
        async for event in stream.events():
            with self.in_hand.holding():
                await self._decide(event)

    async def _decide(self, event: Any) -> None:
        raw: bytes = event.message.value or b""
        where = f"{event.message.topic}:{event.message.partition}:{event.message.offset}"
        try:
            command = decode_command(raw)
        except DecodeError as e:
            await self._safe_reject(_command_id_of(raw), e.type_name, e.reason, raw, where)
            return
        try:
            # A transient fault (a leader election, a fresh topic's metadata) must not
            # reject a valid command: handling is safe to repeat (a decided command is only
            # re-sent), so try again first.
            async for attempt in AsyncRetrying(
                stop=stop_after_attempt(HANDLE_ATTEMPTS),
                wait=wait_exponential(multiplier=0.5, max=4),
                before_sleep=before_sleep_log(log, logging.WARNING),
                reraise=True,
            ):
                with attempt:
                    await self.handle(command)
        except Exception as e:  # nothing escapes: the command is answered with a reason
            log.exception("command handling failed")
            await self._safe_reject(
                command.command_id,
                command.type,
                f"internal error: {type(e).__name__}: {e}",
                raw,
                where,
            )

    async def handle(self, command: Command) -> None:
        now = self.clock()
        earlier = self.decided.get(command.command_id)
        if earlier:
            # A redelivery (or a reused id): send what was decided then, never decide again
            # against state that has moved on. Event ids make repeats harmless.
            await self._send_events([decode_event(e.encode()) for e in earlier["events"]])
            return
        state = self.admin_state()
        # What a new run measures under, asked of the provider now (IO stays in the shell).
        conditions = (
            await self.conditions()
            if self.conditions is not None and isinstance(command, StartRun)
            else None
        )
        outcome = decide_command(
            state,
            await self.history(),
            command,
            now=now,
            case_ids=self.case_ids,
            dataset_hashes=self.dataset_hashes,
            credentials=self.credentials,
            conditions=conditions,
        )
        for ev in outcome.events:
            state = evolve_admin(state, ev)
        # The decision is saved before it goes out: a crash in between re-sends it on
        # redelivery (see above) instead of deciding the command a second time.
        self.decided[command.command_id] = stored_decision(outcome)
        self.admin[ADMIN_KEY] = state.model_dump(mode="json")
        await self._send_events(list(outcome.events))
        # What a command caused, one line each: where a stalled run stopped shows here.
        log.info(
            "command %s %s: %s",
            command.type,
            command.command_id,
            ", ".join(e.type for e in outcome.events),
        )

    async def _send_events(self, events: list[EventBase]) -> None:
        # The answer goes out last, once everything it answers for is delivered: whoever
        # waits for a command's answer and then reads the log (the CLI, admin tooling, the
        # e2e tests) finds every event the command caused, whatever their partition. Sent
        # in the decision's order, the answer went first, and a reader seeing it could take
        # the log's end before the config it accepted had landed.
        answers = [e for e in events if isinstance(e, CommandAccepted | CommandRejected)]
        effects = [e for e in events if not isinstance(e, CommandAccepted | CommandRejected)]
        pending = [await self.channels.submit_event(e) for e in effects]
        for delivery in pending:
            await delivery
        for ev in answers:
            await self.channels.send_event(ev)

    async def _safe_reject(
        self, cid: str | None, ctype: str | None, reason: str, raw: bytes, where: str
    ) -> None:
        try:
            await self.channels.send_event(
                reject(
                    cid,
                    ctype,
                    reason[:500],
                    now=self.clock(),
                    raw_excerpt=raw_excerpt(raw),
                    id_basis=where,
                )
            )
            await self.channels.commands_dlq.send(value=raw)
        except Exception:
            log.exception("could not even reject a command")


def stored_decision(outcome: CommandOutcome) -> dict[str, list[str]]:
    """What the `decided` table keeps of a decision: its events (jobs are re-planned)."""
    return {"events": [encode_event(e).decode() for e in outcome.events]}


def _command_id_of(raw: bytes) -> str | None:
    """The command id of a message that is JSON but not a valid command, so its rejection
    still reaches whoever waits for that id."""
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    cid = data.get("command_id") if isinstance(data, dict) else None
    return cid if isinstance(cid, str) and 0 < len(cid) <= 200 else None
