"""InHand: what a rebalance waits for before the partitions go to their next owner."""

from __future__ import annotations

import asyncio

import pytest

from streams.agents.in_hand import InHand


async def test_settled_at_once_when_nothing_is_in_hand() -> None:
    assert await InHand().settled(0.01)


async def test_settled_waits_for_the_message_in_hand_to_be_done() -> None:
    in_hand = InHand()
    release = asyncio.Event()
    order: list[str] = []

    async def handle() -> None:
        with in_hand.holding():
            await release.wait()
            order.append("handled")

    task = asyncio.create_task(handle())
    await asyncio.sleep(0)
    assert in_hand.busy
    waiter = asyncio.create_task(in_hand.settled(30.0))
    await asyncio.sleep(0.05)
    assert not waiter.done()
    release.set()
    assert await waiter
    order.append("settled")
    await task
    assert order == ["handled", "settled"]
    assert not in_hand.busy


async def test_settled_gives_up_after_its_timeout_and_says_so() -> None:
    in_hand = InHand()
    with in_hand.holding():
        assert not await in_hand.settled(0.05)
    assert await in_hand.settled(0.05)


async def test_a_handler_that_raises_still_leaves_the_hand_empty() -> None:
    in_hand = InHand()
    with pytest.raises(RuntimeError), in_hand.holding():
        raise RuntimeError("handling failed")
    assert not in_hand.busy
