"""The Faust topics the worker's agents read and write, and sending an event."""

from __future__ import annotations

from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any

import faust

from contracts.codec import encode_event
from contracts.command_decider import event_key
from contracts.envelope import EventBase
from infra.settings import Settings
from streams import topics as specs


def json_schema() -> faust.Schema:
    """JSON keys and values survive changelog recovery as the str / dict they were."""
    return faust.Schema(key_serializer="json", value_serializer="json")


@dataclass(frozen=True)
class Channels:
    commands: Any
    events: Any
    case_jobs: Any
    case_jobs_dlq: Any
    commands_dlq: Any
    model_history: Any
    run_ticks: Any

    @classmethod
    def declare(cls, app: faust.App, settings: Settings) -> Channels:
        def t(spec: specs.TopicSpec) -> Any:
            return app.topic(settings.topic(spec.name))

        return cls(
            commands=t(specs.COMMANDS),
            events=t(specs.EVENTS),
            case_jobs=t(specs.CASE_JOBS),
            case_jobs_dlq=t(specs.CASE_JOBS_DLQ),
            commands_dlq=t(specs.COMMANDS_DLQ),
            model_history=t(specs.MODEL_HISTORY),
            run_ticks=t(specs.RUN_TICKS),
        )

    async def send_event(self, event: EventBase) -> None:
        """Buffered: returns once the producer holds it (ordered per run by the key)."""
        await self.events.send(key=event_key(event).encode(), value=encode_event(event))

    async def submit_event(self, event: EventBase) -> Awaitable[Any]:
        """Hands `event` to the producer and returns its delivery: await that for the
        broker's ack."""
        delivery: Awaitable[Any] = await self.events.send(
            key=event_key(event).encode(), value=encode_event(event)
        )
        return delivery

    async def deliver_event(self, event: EventBase) -> None:
        """Returns once the broker has acknowledged the event (raises if it never does)."""
        pending = await self.events.send(key=event_key(event).encode(), value=encode_event(event))
        await delivered(pending)


async def delivered(pending: Any) -> None:
    """Await a Faust send's FutureMessage: the broker acked the message (acks=all)."""
    await pending
