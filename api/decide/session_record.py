"""What one conversation remembers between requests, and the pure rules that keep it right
when several replicas write it (no IO here: the store and the clock are passed in).

Every write carries a `version` one above the record it was derived from. A stored record is
replaced only by a strictly higher version, and replicas apply the sessions log in one order,
so the first write of a version wins and a late, re-sent or stale write (derived from an
older record) never overrides a newer one. Within one replica, `successor` rebases a write
whose base went stale during the request (another request of the same conversation
finished first) instead of clobbering it.
"""

from __future__ import annotations

from typing import Final

from pydantic import BaseModel, ConfigDict

from contracts.classification import Classification
from contracts.decision import SessionState

CACHE_ENTRIES: Final = 4
"""Classifications kept per conversation (a retried or repeated request hits them)."""


class CachedClassification(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    classifier_model: str
    content_hash: str
    classification: Classification


class SessionRecord(BaseModel):
    """One conversation's session, as stored on the sessions log (JSON)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    incumbent: SessionState | None = None
    """The model last served on real classifier output (None: nothing served yet)."""
    classifications: tuple[CachedClassification, ...] = ()
    """Newest first; only real classifier output (never a heuristic fallback)."""
    version: int = 0
    """One above the record this write was derived from; a higher version replaces a lower
    one, the first write of a version in log order wins (0: records from before versions)."""
    touched_at: float = 0.0
    """Unix seconds of the write (the writer's clock): idle sessions expire from it."""
    writer: str = ""
    """Replica that wrote it (diagnostics; it re-asserts a record a tombstone raced)."""


def content_of(record: SessionRecord | None) -> tuple[object, ...]:
    """What a request can change (everything but the write's bookkeeping)."""
    if record is None:
        return (None, ())
    return (record.incumbent, record.classifications)


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


def write_needed(
    base: SessionRecord | None, updated: SessionRecord, now: float, refresh_s: float
) -> bool:
    """Whether serving a request must write: its content changed, or the session was last
    written more than `refresh_s` ago (an active conversation must not expire)."""
    if content_of(updated) != content_of(base):
        return True
    return base is not None and now - base.touched_at >= refresh_s


def successor(
    base: SessionRecord | None,
    updated: SessionRecord,
    current: SessionRecord | None,
    *,
    now: float,
    writer: str,
) -> SessionRecord:
    """The record to write for a request that read `base` and computed `updated`, given the
    `current` record (which another request may have written meanwhile).

    When `current` is still `base`, `updated` is written as the next version. Otherwise the
    request's changes are rebased onto `current`: the classifications it added are merged in
    (a cache: merging is safe), and its incumbent only if `current` still has the incumbent
    the request started from. A request decided on a stale incumbent therefore never
    re-anchors the session on it, whichever request finishes last.
    """
    base_version = base.version if base is not None else 0
    meta = {"touched_at": now, "writer": writer}
    if current is None or current.version == base_version:
        version = (current.version if current is not None else base_version) + 1
        return updated.model_copy(update={**meta, "version": version})
    known = {(e.classifier_model, e.content_hash) for e in (base.classifications if base else ())}
    added = [
        e for e in updated.classifications if (e.classifier_model, e.content_hash) not in known
    ]
    added_keys = {(e.classifier_model, e.content_hash) for e in added}
    kept = [
        e for e in current.classifications if (e.classifier_model, e.content_hash) not in added_keys
    ]
    base_incumbent = base.incumbent if base is not None else None
    incumbent = updated.incumbent if current.incumbent == base_incumbent else current.incumbent
    return current.model_copy(
        update={
            **meta,
            "version": current.version + 1,
            "incumbent": incumbent,
            "classifications": tuple([*added, *kept][:CACHE_ENTRIES]),
        }
    )


def _cache_key(entry: CachedClassification) -> tuple[str, str]:
    return (entry.classifier_model, entry.content_hash)


def supersedes(incoming_version: int, stored_version: int | None) -> bool:
    """Whether a record of `incoming_version` replaces the stored one (None: nothing stored)."""
    return stored_version is None or incoming_version > stored_version
