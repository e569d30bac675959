"""Posting commands and reading the event log with plain aiokafka (CLI, tests, tools)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from types import TracebackType

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from contracts.codec import DecodeError, decode_event, encode_command
from contracts.envelope import CommandBase, EventBase
from infra.settings import Settings
from streams.topics import COMMANDS, EVENTS


def new_command_id() -> str:
    return str(uuid.uuid4())


async def post_command(settings: Settings, command: CommandBase) -> None:
    await post_raw(settings, encode_command(command), key=command.command_id.encode())


async def post_raw(settings: Settings, value: bytes, key: bytes | None = None) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, enable_idempotence=True)
    await producer.start()
    try:
        await producer.send_and_wait(settings.topic(COMMANDS.name), value, key=key)
    finally:
        await producer.stop()


class EventReader:
    """Reads the events topic from the beginning, or tails it from the current end.

    Enter the context *before* posting a command whose answer you wait for, so the answer
    cannot slip past a reader positioned later.
    """

    def __init__(self, settings: Settings, *, from_end: bool = False) -> None:
        self.topic = settings.topic(EVENTS.name)
        self.from_end = from_end
        # Subscribing without a group assigns every partition of the topic. Without a group,
        # aiokafka may apply its reset policy after our seek_to_beginning (it resets the
        # "committed" offsets asynchronously after assignment), so the policy must match the
        # seek or a from-the-start reader silently starts at the end.
        self.consumer = AIOKafkaConsumer(
            self.topic,
            bootstrap_servers=settings.kafka_bootstrap,
            enable_auto_commit=False,
            group_id=None,
            auto_offset_reset="latest" if from_end else "earliest",
        )
        self.tps: list[TopicPartition] = []
        self.end: dict[TopicPartition, int] = {}

    async def __aenter__(self) -> EventReader:
        await self.consumer.start()
        deadline = time.monotonic() + 30
        while not self.consumer.assignment():
            if time.monotonic() > deadline:
                raise TimeoutError(f"no partitions of {self.topic} assigned")
            await asyncio.sleep(0.05)
        self.tps = sorted(self.consumer.assignment(), key=lambda tp: tp.partition)
        if self.from_end:
            await self.consumer.seek_to_end(*self.tps)
        else:
            await self.consumer.seek_to_beginning(*self.tps)
        for tp in self.tps:  # resolve positions now, not lazily after a post
            await self.consumer.position(tp)
        self.end = await self.consumer.end_offsets(self.tps)
        return self

    async def __aexit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.consumer.stop()

    async def poll(self, timeout_s: float = 0.2) -> list[EventBase]:
        batch = await self.consumer.getmany(timeout_ms=int(timeout_s * 1000), max_records=5000)
        out: list[EventBase] = []
        for _tp, msgs in sorted(batch.items(), key=lambda kv: kv[0].partition):
            for m in msgs:
                if m.value is None:
                    continue
                try:
                    out.append(decode_event(m.value))
                except DecodeError:
                    continue
        return out

    async def at_end(self) -> bool:
        for tp in self.tps:
            if await self.consumer.position(tp) < self.end[tp]:
                return False
        return True

    async def history(self) -> AsyncIterator[EventBase]:
        """Every event up to the end offsets seen on entering."""
        while not await self.at_end():
            for ev in await self.poll():
                yield ev

    async def follow(self, timeout_s: float) -> AsyncIterator[EventBase]:
        """New events until `timeout_s` passes (the caller breaks out when satisfied)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for ev in await self.poll():
                yield ev
        raise TimeoutError(f"no conclusion within {timeout_s:.0f}s")
