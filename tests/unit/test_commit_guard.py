"""The commit guard against Faust's real consumer bookkeeping, without a broker: committed
offsets arrive through `perform_seek` (as on a partition assignment, with only the broker's
answer stubbed), acks through `Consumer.ack`, and the commit decision is read from
`_new_offset` and `_filter_committable_offsets`, the step just before Faust talks to Kafka."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from unittest.mock import AsyncMock, Mock

import faust
import pytest
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP
from faust.types.tuples import Message

from streams.commit_guard import GaplessCommitConsumer, gapless_consumer, install

GUARDED = "t.events"
UNGUARDED = "t.run-ticks"
N = 100
"""The committed offset: Kafka's "next message to process". Not 0, which Faust reads back
as "never committed"."""
LATER = range(N + 1, N + 6)
"""Acked offsets after the head N (N itself never reached an agent)."""


@pytest.fixture
async def app() -> AsyncIterator[faust.App]:
    app = faust.App("commit-guard-test", broker="kafka://localhost:1", web_enabled=False)
    for name in (GUARDED, UNGUARDED, "t.case-jobs"):
        app.topics.add(app.topic(name))
    # What Faust does on subscribing: only topics indexed here have their acks recorded.
    await app.topics._update_indices()  # type: ignore[attr-defined]
    yield app


def consumer(app: faust.App, cls: type[faust_aiokafka.Consumer]) -> faust_aiokafka.Consumer:
    # The way Faust's Transport builds its consumer (and faust's own tests build one).
    return cls(
        app.transport, callback=Mock(), on_partitions_revoked=Mock(), on_partitions_assigned=Mock()
    )


async def committed_at(c: faust_aiokafka.Consumer, tp: TP, offset: int | None) -> None:
    """The committed offset as Faust learns it on assignment (None: the broker has none)."""
    c.seek_to_committed = AsyncMock(  # type: ignore[method-assign]
        return_value={} if offset is None else {tp: offset}
    )
    await c.perform_seek()


def ack(c: faust_aiokafka.Consumer, tp: TP, offsets: range | list[int]) -> None:
    for offset in offsets:
        message = Message(tp.topic, tp.partition, offset, 0.0, 0, None, b"k", b"v", None, tp=tp)
        assert c.ack(message), f"Faust did not record the ack of {tp} offset {offset}"


async def faust_new_offset(
    app: faust.App, tp: TP, committed: int | None, acked: list[int]
) -> int | None:
    """What unguarded Faust decides from the same state."""
    c = consumer(app, faust_aiokafka.Consumer)
    await committed_at(c, tp, committed)
    ack(c, tp, acked)
    return c._new_offset(tp)


Guarded = gapless_consumer([GUARDED, "t.commands", "t.case-jobs"], reread=[GUARDED])


async def test_faust_commits_over_a_missing_head_offset(app: faust.App) -> None:
    # The premise: Faust would commit past N although N was never acked.
    tp = TP(GUARDED, 0)
    new = await faust_new_offset(app, tp, N, list(LATER))
    assert new is not None and new > N
    # It refuses only when two or more head offsets are missing (issue 606's off-by-one).
    assert await faust_new_offset(app, tp, N, list(LATER)[1:]) is None


async def test_guard_refuses_to_commit_over_the_missing_head(app: faust.App) -> None:
    tp = TP(GUARDED, 0)
    c = consumer(app, Guarded)
    await committed_at(c, tp, N)
    ack(c, tp, LATER)
    assert c._new_offset(tp) is None
    assert c._filter_committable_offsets([tp]) == {}
    assert sorted(c._acked[tp]) == list(LATER), "the later acks stay pending"


async def test_guard_commits_as_faust_once_the_head_is_acked(app: faust.App) -> None:
    tp = TP(GUARDED, 0)
    c = consumer(app, Guarded)
    await committed_at(c, tp, N)
    ack(c, tp, LATER)
    assert c._new_offset(tp) is None
    ack(c, tp, [N])
    expected = await faust_new_offset(app, tp, N, [*LATER, N])
    assert expected == LATER[-1] + 1
    assert c._filter_committable_offsets([tp]) == {tp: expected}


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def held_consumer(
    app: faust.App, tp: TP, acked: range = LATER
) -> tuple[faust_aiokafka.Consumer, Clock, AsyncMock]:
    """A guarded consumer committed at N with `acked` acked (by default later offsets: it
    holds head N back), its clock and the re-read it would start (recorded: a re-read
    reaches the broker)."""
    c = consumer(app, Guarded)
    await committed_at(c, tp, N)
    ack(c, tp, acked)
    c.clock = clock = Clock()
    c._reread = seek = AsyncMock()  # type: ignore[attr-defined]
    return c, clock, seek


async def test_a_head_held_past_the_limit_is_read_again_once_per_interval(app: faust.App) -> None:
    tp = TP(GUARDED, 0)
    c, clock, seek = await held_consumer(app, tp)
    assert c._new_offset(tp) is None
    clock.now += Guarded.reread_after_s - 0.5
    assert c._new_offset(tp) is None
    await asyncio.sleep(0)
    seek.assert_not_awaited()
    clock.now += 0.5
    assert c._new_offset(tp) is None
    assert c._new_offset(tp) is None  # the next commit tick: no second read yet
    await asyncio.sleep(0)
    seek.assert_awaited_once()
    assert seek.await_args.args == (tp, N)
    clock.now += Guarded.reread_after_s
    c._new_offset(tp)
    await asyncio.sleep(0)
    assert seek.await_count == 2, "a read that did not bring the head back is tried again"


async def test_nothing_is_read_again_once_the_head_arrives(app: faust.App) -> None:
    tp = TP(GUARDED, 0)
    c, clock, seek = await held_consumer(app, tp)
    assert c._new_offset(tp) is None
    ack(c, tp, [N])
    clock.now += 2 * Guarded.reread_after_s
    assert c._new_offset(tp) == LATER[-1] + 1
    await asyncio.sleep(0)
    seek.assert_not_awaited()


async def test_a_held_head_of_a_job_topic_is_left_to_the_runs_re_send(app: faust.App) -> None:
    # Several jobs run at once: a later ack does not prove the head never arrived.
    tp = TP("t.case-jobs", 0)
    c, clock, seek = await held_consumer(app, tp)
    assert c._new_offset(tp) is None
    clock.now += 2 * Guarded.reread_after_s
    assert c._new_offset(tp) is None
    await asyncio.sleep(0)
    seek.assert_not_awaited()


async def test_a_head_at_the_end_of_the_log_is_not_read_again(app: faust.App) -> None:
    # Committed N, nothing after it acked: nothing is held back, there is nothing to read.
    tp = TP(GUARDED, 0)
    c, clock, seek = await held_consumer(app, tp, acked=range(0))
    for _ in range(3):
        assert c._new_offset(tp) is None
        clock.now += Guarded.reread_after_s
    await asyncio.sleep(0)
    seek.assert_not_awaited()


async def test_unguarded_topic_keeps_faust_behaviour(app: faust.App) -> None:
    tp = TP(UNGUARDED, 0)
    c = consumer(app, Guarded)
    await committed_at(c, tp, N)
    ack(c, tp, LATER)
    expected = await faust_new_offset(app, tp, N, list(LATER))
    assert expected is not None
    assert c._new_offset(tp) == expected


@pytest.mark.parametrize("committed", [None, 0])
async def test_never_committed_partition_keeps_faust_behaviour(
    app: faust.App, committed: int | None
) -> None:
    # Faust reads a committed offset of 0 back as none (`perform_seek`).
    tp = TP(GUARDED, 0)
    c = consumer(app, Guarded)
    await committed_at(c, tp, committed)
    ack(c, tp, LATER)
    expected = await faust_new_offset(app, tp, committed, list(LATER))
    assert expected is not None
    assert c._new_offset(tp) == expected


async def test_install_makes_faust_build_the_guarded_consumer(
    app: faust.App, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(faust_aiokafka.Transport, "Consumer", faust_aiokafka.Transport.Consumer)
    install([GUARDED, UNGUARDED], reread=[GUARDED])
    built = app._new_consumer()  # what `app.consumer` builds
    assert isinstance(built, GaplessCommitConsumer)
    assert built.guarded_topics == frozenset({GUARDED, UNGUARDED})
    assert built.reread_topics == frozenset({GUARDED})
