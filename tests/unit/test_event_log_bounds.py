"""The event-log clients give up on a broker that never answers, with a clear error.

The "broker" is a plain TCP socket on 127.0.0.1 that accepts connections and never writes
a byte: the shape of a paused or wedged Kafka, on which an unbounded client hangs forever
(a refused port would fail fast and prove nothing). Every test runs under an outer
`asyncio.wait_for`, so a regression fails instead of hanging the suite.
"""

from __future__ import annotations

import asyncio
import gc
import socket
import time
import warnings
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, ClassVar

import pytest
import pytest_asyncio

from infra.settings import Settings
from streams import event_log
from streams.event_log import BrokerUnavailable, EventReader, post_raw
from streams.topics import COMMANDS, EVENTS

OUTER_GUARD_S = 60.0
"""Far above the shrunk bounds: reaching it means a wait is unbounded again."""


@dataclass
class SilentBroker:
    """Accepts connections, reads and discards what it is sent, never answers."""

    server: asyncio.Server
    port: int
    connections: int = 0
    writers: list[asyncio.StreamWriter] = field(default_factory=list)

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"


# On the test's own loop: a server on another (idle) loop would never run its handler.
@pytest_asyncio.fixture(loop_scope="function")
async def silent_broker() -> AsyncIterator[SilentBroker]:
    broker: SilentBroker | None = None

    async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        assert broker is not None
        broker.connections += 1
        broker.writers.append(writer)
        # Drain until the client hangs up, so the handler ends with the connection rather
        # than lingering as a pending task.
        while await reader.read(65536):
            pass
        writer.close()

    server = await asyncio.start_server(swallow, "127.0.0.1", 0)
    broker = SilentBroker(server, server.sockets[0].getsockname()[1])
    try:
        yield broker
    finally:
        server.close()
        for w in broker.writers:
            w.close()
        await server.wait_closed()


@dataclass
class LeakWatch:
    """What a test leaves behind: the clients it made (each must have been stopped), what
    the loop reported (a task destroyed while pending, an unclosed client) and the
    warnings raised (unclosed sockets and clients)."""

    clients: list[Any] = field(default_factory=list)
    loop_errors: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[warnings.WarningMessage] = field(default_factory=list)


@pytest_asyncio.fixture(loop_scope="function")
async def leaks(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[LeakWatch]:
    watch = LeakWatch()

    def recording(cls: type[Any]) -> type[Any]:
        class Recording(cls):  # type: ignore[misc, valid-type]
            def __init__(self, *a: Any, **k: Any) -> None:
                super().__init__(*a, **k)
                self.stop_called = False
                watch.clients.append(self)

            async def stop(self) -> None:
                self.stop_called = True
                await super().stop()

        return Recording

    monkeypatch.setattr(event_log, "AIOKafkaProducer", recording(event_log.AIOKafkaProducer))
    monkeypatch.setattr(event_log, "AIOKafkaConsumer", recording(event_log.AIOKafkaConsumer))
    loop = asyncio.get_running_loop()
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: watch.loop_errors.append(context))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        watch.warnings = caught
        yield watch
    loop.set_exception_handler(previous)


def settings_at(base: Settings, bootstrap: str) -> Settings:
    return base.model_copy(update={"kafka_bootstrap": bootstrap, "topic_prefix": "bounds."})


def kafka_tasks() -> list[asyncio.Task[Any]]:
    """Pending aiokafka tasks: a client left half-closed keeps its sender or metadata sync."""
    current = asyncio.current_task()
    return [
        t
        for t in asyncio.all_tasks()
        # A task's repr names its coroutine's source file (…/aiokafka/…).
        if t is not current and not t.done() and "aiokafka" in repr(t).lower()
    ]


async def assert_nothing_left(leaks: LeakWatch) -> None:
    assert leaks.clients, "the test made no Kafka client"
    unstopped = [type(c).__mro__[1].__name__ for c in leaks.clients if not c.stop_called]
    assert not unstopped, f"never stopped: {unstopped}"
    # Closes run detached once they pass CLOSE_TIMEOUT_S; none should be left here, and
    # no aiokafka task may outlive its client.
    for _ in range(50):
        if not event_log._closing and not kafka_tasks():
            break
        await asyncio.sleep(0.1)
    assert not event_log._closing
    assert not kafka_tasks(), kafka_tasks()
    leaks.clients.clear()
    gc.collect()
    await asyncio.sleep(0)
    unclosed = [str(w.message) for w in leaks.warnings if "nclosed" in str(w.message)]
    assert not unclosed, unclosed
    assert not leaks.loop_errors, leaks.loop_errors


async def test_post_gives_up_on_a_silent_broker_with_a_clear_error(
    silent_broker: SilentBroker, base_settings: Settings, leaks: LeakWatch
) -> None:
    settings = settings_at(base_settings, silent_broker.bootstrap)
    t0 = time.monotonic()
    with pytest.raises(BrokerUnavailable) as raised:
        await asyncio.wait_for(
            post_raw(settings, b"{}", attempt_timeout_s=1.0, attempts=2), OUTER_GUARD_S
        )
    elapsed = time.monotonic() - t0

    message = str(raised.value)
    del raised  # its traceback holds the client, which must be collectable below
    assert silent_broker.bootstrap in message
    assert settings.topic(COMMANDS.name) in message
    assert "2 attempts" in message
    # Both attempts ran their full bound (the outer guard stands for "and then gave up").
    assert elapsed >= 2.0, elapsed
    # Each attempt connected anew: a fresh producer, not the first one's dead connection.
    assert len(leaks.clients) == 2
    assert silent_broker.connections >= 2
    await assert_nothing_left(leaks)


async def test_reader_start_gives_up_on_a_silent_broker_with_a_clear_error(
    silent_broker: SilentBroker, base_settings: Settings, leaks: LeakWatch
) -> None:
    settings = settings_at(base_settings, silent_broker.bootstrap)

    async def enter() -> None:
        async with EventReader(settings, start_timeout_s=1.5):
            pytest.fail("a reader started against a broker that never answers")

    with pytest.raises(BrokerUnavailable) as raised:
        await asyncio.wait_for(enter(), OUTER_GUARD_S)

    message = str(raised.value)
    del raised  # its traceback holds the client, which must be collectable below
    assert silent_broker.bootstrap in message
    assert "1.5 s" in message
    assert settings.topic(EVENTS.name) in message
    assert silent_broker.connections >= 1  # it did try the silent broker
    await assert_nothing_left(leaks)


class WedgedProducer:
    """A producer whose start never completes and whose stop takes longer than the close
    bound (aiokafka's stop flushes, and a dead broker can hold the flush)."""

    instances: ClassVar[list[WedgedProducer]] = []
    stop_s = 10.0

    def __init__(self, **_config: Any) -> None:
        self.stopped = False
        WedgedProducer.instances.append(self)

    async def start(self) -> None:
        await asyncio.Event().wait()

    async def send_and_wait(self, *_a: Any, **_k: Any) -> None:
        raise AssertionError("start never completes")

    async def stop(self) -> None:
        await asyncio.sleep(self.stop_s)
        self.stopped = True


async def test_post_does_not_wait_out_a_producer_stop_that_hangs(
    monkeypatch: pytest.MonkeyPatch, base_settings: Settings
) -> None:
    WedgedProducer.instances = []
    monkeypatch.setattr(event_log, "AIOKafkaProducer", WedgedProducer)
    monkeypatch.setattr(event_log, "CLOSE_TIMEOUT_S", 0.2)
    settings = settings_at(base_settings, "127.0.0.1:1")

    try:
        with pytest.raises(BrokerUnavailable):
            await asyncio.wait_for(
                post_raw(settings, b"{}", attempt_timeout_s=0.5, attempts=2), OUTER_GUARD_S
            )
        # Given up while both stops still run: they were not waited out (each takes 10 s).
        assert len(WedgedProducer.instances) == 2  # a fresh producer per attempt
        assert not any(p.stopped for p in WedgedProducer.instances)
        assert len(event_log._closing) == 2
        # The slow stops were left running, not cancelled half-way, and they do finish.
        await asyncio.wait_for(asyncio.gather(*event_log._closing), OUTER_GUARD_S)
        await asyncio.sleep(0)
        assert all(p.stopped for p in WedgedProducer.instances)
        assert not event_log._closing
    finally:
        # A failure above must not hand this loop's leftover closes to the next test.
        for task in list(event_log._closing):
            task.cancel()


def test_the_cli_names_an_unreachable_broker_instead_of_a_traceback() -> None:
    from typer.testing import CliRunner

    from api.cli.main import app

    with socket.socket() as probe:  # a port nothing listens on once closed
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    result = CliRunner().invoke(
        app,
        ["config", "show"],
        env={"PROVENROUTE_KAFKA_BOOTSTRAP": f"127.0.0.1:{port}", "COLUMNS": "240"},
    )
    assert result.exit_code == 2, result.output
    assert f"Kafka at 127.0.0.1:{port}" in result.output
    assert "make services-up" in result.output
    assert "Traceback" not in result.output
