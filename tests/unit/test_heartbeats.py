"""Worker heartbeats: liveness, the claim order of a job's copies, handled attempts, and the
janitor's rule for one container."""

from __future__ import annotations

import os
import socket

from contracts.heartbeats import (
    MISSED_BEATS,
    Heartbeat,
    attempt_key,
    claim_holder,
    handled_elsewhere,
    is_live,
    live_workers,
)
from streams.janitor import (
    LABEL_CREATED,
    LABEL_HEARTBEATS,
    LABEL_WORKER,
    LiveSet,
    container_is_stale,
    parse_worker_id,
)


def beat(worker: str, at: float, running: tuple[str, ...] = (), handled=()) -> Heartbeat:  # type: ignore[no-untyped-def]
    return Heartbeat(worker_id=worker, sent_at=at, interval_s=2.0, running=running, handled=handled)


def test_a_worker_is_live_until_it_misses_enough_beats() -> None:
    b = beat("a", 100.0)
    assert is_live(b, 100.0 + 2.0 * MISSED_BEATS)
    assert not is_live(b, 100.0 + 2.0 * MISSED_BEATS + 0.01)
    beats = {"a": b, "b": beat("b", 50.0)}
    assert live_workers(beats, 105.0) == {"a"}


def test_the_first_live_claim_holds_the_job() -> None:
    claims = {"a": {"j": 7}, "b": {"j": 3}, "c": {"k": 1}}
    assert claim_holder(claims, "j", frozenset({"a", "b", "c"})) == "b"
    # the earlier claimant died: the next one holds it
    assert claim_holder(claims, "j", frozenset({"a", "c"})) == "a"
    assert claim_holder(claims, "j", frozenset({"c"})) is None
    assert claim_holder(claims, "k", frozenset({"a", "b", "c"})) == "c"


def test_a_handled_attempt_is_seen_only_from_others() -> None:
    beats = {"a": beat("a", 1.0, handled=(attempt_key("j", 1),)), "me": beat("me", 1.0)}
    assert handled_elsewhere(beats, "j", 1, "me") == "a"
    assert handled_elsewhere(beats, "j", 2, "me") is None  # the retry is another attempt
    assert handled_elsewhere(beats, "j", 1, "a") is None


def test_worker_ids_parse_with_and_without_instance() -> None:
    assert parse_worker_id("host:12:abcd1234") == ("host", 12)
    assert parse_worker_id("host:12") == ("host", 12)
    assert parse_worker_id("a:b:12:abcd1234") == ("a:b", 12)
    assert parse_worker_id("nonsense") is None


def test_the_janitor_rule_for_one_container() -> None:
    board = LiveSet("t.worker-heartbeats", frozenset({"h:1:live"}))

    def labels(worker: str, created: float, topic: str | None = board.topic) -> dict[str, str]:
        out = {LABEL_WORKER: worker, LABEL_CREATED: str(int(created))}
        if topic:
            out[LABEL_HEARTBEATS] = topic
        return out

    now = 10_000.0
    assert not container_is_stale(labels("h:1:live", 0), board, now)
    assert container_is_stale(labels("h:1:gone", 0), board, now)
    assert not container_is_stale(labels("h:1:gone", now - 5), board, now)  # young: kept
    # a board of another topic (another deployment) does not judge this container
    other = LiveSet("u.worker-heartbeats", frozenset())
    assert not container_is_stale(labels("h:1:gone", 0), other, now)
    # untracked: only a pid of this host can tell
    me = f"{socket.gethostname()}:{os.getpid()}"
    assert not container_is_stale(labels(me, 0, topic=None), board, now)
    assert not container_is_stale(labels("far:1", 0, topic=None), board, now)
