"""Per-conversation session state in a Faust table: the incumbent model and the
classification cache (the seed's Durable Object).

Shape (see DESIGN "Known pitfalls"): the HTTP handler reads the table locally and never
writes it. A change is sent, keyed by conversation id, to the `decide-sessions` topic; the
`sessions` agent of the same Faust app consumes it and assigns the value into the table, so
the write happens in the stream's partition context and reaches the changelog. The table's
partitions equal the topic's. The memory store replays the changelog at start: sessions
survive a restart, and /readyz waits for that recovery.

Until the agent has applied a change, a bounded in-process overlay serves it back
(read-your-writes for the next turn), newest first. The table assumes one decide process
holds all partitions (as the worker's tables do); see the report for scaling out.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import tempfile
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any, Final

import faust
import orjson
from pydantic import BaseModel, ConfigDict, ValidationError

from api.decide.emitter import Emitter
from contracts.classification import Classification
from contracts.decision import SessionState
from streams.topics import SESSIONS as SESSIONS_TOPIC

log = logging.getLogger("provenroute.decide.sessions")

CACHE_ENTRIES: Final = 4
"""Classifications kept per conversation (a retried or repeated request hits them)."""


class CachedClassification(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    classifier_model: str
    content_hash: str
    classification: Classification


class SessionRecord(BaseModel):
    """What one conversation remembers between requests."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    incumbent: SessionState | None = None
    """The model last served on real classifier output (None: nothing served yet)."""
    classifications: tuple[CachedClassification, ...] = ()
    """Newest first; only real classifier output (never a heuristic fallback)."""


def cached_classification(
    record: SessionRecord | None, classifier_model: str, digest: str
) -> Classification | None:
    """The cached classification of (classifier model, content hash), if any."""
    if record is None:
        return None
    for entry in record.classifications:
        if entry.content_hash == digest and entry.classifier_model == classifier_model:
            return entry.classification
    return None


def remember_classification(
    record: SessionRecord | None,
    classifier_model: str,
    digest: str,
    classification: Classification,
    keep: int = CACHE_ENTRIES,
) -> SessionRecord:
    """`record` with the classification cached first; a fallback is never cached."""
    record = record or SessionRecord()
    if classification.fallback:
        return record
    if record.classifications:
        newest = record.classifications[0]
        if (
            newest.content_hash == digest
            and newest.classifier_model == classifier_model
            and (newest.classification is classification or newest.classification == classification)
        ):
            return record  # a cache hit: already first, nothing to rewrite
    entry = CachedClassification(
        classifier_model=classifier_model, content_hash=digest, classification=classification
    )
    rest = tuple(
        e
        for e in record.classifications
        if (e.classifier_model, e.content_hash) != (classifier_model, digest)
    )
    return record.model_copy(update={"classifications": (entry, *rest)[:keep]})


def with_incumbent(record: SessionRecord | None, incumbent: SessionState | None) -> SessionRecord:
    record = record or SessionRecord()
    if incumbent == record.incumbent:
        return record
    return record.model_copy(update={"incumbent": incumbent})


class Sessions:
    """The Faust app hosting the sessions table, its agent and the overlay."""

    def __init__(
        self,
        *,
        app_id: str,
        bootstrap: str,
        topic: str,
        emitter: Emitter,
        overlay_size: int = 100_000,
    ) -> None:
        self.topic_name = topic
        self.emitter = emitter
        self.overlay: OrderedDict[str, SessionRecord] = OrderedDict()
        self.overlay_size = overlay_size
        self.app = faust.App(
            app_id,
            broker=f"kafka://{bootstrap}",
            store="memory://",
            # Faust wants a data directory even for the memory store; keep it out of the tree.
            datadir=str(Path(tempfile.gettempdir()) / "provenroute-faust" / "{conf.id}-data"),
            web_enabled=False,
            producer_acks=-1,
            consumer_auto_offset_reset="earliest",
            stream_wait_empty=False,
            broker_commit_interval=0.5,
            table_standby_replicas=0,
        )
        # str keys (json) survive changelog recovery as str; values are plain JSON objects.
        schema: faust.Schema = faust.Schema(
            key_type=str, key_serializer="json", value_serializer="json"
        )
        self.topic = self.app.topic(topic, schema=schema, partitions=SESSIONS_TOPIC.partitions)
        self.table = self.app.Table(
            "sessions", default=None, schema=schema, partitions=SESSIONS_TOPIC.partitions
        )
        self.app.agent(self.topic, name="sessions")(self._agent)
        self._started = False
        self._ready = False
        self._ready_checked = 0.0
        self.start_error: str | None = None
        self.applied = 0

    # ---- the agent -------------------------------------------------------------------

    async def _agent(self, stream: Any) -> None:
        async for key, value in stream.items():
            try:
                if isinstance(key, str) and isinstance(value, dict):
                    self.table[key] = value
                    self.applied += 1
            except Exception:  # nothing escapes an agent (Faust would ack and move on)
                log.exception("applying a session update failed")

    # ---- reads and writes (HTTP handler) -------------------------------------------------

    def get(self, conversation_id: str) -> SessionRecord | None:
        record = self.overlay.get(conversation_id)
        if record is not None:
            self.overlay.move_to_end(conversation_id)
            return record
        raw = self.table.get(conversation_id)
        if not raw:
            return None
        try:
            record = SessionRecord.model_validate(raw)
        except ValidationError:
            log.warning("unreadable session %r ignored", conversation_id)
            return None
        self._remember(conversation_id, record)
        return record

    def put(self, conversation_id: str, record: SessionRecord) -> None:
        """Serve `record` back at once and send it to the agent that owns the table."""
        self._remember(conversation_id, record)
        self.emitter.enqueue(
            "session",
            self.topic_name,
            orjson.dumps(conversation_id),
            lambda: record.model_dump_json().encode(),
        )

    def _remember(self, conversation_id: str, record: SessionRecord) -> None:
        self.overlay[conversation_id] = record
        self.overlay.move_to_end(conversation_id)
        while len(self.overlay) > self.overlay_size:
            self.overlay.popitem(last=False)

    # ---- lifecycle -------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        """Started, partitions assigned and the table recovered from its changelog.

        Checked at most every 100 ms: /decide asks on every request."""
        now = time.monotonic()
        if now - self._ready_checked < 0.1:
            return self._ready
        self._ready = self._check_ready()
        self._ready_checked = now
        return self._ready

    def _check_ready(self) -> bool:
        if not self._started:
            return False
        try:
            recovery = self.app.tables.recovery  # type: ignore[attr-defined]
            if not recovery.completed.is_set() or recovery.in_recovery:
                return False
            assigned = {
                tp.partition for tp in self.app.consumer.assignment() if tp.topic == self.topic_name
            }
        except Exception:
            return False
        return len(assigned) == SESSIONS_TOPIC.partitions

    async def start(self) -> None:
        from faust.contrib.asgi import bind_to_running_loop

        bind_to_running_loop(self.app)
        self.app.finalize()
        Path(self.app.conf.datadir).parent.mkdir(parents=True, exist_ok=True)
        try:
            await self.app.maybe_start()
        except Exception as e:
            self.start_error = f"{type(e).__name__}: {e}"
            log.exception("the sessions app did not start")
            raise
        self._started = True
        self._ready_checked = 0.0

    async def wait_ready(self, poll_s: float = 0.05) -> None:
        """Until ready; raises RuntimeError if the app failed to start."""
        while not self.ready:
            if self.start_error is not None:
                raise RuntimeError(f"sessions did not start: {self.start_error}")
            await asyncio.sleep(poll_s)

    async def stop(self, timeout_s: float = 10.0) -> None:
        if not self._started:
            return
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.app.stop(), timeout_s)
        self._started = False
        self._ready, self._ready_checked = False, 0.0
