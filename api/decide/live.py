"""The live routing state held in memory: routing table, classifier winner, admin override.

Loaded from the projections at start, refreshed when the projector NOTIFYs a publish (the
channels below, payload `{"schema", "version"}`), reloaded whole after every (re)connect —
NOTIFY is delivered only at commit and never replayed — and every `refresh_interval_s` as a
safety net. /decide reads the attributes only; it never waits on the database.

Each item loads on its own: a failing winner read keeps the previous winner *and* leaves
the override alone, so a healthy override is never discarded by a benchmark-origin failure.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable
from typing import Final, Literal

import orjson
import psycopg

from contracts.routing_table import ClassifierWinner, RoutingTable
from projections.read_model import ReadModel
from streams.topics import (
    CHANNEL_CLASSIFIER_OVERRIDE,
    CHANNEL_CLASSIFIER_WINNER,
    CHANNEL_ROUTING_TABLE,
)

log = logging.getLogger("provenroute.decide.live")

Item = Literal["table", "winner", "override"]
ALL_ITEMS: Final[tuple[Item, ...]] = ("table", "winner", "override")

CHANNELS: Final[dict[str, Item]] = {
    CHANNEL_ROUTING_TABLE: "table",
    CHANNEL_CLASSIFIER_WINNER: "winner",
    CHANNEL_CLASSIFIER_OVERRIDE: "override",
}
"""The projector's NOTIFY channels (declared in streams/topics.py) and what each refreshes."""


class LiveRouting:
    """In-memory routing state with a background refresher."""

    def __init__(
        self,
        read_model: ReadModel,
        *,
        listen_url: str,
        schema: str,
        refresh_interval_s: float = 30.0,
        on_change: Callable[[LiveRouting], None] | None = None,
    ) -> None:
        self.read_model = read_model
        self.listen_url = listen_url
        self.schema = schema
        self.refresh_interval_s = refresh_interval_s
        self.on_change = on_change
        self.table: RoutingTable | None = None
        self.winner: ClassifierWinner | None = None
        self.override: str | None = None
        self.loaded: dict[Item, bool] = dict.fromkeys(ALL_ITEMS, False)
        """Whether each item was read successfully at least once."""
        self.errors: dict[Item, str | None] = dict.fromkeys(ALL_ITEMS, None)
        """Last read error per item (None after a successful read)."""
        self.listening = False
        self.last_reload: float | None = None
        self._first_table_load = asyncio.Event()

    # ---- loading -----------------------------------------------------------------------

    async def reload(self, items: Iterable[Item] = ALL_ITEMS) -> None:
        """Reload `items`; each failure is logged and keeps that item's previous value."""
        changed = False
        for item in dict.fromkeys(items):
            try:
                if item == "table":
                    table = await self.read_model.latest_routing_table()
                    changed |= table != self.table
                    self.table = table
                    self._first_table_load.set()
                elif item == "winner":
                    winner = await self.read_model.latest_classifier_winner()
                    changed |= winner != self.winner
                    self.winner = winner
                else:
                    override = await self.read_model.classifier_override()
                    changed |= override != self.override
                    self.override = override
            except Exception as e:  # the previous value stays live
                self.errors[item] = f"{type(e).__name__}: {e}"[:300]
                log.warning("reading the live %s failed (keeping the previous one): %s", item, e)
                continue
            self.loaded[item] = True
            self.errors[item] = None
        self.last_reload = time.monotonic()
        if changed:
            log.info(
                "live routing state: table=%s winner=%s override=%s",
                self.table.version if self.table else None,
                self.winner.model if self.winner else None,
                self.override,
            )
            if self.on_change is not None:
                self.on_change(self)

    async def wait_table_loaded(self) -> None:
        await self._first_table_load.wait()

    # ---- refreshing --------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """LISTEN for publishes until `stop`; reconnects with backoff, reloading each time."""
        backoff = 0.2
        while not stop.is_set():
            try:
                conn = await psycopg.AsyncConnection.connect(
                    self.listen_url,
                    autocommit=True,
                    connect_timeout=5,
                    application_name="provenroute-decide-listen",
                )
            except Exception as e:
                log.warning("cannot connect to listen for publishes: %s", e)
                await self.reload()  # still try the pool: it may come back first
                await _sleep_or_stop(stop, backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            try:
                async with conn:
                    for channel in CHANNELS:
                        await conn.execute(f"LISTEN {channel}")
                    self.listening = True
                    backoff = 0.2
                    await self.reload()  # whatever was published while not listening
                    await self._listen(conn, stop)
            except Exception as e:
                log.warning("publish listener lost its connection: %s", e)
            finally:
                self.listening = False
            if not stop.is_set():
                await _sleep_or_stop(stop, backoff)
                backoff = min(backoff * 2, 5.0)

    async def _listen(self, conn: psycopg.AsyncConnection, stop: asyncio.Event) -> None:
        while not stop.is_set():
            pending: set[Item] = set()
            # Wakes at the first notification (reloads at once) or after a second (checks
            # `stop` and the periodic refresh). A dead connection raises here.
            async for n in conn.notifies(timeout=1.0, stop_after=1):
                item = self._item_of(n.channel, n.payload)
                if item is not None:
                    pending.add(item)
            if pending:
                await self.reload(pending)
            elif time.monotonic() - (self.last_reload or 0.0) >= self.refresh_interval_s:
                await self.reload()

    def _item_of(self, channel: str, payload: str) -> Item | None:
        item = CHANNELS.get(channel)
        if item is None:
            return None
        try:
            data = orjson.loads(payload) if payload else {}
        except orjson.JSONDecodeError:
            return item  # unknown payload shape: reloading is always safe
        schema = data.get("schema") if isinstance(data, dict) else None
        if schema is not None and schema != self.schema:
            return None  # another projection schema on the same database
        return item


async def _sleep_or_stop(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)
