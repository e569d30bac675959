"""Whether an agent is in the middle of one message: what a rebalance waits for.

The worker runs with `stream_wait_empty=False` (a case job holds its message for minutes, so
a rebalance must not wait for the job streams to drain). Faust then flushes the producer on
revoke while an aggregator or command event may still be being folded: its table writes
would go out after that flush, and the partition's next owner could recover the changelog
without them. The worker waits for the event in hand instead (see `Worker._on_revoked`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator


class InHand:
    """Marks the span of handling one message; `settled()` waits until none is in hand."""

    def __init__(self) -> None:
        self._idle = asyncio.Event()
        self._idle.set()

    @contextlib.contextmanager
    def holding(self) -> Iterator[None]:
        self._idle.clear()
        try:
            yield
        finally:
            self._idle.set()

    @property
    def busy(self) -> bool:
        return not self._idle.is_set()

    async def settled(self, timeout_s: float) -> bool:
        """True once no message is in hand; False if one still is after `timeout_s`."""
        try:
            await asyncio.wait_for(self._idle.wait(), timeout_s)
        except TimeoutError:
            return False
        return True
