"""Decision events are delivered at least once: a full queue, spent retries or a shutdown
spool them to disk instead of dropping them, and they are sent again once Kafka takes
messages, by this process or the next one (fake producer; the real one in test_decide_api)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from aiokafka.partitioner import DefaultPartitioner

from api.decide import emitter as emitter_module
from api.decide.emitter import Emitter
from api.decide.metrics import DecideMetrics
from api.decide.spool import Spool


class FakeProducer:
    def __init__(self) -> None:
        self.failing = False
        self.sent: list[tuple[str, bytes, bytes]] = []

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    async def partitions_for(self, topic: str) -> set[int]:
        return {0, 1, 2}

    def create_batch(self) -> FakeBatch:
        return FakeBatch()

    async def send_batch(
        self, batch: FakeBatch, topic: str, *, partition: int
    ) -> asyncio.Future[None]:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self.failing:
            fut.set_exception(ConnectionError("broker down"))
        else:
            self.sent += [(topic, key, value) for key, value in batch.records]
            fut.set_result(None)
        return fut


class FakeBatch:
    """aiokafka's BatchBuilder as the emitter uses it (three records fill it)."""

    def __init__(self) -> None:
        self.records: list[tuple[bytes, bytes]] = []

    def append(self, *, key: bytes, value: bytes, timestamp: float | None) -> object | None:
        if len(self.records) == 3:
            return None
        self.records.append((key, value))
        return object()


@pytest.fixture(autouse=True)
def _fast_spool_checks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(emitter_module, "SPOOL_CHECK_S", 0.02)
    monkeypatch.setattr(emitter_module, "SPOOL_RETRY_S", 0.0)


def make(tmp_path: Path, producer: FakeProducer, queue_size: int = 10) -> Emitter:
    return Emitter(
        "unused:9092",
        DecideMetrics(),
        queue_size=queue_size,
        producer_factory=lambda: producer,  # type: ignore[arg-type, return-value]
        spool=Spool(tmp_path),
    )


def metric(e: Emitter, name: str, **labels: str) -> float:
    value = e.metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


async def until(predicate: Any, timeout_s: float = 30.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not predicate():
            await asyncio.sleep(0.01)


def decisions(producer: FakeProducer) -> list[bytes]:
    return sorted(v for t, _k, v in producer.sent if t == "decisions")


async def test_a_full_queue_spools_decisions_and_drops_only_session_updates(
    tmp_path: Path,
) -> None:
    producer = FakeProducer()
    e = make(tmp_path, producer)  # not started yet: nothing drains the queue
    for i in range(25):
        assert e.enqueue("decision", "decisions", b"c", b"d%02d" % i)
    assert not e.enqueue("session", "sessions", b"c", b"s")
    assert e.queue_full and e.status() == {"depth": 10, "capacity": 10, "full": True, "spooled": 15}
    assert metric(e, "provenroute_decide_queue_full") == 1.0
    spooled = "provenroute_decide_messages_spooled_total"
    assert metric(e, spooled, kind="decision", why="queue_full") == 15
    assert metric(e, "provenroute_decide_messages_dropped_total", kind="session", why="queue_full")
    e.start()
    await until(lambda: len(decisions(producer)) == 25)
    assert decisions(producer) == [b"d%02d" % i for i in range(25)]
    await until(lambda: e.status()["spooled"] == 0 and not list(tmp_path.iterdir()))
    assert metric(e, "provenroute_decide_queue_full") == 0.0
    await e.stop()


async def test_a_delivery_that_fails_three_times_is_spooled_and_sent_later(
    tmp_path: Path,
) -> None:
    producer = FakeProducer()
    producer.failing = True
    e = make(tmp_path, producer, queue_size=100)
    e.start()
    for i in range(5):
        e.enqueue("decision", "decisions", b"c", b"d%d" % i)
    await until(lambda: e.status()["spooled"] == 5)
    assert decisions(producer) == []
    producer.failing = False
    await until(lambda: len(decisions(producer)) == 5)
    await until(lambda: not list(tmp_path.iterdir()))
    await e.stop()


async def test_what_a_stopped_or_dead_process_spooled_is_sent_by_the_next(tmp_path: Path) -> None:
    down = FakeProducer()
    down.failing = True
    first = make(tmp_path, down, queue_size=100)
    first.start()
    for i in range(3):
        first.enqueue("decision", "decisions", b"c", b"d%d" % i)
    await first.stop(drain_timeout_s=0.2)  # Kafka never took them
    assert list(tmp_path.iterdir()), "spooled on shutdown"
    # A process killed mid-write leaves a whole file plus a cut line: the whole lines count.
    (tmp_path / "spool-999-dead.jsonl").write_bytes(
        b'["decision","decisions","c","d-dead"]\n["decision","deci'
    )
    up = FakeProducer()
    second = make(tmp_path, up)
    second.start()
    await until(lambda: len(decisions(up)) == 4)
    assert decisions(up) == [b"d-dead", b"d0", b"d1", b"d2"]
    await until(lambda: not list(tmp_path.iterdir()))
    await second.stop()


def test_messages_are_placed_where_the_producers_partitioner_places_them() -> None:
    partitioner = DefaultPartitioner()
    partitions = [0, 1, 2, 3, 4, 5]
    placer: tuple[list[int], dict[bytes, int]] = (partitions, {})
    keys = [f"conversation-{i}".encode() for i in range(500)] + [b"", b"\xff" * 40]
    for _ in range(2):  # computed, then remembered
        assert [emitter_module._place(placer, k) for k in keys] == [
            partitioner(k, partitions, partitions) for k in keys
        ]
    assert len(placer[1]) == len(keys)
    assert len({emitter_module._place(placer, k) for k in keys}) == len(partitions)


async def test_a_full_record_batch_is_handed_over_and_the_next_one_started(
    tmp_path: Path,
) -> None:
    producer = FakeProducer()
    e = make(tmp_path, producer, queue_size=100)
    e.start()
    for i in range(20):
        e.enqueue("decision", "decisions", b"same-key", b"d%02d" % i)
    await until(lambda: len(decisions(producer)) == 20)
    # one key, one partition: in order, over batches of three
    assert [v for _t, _k, v in producer.sent] == [b"d%02d" % i for i in range(20)]
    assert metric(e, "provenroute_decide_messages_sent_total", kind="decision") == 20
    await e.stop()
