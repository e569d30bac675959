"""Versioned session records and one replica's store (SQLite, no Kafka): stale and late
writes never win, concurrent requests rebase, tombstones are conditional, own writes are
read back until the log confirms them."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from api.decide.session_record import (
    SessionRecord,
    remember_classification,
    successor,
    with_incumbent,
    write_needed,
)
from api.decide.session_store import LogEntry, SessionStore
from contracts.classification import Classification
from contracts.decision import SessionState
from tests.unit.test_taxonomy_tiers import LABEL

C = Classification.model_validate(LABEL)


def state(model: str) -> SessionState:
    return SessionState(model=model, reasoning_effort="medium", table_version="v1")


def rec(model: str | None, version: int, touched: float = 100.0, **kw: object) -> SessionRecord:
    return SessionRecord(
        incumbent=state(model) if model else None, version=version, touched_at=touched, **kw
    )


def body(record: SessionRecord) -> bytes:
    return record.model_dump_json().encode()


def entry(key: str, record: SessionRecord | None, **kw: object) -> LogEntry:
    return LogEntry(key=key, value=body(record) if record else None, timestamp=1.0, **kw)  # type: ignore[arg-type]


@pytest.fixture
def store(tmp_path) -> Iterator[SessionStore]:  # type: ignore[no-untyped-def]
    s = SessionStore(directory=str(tmp_path))
    yield s
    s.close()


# ---- successor: what a request writes --------------------------------------------------------


def test_a_write_on_an_unchanged_base_is_the_next_version() -> None:
    base = rec("m/old", 3)
    updated = with_incumbent(base, state("m/new"))
    out = successor(base, updated, base, now=500.0, writer="r1")
    assert (out.version, out.incumbent, out.touched_at, out.writer) == (
        4,
        state("m/new"),
        500.0,
        "r1",
    )
    assert successor(None, updated, None, now=1.0, writer="r1").version == 1


def test_a_request_decided_on_a_stale_incumbent_does_not_re_anchor_the_session() -> None:
    base = rec("m/old", 1)
    # Meanwhile another request of the conversation switched it to m/new.
    current = rec("m/new", 2)
    # This request, still seeing m/old, kept it (sticky) and classified a new turn.
    updated = remember_classification(base, "clf", "h-new", C)
    out = successor(base, updated, current, now=200.0, writer="r1")
    assert out.incumbent == state("m/new")
    assert out.version == 3
    assert [e.content_hash for e in out.classifications] == ["h-new"]  # the cache merges


def test_a_rebase_keeps_the_requests_incumbent_when_the_other_write_left_it_alone() -> None:
    base = rec("m/old", 1)
    current = remember_classification(base, "clf", "h-other", C).model_copy(update={"version": 2})
    updated = with_incumbent(base, state("m/new"))
    out = successor(base, updated, current, now=200.0, writer="r1")
    assert out.incumbent == state("m/new") and out.version == 3
    assert [e.content_hash for e in out.classifications] == ["h-other"]


def test_writes_happen_on_change_or_when_the_session_needs_a_touch() -> None:
    base = rec("m/a", 1, touched=1000.0)
    assert not write_needed(base, base, now=1010.0, refresh_s=100.0)
    assert write_needed(base, base, now=1100.0, refresh_s=100.0)
    assert write_needed(base, with_incumbent(base, state("m/b")), now=1010.0, refresh_s=100.0)
    assert not write_needed(None, SessionRecord(), now=0.0, refresh_s=1.0)


# ---- the store: the log decides ----------------------------------------------------------------


def test_an_older_or_re_sent_write_never_overrides_a_newer_one(store: SessionStore) -> None:
    store.apply([entry("c", rec("m/a", 1)), entry("c", rec("m/b", 2))], me="r1")
    store.apply([entry("c", rec("m/a", 1))], me="r1")  # late
    assert store.get("c") == rec("m/b", 2)
    store.apply([entry("c", rec("m/c", 2))], me="r1")  # same version, later in the log
    assert store.get("c") == rec("m/b", 2)


def test_own_writes_are_read_back_until_the_log_settles_them(store: SessionStore) -> None:
    store.apply([entry("c", rec("m/a", 1))], me="r1")
    store.put_pending("c", rec("m/mine", 2))
    assert store.get("c") == rec("m/mine", 2)
    # Another replica's version 2 reached the log first: it wins, mine is dropped.
    store.apply([entry("c", rec("m/theirs", 2)), entry("c", rec("m/mine", 2))], me="r1")
    assert store.get("c") == rec("m/theirs", 2) and store.pending == {}


def test_an_unconfirmed_write_is_forgotten_and_counted(tmp_path) -> None:  # type: ignore[no-untyped-def]
    now = [0.0]
    lost: list[str] = []
    store = SessionStore(
        directory=str(tmp_path),
        pending_ttl_s=30.0,
        on_unconfirmed=lost.append,
        monotonic=lambda: now[0],
    )
    try:
        store.put_pending("c", rec("m/mine", 1))
        assert store.get("c") == rec("m/mine", 1)
        now[0] = 31.0
        assert store.get("c") is None and lost == ["c"]
    finally:
        store.close()


def test_tombstones_delete_only_what_they_expired(store: SessionStore) -> None:
    store.apply([entry("a", rec("m/a", 3)), entry("b", rec("m/b", 1))], me="r1")
    # "a" was written again (v4) before r1's tombstone of v3 reached the log.
    again = store.apply(
        [
            entry("a", rec("m/a", 4, touched=900.0)),
            entry("a", None, expires_version=3, by="r1"),
            entry("b", None, expires_version=1, by="r2"),
        ],
        me="r1",
    )
    assert store.get("a") == rec("m/a", 4, touched=900.0)
    assert store.get("b") is None
    assert again == [("a", body(rec("m/a", 4, touched=900.0)))]  # r1 re-asserts what it raced
    store.apply([entry("a", None)], me="r1")  # a tombstone without a condition
    assert store.get("a") is None and store.count() == 0


def test_expired_lists_the_idle_ones_oldest_first_a_page_at_a_time(store: SessionStore) -> None:
    store.apply(
        [
            entry("new", rec("m", 1, 500.0)),
            entry("old", rec("m", 5, 10.0)),
            entry("mid", rec("m", 2, 50.0)),
            entry("mid2", rec("m", 1, 50.0)),
        ],
        me="r1",
    )
    assert store.expired(before=100.0, limit=10) == [
        ("old", 5, 10.0),
        ("mid", 2, 50.0),
        ("mid2", 1, 50.0),
    ]
    page = store.expired(before=100.0, limit=2)
    assert [k for k, _, _ in page] == ["old", "mid"]
    rest = store.expired(before=100.0, limit=2, after=(page[-1][2], page[-1][0]))
    assert [k for k, _, _ in rest] == ["mid2"]
    store.put_pending("old", rec("m", 6, 600.0))
    assert [k for k, _, _ in store.expired(before=100.0, limit=10)] == ["mid", "mid2"]


def test_a_dead_replicas_file_is_removed_a_live_ones_kept(tmp_path) -> None:  # type: ignore[no-untyped-def]
    dead = tmp_path / "provenroute-sessions-999999999-x.db"
    alive = tmp_path / "provenroute-sessions-1-y.db"  # pid 1 always exists
    dead.write_bytes(b"")
    alive.write_bytes(b"")
    store = SessionStore(directory=str(tmp_path))
    try:
        assert not dead.exists() and alive.exists() and store.path.exists()
    finally:
        store.close()
    assert not store.path.exists()


@given(
    st.lists(
        st.tuples(st.sampled_from("xyz"), st.integers(1, 4), st.sampled_from(["m/a", "m/b"])),
        max_size=25,
    ),
    st.integers(1, 6),
)
def test_batching_never_changes_the_outcome(writes: list[tuple[str, int, str]], chunk: int) -> None:
    """Whatever batches a replica reads the log in, it ends where one-by-one reading ends:
    per key, the first write of the highest version."""
    entries = [entry(k, rec(m, v)) for k, v, m in writes]
    expected: dict[str, SessionRecord] = {}
    for k, v, m in writes:
        if k not in expected or v > expected[k].version:
            expected[k] = rec(m, v)
    s = SessionStore()
    try:
        for i in range(0, len(entries), chunk):
            s.apply(entries[i : i + chunk], me="r")
        assert {k: s.get(k) for k in "xyz" if s.get(k) is not None} == expected
    finally:
        s.close()
