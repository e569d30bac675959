"""The command agent: admin commands in, decided events (and case jobs) out.

The commands topic has one partition, so one worker decides every command, in order.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import faust
import orjson

from contracts.codec import DecodeError, decode_command, decode_event, encode_event
from contracts.command_decider import (
    ADMIN_KEY,
    AdminState,
    ModelRecord,
    decide_command,
    evolve_admin,
    reject,
)
from contracts.commands import Command
from contracts.config import RunKind
from contracts.envelope import EventBase
from contracts.events import CommandAccepted, CommandRejected, raw_excerpt
from contracts.jobs import CaseJob
from streams import topics as specs
from streams.agents.channels import Channels, json_schema

log = logging.getLogger("provenroute.worker")


class CommandAgent:
    """Owns the `admin` table (live config, override) and the `decided` table (what each
    command id was answered with, so a redelivery re-sends instead of re-deciding)."""

    def __init__(
        self,
        app: faust.App,
        channels: Channels,
        *,
        history: Callable[[], Mapping[str, ModelRecord]],
        case_ids: Mapping[RunKind, Sequence[str]],
        dataset_hashes: Mapping[RunKind, str],
        credentials: frozenset[str],
        clock: Callable[[], str],
    ) -> None:
        self.channels = channels
        self.history = history
        self.case_ids = case_ids
        self.dataset_hashes = dataset_hashes
        self.credentials = credentials
        self.clock = clock
        schema = json_schema()
        # Faust requires a table's changelog to match its source topic's partitions.
        partitions = specs.COMMANDS.partitions
        self.admin = app.Table("admin", default=None, schema=schema, partitions=partitions)
        self.decided = app.Table("decided", default=None, schema=schema, partitions=partitions)

    def admin_state(self) -> AdminState:
        raw = self.admin.get(ADMIN_KEY)
        return AdminState.model_validate(raw) if raw else AdminState()

    async def run(self, stream: Any) -> None:
        async for event in stream.events():
            raw: bytes = event.message.value or b""
            where = f"{event.message.topic}:{event.message.partition}:{event.message.offset}"
            try:
                command = decode_command(raw)
            except DecodeError as e:
                await self._safe_reject(_command_id_of(raw), e.type_name, e.reason, raw, where)
                continue
            try:
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
            # against state that has moved on. Event ids and job ids make repeats harmless.
            await self._send_decision(
                [decode_event(e.encode()) for e in earlier["events"]],
                [CaseJob.model_validate_json(j) for j in earlier["jobs"]],
            )
            return
        state = self.admin_state()
        outcome = decide_command(
            state,
            self.history(),
            command,
            now=now,
            case_ids=self.case_ids,
            dataset_hashes=self.dataset_hashes,
            credentials=self.credentials,
        )
        for ev in outcome.events:
            state = evolve_admin(state, ev)
        # The decision is saved before it goes out: a crash in between re-sends it on
        # redelivery (see above) instead of deciding the command a second time.
        self.decided[command.command_id] = {
            "events": [encode_event(e).decode() for e in outcome.events],
            "jobs": [j.model_dump_json() for j in outcome.jobs],
        }
        self.admin[ADMIN_KEY] = state.model_dump(mode="json")
        await self._send_decision(list(outcome.events), list(outcome.jobs))

    async def _send_decision(self, events: list[EventBase], jobs: list[CaseJob]) -> None:
        # The answer goes out last, once everything it answers for is delivered: whoever
        # waits for a command's answer and then reads the log (the CLI, admin tooling, the
        # e2e tests) finds every event and job the command caused, whatever their partition.
        # Sent in the decision's order, the answer went first, and a reader seeing it could
        # take the log's end before the config it accepted had landed.
        answers = [e for e in events if isinstance(e, CommandAccepted | CommandRejected)]
        effects = [e for e in events if not isinstance(e, CommandAccepted | CommandRejected)]
        pending = [await self.channels.submit_event(e) for e in effects]
        for job in jobs:
            pending.append(
                await self.channels.case_jobs.send(
                    key=job.job_id.encode(), value=job.model_dump_json().encode()
                )
            )
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


def _command_id_of(raw: bytes) -> str | None:
    """The command id of a message that is JSON but not a valid command, so its rejection
    still reaches whoever waits for that id."""
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    cid = data.get("command_id") if isinstance(data, dict) else None
    return cid if isinstance(cid, str) and 0 < len(cid) <= 200 else None
