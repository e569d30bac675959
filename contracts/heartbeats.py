"""Worker heartbeats: which workers are alive and which jobs each runs or has handled.

Every worker publishes a `Heartbeat` on a compacted topic (keyed by worker id) every few
seconds and whenever a job starts or ends. Every worker reads them all. Two decisions rest
on that board, across hosts and restarts, where `hostname:pid` cannot tell:

- the container janitor removes a container only when its worker has stopped beating;
- a case job redelivered after a rebalance waits while another live worker holds it (see
  `claim_holder`), and is skipped once another worker has handled that very attempt: a
  second copy never fights the first over the job's container, nor dead-letters what the
  first delivers.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from pydantic import BaseModel, ConfigDict, Field

HEARTBEAT_INTERVAL_S: Final = 2.0
MISSED_BEATS: Final = 5
"""A worker silent for this many intervals is dead (its Kafka session ends sooner)."""
HANDLED_KEPT: Final = 512
"""How many recently handled job attempts a heartbeat lists."""


class Heartbeat(BaseModel):
    """One worker's latest beat. A tombstone (no value) says it stopped cleanly."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    worker_id: str
    sent_at: float
    """Unix time of the beat, by the sender's clock."""
    interval_s: float = Field(default=HEARTBEAT_INTERVAL_S, gt=0)
    running: tuple[str, ...] = ()
    """Job ids this worker runs right now."""
    handled: tuple[str, ...] = ()
    """Recent job attempts (`attempt_key`) this worker finished handling: results
    delivered, retry sent or dead-lettered."""


def attempt_key(job_id: str, attempt: int) -> str:
    return f"{job_id}#{attempt}"


def is_live(beat: Heartbeat, now: float) -> bool:
    return now - beat.sent_at <= beat.interval_s * MISSED_BEATS


def live_workers(beats: Mapping[str, Heartbeat], now: float) -> frozenset[str]:
    return frozenset(w for w, b in beats.items() if is_live(b, now))


def claim_holder(
    claims: Mapping[str, Mapping[str, int]], job_id: str, live: frozenset[str]
) -> str | None:
    """Who may run `job_id`: of the live workers whose beats list it, the one that listed
    it first (lowest offset on the one-partition topic, a total order every reader shares).

    `claims` maps worker -> job id -> offset of the first beat of its current run of that
    job. Two copies handed out at once both announce, then both read: the later announcer
    sees the earlier one and backs off, the earlier sees no earlier claim and goes on."""
    holders = [
        (offsets[job_id], w) for w, offsets in claims.items() if w in live and job_id in offsets
    ]
    return min(holders)[1] if holders else None


def handled_elsewhere(
    beats: Mapping[str, Heartbeat], job_id: str, attempt: int, me: str
) -> str | None:
    """Another worker (live or not) that already handled this attempt of `job_id`."""
    key = attempt_key(job_id, attempt)
    for w, b in sorted(beats.items()):
        if w != me and key in b.handled:
            return w
    return None
