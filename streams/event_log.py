"""Posting commands and reading the event log with plain aiokafka (CLI, tests, tools).

Every wait on the broker here is bounded: a broker that accepts connections but never
answers (stopped, paused, wrong port) gives a `BrokerUnavailable` naming the bootstrap
address, not a CLI or test that hangs.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator, Coroutine
from types import TracebackType
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaConnectionError, KafkaError, KafkaTimeoutError
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    RetryError,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential,
)

from contracts.codec import DecodeError, decode_event, encode_command
from contracts.envelope import CommandBase, EventBase
from infra.settings import Settings
from streams.topics import COMMANDS, EVENTS

log = logging.getLogger(__name__)

POST_ATTEMPT_TIMEOUT_S = 30.0
"""Bound on one try at posting a command: producer start (bootstrap) plus send_and_wait."""
POST_ATTEMPTS = 4
"""Tries at posting, each with a fresh producer, before `BrokerUnavailable` is raised."""
READER_START_TIMEOUT_S = 60.0
"""Bound on entering an `EventReader` (connect, assignment, seek, end offsets)."""
CLOSE_TIMEOUT_S = 10.0
"""How long a failed or finished client's close is awaited before it is left to finish
in the background (aiokafka's stop flushes, and a dead broker can hold the flush)."""


class BrokerUnavailable(ConnectionError):
    """Kafka at the configured bootstrap address did not answer in time, or refused.

    Not a `TimeoutError`: the CLI reads a `TimeoutError` as "the worker did not answer",
    which would send an operator looking at the wrong process.
    """


def new_command_id() -> str:
    return str(uuid.uuid4())


async def post_command(settings: Settings, command: CommandBase) -> None:
    await post_raw(settings, encode_command(command), key=command.command_id.encode())


def _worth_retrying(e: BaseException) -> bool:
    # aiokafka marks its own timeout non-retriable, but an unanswered broker is exactly
    # what a fresh attempt is for; permanent errors (too large, not authorised) are not.
    if isinstance(e, TimeoutError | OSError | KafkaTimeoutError):
        return True
    return isinstance(e, KafkaError) and bool(e.retriable)


async def post_raw(
    settings: Settings,
    value: bytes,
    key: bytes | None = None,
    *,
    attempt_timeout_s: float = POST_ATTEMPT_TIMEOUT_S,
    attempts: int = POST_ATTEMPTS,
) -> None:
    """Send `value` to the commands topic and wait for the broker's ack.

    Raises `BrokerUnavailable` when `attempts` tries of `attempt_timeout_s` each fail.
    """
    bootstrap = settings.kafka_bootstrap
    topic = settings.topic(COMMANDS.name)
    # Retrying is safe even when a timed-out attempt did reach the log: the command agent
    # decides a command once by its id (a repeat is answered from its `decided` table),
    # so a command that lands twice is harmless.
    retrying = AsyncRetrying(
        stop=stop_after_attempt(attempts),
        wait=wait_exponential(multiplier=0.5, max=4),
        retry=retry_if_exception(_worth_retrying),
        before_sleep=lambda state: _log_retry(state, bootstrap, topic),
    )
    try:
        async for attempt in retrying:
            with attempt:
                await _post_once(bootstrap, topic, value, key, attempt_timeout_s)
    except RetryError as e:
        last = e.last_attempt.exception()
        raise BrokerUnavailable(
            f"Kafka at {bootstrap} did not take a command on topic {topic}: {attempts} "
            f"attempts of up to {attempt_timeout_s:g} s each failed (last: {last!r})"
        ) from last


def _log_retry(state: RetryCallState, bootstrap: str, topic: str) -> None:
    error = state.outcome.exception() if state.outcome else None
    wait_s = state.next_action.sleep if state.next_action else 0.0
    log.warning(
        "posting to %s at Kafka %s failed (attempt %d: %s); retrying in %g s",
        topic,
        bootstrap,
        state.attempt_number,
        # Formatted now: a record kept by a handler must not keep the failed producer alive.
        repr(error),
        wait_s,
    )


async def _post_once(
    bootstrap: str, topic: str, value: bytes, key: bytes | None, timeout_s: float
) -> None:
    # A fresh producer per attempt: one whose start or send timed out may hold a half-open
    # connection or a batch it is still retrying. No idempotence: aiokafka never expires
    # an idempotent producer's unsent batch, so its stop() would flush forever against a
    # dead broker; a new producer per attempt would not be deduplicated by it anyway, and
    # a duplicate command is harmless (see post_raw). acks="all" keeps the durability the
    # idempotent producer implied; request_timeout_ms makes a stuck batch expire.
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", request_timeout_ms=int(timeout_s * 1000)
    )
    deadline = asyncio.timeout(timeout_s)
    try:
        async with deadline:
            await producer.start()
            await producer.send_and_wait(topic, value, key=key)
    except TimeoutError:
        if deadline.expired():
            raise TimeoutError(f"no answer within {timeout_s:g} s") from None
        raise
    finally:
        await _close_bounded(producer.stop(), f"producer for {topic}")


_closing: set[asyncio.Task[None]] = set()
"""Closes still running past CLOSE_TIMEOUT_S, referenced so they are not garbage
collected mid-way (which asyncio reports as a destroyed pending task)."""


async def _close_bounded(close: Coroutine[Any, Any, None], what: str) -> None:
    """Await a client's close for up to CLOSE_TIMEOUT_S, then let it finish on its own.

    Not cancelled on timeout: aiokafka marks the client closed on entering stop(), so a
    cancelled stop would leave its background tasks (sender, metadata sync) running for
    good; left alone, it completes once the client's own request timeout releases it.
    """
    task = asyncio.ensure_future(close)
    _closing.add(task)
    task.add_done_callback(_forget_close)
    done, _ = await asyncio.wait({task}, timeout=CLOSE_TIMEOUT_S)
    if not done:
        log.warning("closing the Kafka %s takes over %g s; left to finish", what, CLOSE_TIMEOUT_S)


def _forget_close(task: asyncio.Task[None]) -> None:
    _closing.discard(task)
    # A failed close must not mask the caller's own outcome, only be seen.
    if not task.cancelled() and (e := task.exception()) is not None:
        log.warning("closing a Kafka client failed: %r", e)


class EventReader:
    """Reads the events topic from the beginning, or tails it from the current end.

    Enter the context *before* posting a command whose answer you wait for, so the answer
    cannot slip past a reader positioned later. Entering takes at most `start_timeout_s`,
    then raises `BrokerUnavailable`.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        from_end: bool = False,
        start_timeout_s: float = READER_START_TIMEOUT_S,
    ) -> None:
        self.topic = settings.topic(EVENTS.name)
        self.bootstrap = settings.kafka_bootstrap
        self.from_end = from_end
        self.start_timeout_s = start_timeout_s
        # Subscribing without a group assigns every partition of the topic. Without a group,
        # aiokafka may apply its reset policy after our seek_to_beginning (it resets the
        # "committed" offsets asynchronously after assignment), so the policy must match the
        # seek or a from-the-start reader silently starts at the end.
        self.consumer = AIOKafkaConsumer(
            self.topic,
            bootstrap_servers=self.bootstrap,
            enable_auto_commit=False,
            group_id=None,
            auto_offset_reset="latest" if from_end else "earliest",
        )
        self.tps: list[TopicPartition] = []
        self.end: dict[TopicPartition, int] = {}

    async def __aenter__(self) -> EventReader:
        deadline = asyncio.timeout(self.start_timeout_s)
        try:
            async with deadline:
                await self._start()
        except BaseException as e:
            # __aexit__ does not run when __aenter__ raises: stop the consumer here, or its
            # connections and tasks outlive the failed start.
            await _close_bounded(self.consumer.stop(), f"reader of {self.topic}")
            if isinstance(e, TimeoutError) and deadline.expired():
                raise BrokerUnavailable(
                    f"Kafka at {self.bootstrap} did not answer within "
                    f"{self.start_timeout_s:g} s (starting a reader of {self.topic})"
                ) from None
            if isinstance(e, KafkaConnectionError):
                raise BrokerUnavailable(
                    f"Kafka at {self.bootstrap} is unreachable (starting a reader of "
                    f"{self.topic}): {e}"
                ) from e
            raise
        return self

    async def _start(self) -> None:
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

    async def __aexit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await _close_bounded(self.consumer.stop(), f"reader of {self.topic}")

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
