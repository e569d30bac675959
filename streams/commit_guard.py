"""Refuse to commit a Kafka offset over a message the agents never acked.

Faust-streaming 0.15.3 (`Consumer._new_offset`) lets a partition's commit jump over one
missing offset at the head of the acked list, taking it for a compacted-topic hole (issue
606, open PR 707). Our topics are neither compacted nor transactional, so every offset is a
real message, and our agents ack in offset order: a missing head offset is a message the
consumer never handed to an agent while later ones were (seen around rebalances).
Committing over it loses it for good, also for the partition's next owner.

Kafka's committed offset names the next message to process, so for committed offset N
the message that must be acked before the commit may move is offset N itself.

The consumer also rewinds a partition that has no committed offset to its beginning on
every assignment. Faust drops fetched messages around a rebalance (one whose generation is
older than the app's, one whose hand-over the rebalance interrupted) and relies on seeking
back to the committed offset afterwards; aiokafka's `seek_to_committed` seeks only where an
offset > 0 was committed, so on a partition never committed the position stayed past the
dropped messages and they were gone. Seen: a run's `RunStarted`, produced onto an empty
events partition during the rebalance a second worker's join caused, never reached the
aggregator, and the run released no job. Rewinding is what `auto_offset_reset=earliest`
means for a group without a commit; what is read again is redelivered, which the agents
take as such (a decided command is re-sent, a result folded once, a handled job skipped).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, ClassVar

from aiokafka import AIOKafkaConsumer, TopicPartition
from faust.transport.consumer import ensure_TP
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP

__all__ = ["GaplessCommitConsumer", "gapless_consumer", "install", "seek_to_committed_or_start"]

log = logging.getLogger("provenroute.commit_guard")

REREAD_AFTER_S = 10.0
"""How long a head may be held back, with later offsets acked, before it is read again."""


class GaplessCommitConsumer(faust_aiokafka.Consumer):
    """Faust's aiokafka consumer that never commits over an unacked head offset.

    For a partition of a topic in `guarded_topics` whose committed offset N is known, the
    commit moves only once offset N itself is acked; until then `_new_offset` returns None
    (Faust's own "nothing to commit") and Faust's acked list keeps growing. Gaps further
    into the acked list Faust already handles (it commits the first consecutive run).

    A partition with no committed offset (never committed, or committed at 0, which Faust
    reads back as "none") keeps Faust's commit rule: the first message to expect is unknown
    there. Such a partition is instead read again from its beginning on every assignment
    (`seek_to_committed`), so a message dropped around a rebalance comes back. Use
    `gapless_consumer` for a class with topics set.
    """

    guarded_topics: ClassVar[frozenset[str]] = frozenset()
    """Full topic names (with the deployment prefix) whose commits are guarded."""

    reread_topics: ClassVar[frozenset[str]] = frozenset()
    """Guarded topics whose held head is read again after `reread_after_s`: those whose
    agent takes one message at a time, so a later ack proves the head never arrived. (A job
    agent runs several: a copy redelivered after a rebalance can run long behind a later
    ack; a lost job has the run's stall re-send.)"""
    reread_after_s: ClassVar[float] = REREAD_AFTER_S

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.clock: Callable[[], float] = time.monotonic
        self._held: dict[TP, tuple[int, float]] = {}
        """Partition -> the head held back while later offsets were acked, and since when
        (Faust asks for a new offset every commit interval, 0.5 s)."""
        self._rereads: set[asyncio.Future[None]] = set()

    def _new_offset(self, tp: TP) -> int | None:
        # `.get`, not `[]`: Faust's bookkeeping maps are defaultdicts, and merely looking
        # must not create entries (`_acked` keys drive which partitions Faust commits).
        head = self._committed_offset.get(tp)
        if (
            tp.topic in self.guarded_topics
            and head is not None
            and head not in self._acked_index.get(tp, ())
        ):
            # Held back only when later messages were acked (at the log's end, or with an
            # ack left from before a rebalance, nothing waits on the head).
            later = sum(1 for offset in self._acked.get(tp, ()) if offset > head)
            if later:
                self._hold(tp, head, later)
            return None
        self._held.pop(tp, None)
        return super()._new_offset(tp)

    def _hold(self, tp: TP, head: int, later: int) -> None:
        """Agents ack in offset order, so on `reread_topics` a head held while later
        offsets were acked never reached an agent: Faust dropped it after the last seek. It
        would come back only at the next rebalance, which may never come (a lost result
        would stall its run), so after `reread_after_s` the partition is read again from the
        head; what follows it is read twice, and redeliveries are harmless to every agent."""
        now = self.clock()
        held = self._held.get(tp)
        if held is None or held[0] != head:
            self._held[tp] = (head, now)
            log.warning(
                "not committing %s past offset %d: that message is not acked yet "
                "(%d later ones are)",
                tp,
                head,
                later,
            )
        elif tp.topic in self.reread_topics and now - held[1] >= self.reread_after_s:
            self._held[tp] = (head, now)  # once per interval, should the read not take
            log.warning("re-reading %s from offset %d, which no agent was handed", tp, head)
            reread = asyncio.ensure_future(self._reread(tp, head))
            self._rereads.add(reread)
            reread.add_done_callback(self._reread_done)

    async def _reread(self, tp: TP, head: int) -> None:
        # In the consumer's own thread, as Faust seeks on assignment (aiokafka is not
        # thread-safe); then Faust's read offset, which drops what is older.
        thread: Any = self._thread
        await thread.call_thread(
            _seek, thread._ensure_consumer(), TopicPartition(tp.topic, tp.partition), head
        )
        self._read_offset[ensure_TP(tp)] = head

    def _reread_done(self, reread: asyncio.Future[None]) -> None:
        self._rereads.discard(reread)
        if not reread.cancelled() and (e := reread.exception()) is not None:
            log.warning("re-read failed (the next rebalance reads it again): %r", e)

    async def seek_to_committed(self) -> Mapping[TP, int]:
        thread: Any = self._thread
        return await thread.call_thread(
            seek_to_committed_or_start, thread._ensure_consumer(), self.guarded_topics
        )


async def seek_to_committed_or_start(
    consumer: AIOKafkaConsumer, topics: frozenset[str]
) -> dict[TopicPartition, int | None]:
    """aiokafka's `seek_to_committed`, and the beginning for a partition of `topics` with no
    committed offset (None, or 0, which aiokafka does not seek to either)."""
    committed: dict[TopicPartition, int | None] = await consumer.seek_to_committed()
    fresh = [tp for tp, offset in committed.items() if tp.topic in topics and not offset]
    if fresh:
        await consumer.seek_to_beginning(*fresh)
    return committed


def gapless_consumer(
    topics: Iterable[str], reread: Iterable[str] = ()
) -> type[GaplessCommitConsumer]:
    """A `GaplessCommitConsumer` subclass guarding `topics` (full names), re-reading a held
    head on those of `reread`.

    A subclass rather than a class attribute set in place, so that two apps (or tests) in one
    process can guard different topics; Faust instantiates it like its own Consumer."""
    return type(
        "GaplessCommitConsumer",
        (GaplessCommitConsumer,),
        {
            "guarded_topics": frozenset(topics),
            "reread_topics": frozenset(reread),
            "__module__": __name__,
        },
    )


def install(topics: Iterable[str], reread: Iterable[str] = ()) -> None:
    """Make Faust's aiokafka transport create guarded consumers (see `gapless_consumer`).

    Call before the app starts its consumer (Faust reads `Transport.Consumer` then)."""
    faust_aiokafka.Transport.Consumer = gapless_consumer(topics, reread)


async def _seek(consumer: AIOKafkaConsumer, tp: TopicPartition, offset: int) -> None:
    consumer.seek(tp, offset)
