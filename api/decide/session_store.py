"""One replica's copy of every session: what the sessions log says (in SQLite), plus this
replica's own writes until the log confirms them.

Why SQLite: a replica holds every conversation (any replica may serve any turn), and a
million sessions as Python objects would cost gigabytes; in a throw-away SQLite file they
cost the page cache, and the replica's memory stays flat. The file is rebuilt from the log
at every start (journal and fsync off: nothing here must survive the process). Recently
read sessions are kept parsed in a small LRU, so the hot path rarely parses JSON.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import tempfile
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import orjson

from api.decide.session_record import SessionRecord, supersedes


@dataclass(frozen=True, slots=True)
class LogEntry:
    """One message of the sessions log, as a replica applies it."""

    key: str
    value: bytes | None
    """The record's JSON, or None for a tombstone."""
    timestamp: float
    """Broker timestamp (unix seconds): the touch time of records written without one."""
    expires_version: int | None = None
    """A tombstone's condition: it deletes the record only up to this version."""
    by: str = ""
    """Replica that wrote the tombstone."""


_PREFIX = "provenroute-sessions-"


def _remove_orphans(directory: str | None) -> None:
    """Delete the files of replicas that died without closing theirs (kill -9)."""
    for path in Path(directory or tempfile.gettempdir()).glob(f"{_PREFIX}*-*.db"):
        try:
            pid = int(path.name.removeprefix(_PREFIX).split("-", 1)[0])
        except ValueError:
            continue
        if pid != os.getpid() and not Path(f"/proc/{pid}").exists():
            with contextlib.suppress(OSError):
                path.unlink()


_UPSERT = (
    "insert into sessions (key, version, touched, body) values (?, ?, ?, ?) "
    "on conflict (key) do update set version = excluded.version, touched = excluded.touched, "
    "body = excluded.body where excluded.version > sessions.version"
)


class SessionStore:
    def __init__(
        self,
        *,
        hot_size: int = 10_000,
        pending_ttl_s: float = 30.0,
        on_unconfirmed: Callable[[str], None] = lambda key: None,
        monotonic: Callable[[], float] = time.monotonic,
        directory: str | None = None,
    ) -> None:
        _remove_orphans(directory)
        fd, name = tempfile.mkstemp(prefix=f"{_PREFIX}{os.getpid()}-", suffix=".db", dir=directory)
        os.close(fd)
        self.path = Path(name)
        self.db = sqlite3.connect(name, isolation_level=None, check_same_thread=False)
        for pragma in (
            "journal_mode = off",
            "synchronous = off",
            "temp_store = memory",
            "cache_size = -16000",  # 16 MB of pages; the OS page cache does the rest
        ):
            self.db.execute(f"pragma {pragma}")
        self.db.execute(
            "create table sessions (key text primary key, version integer not null, "
            "touched real not null, body blob not null)"
        )
        self.db.execute("create index sessions_touched on sessions (touched, key)")
        self.hot: OrderedDict[str, SessionRecord] = OrderedDict()
        self.hot_size = hot_size
        self.pending: dict[str, tuple[SessionRecord, float]] = {}
        """This replica's writes the log has not confirmed yet: read-your-writes."""
        self.pending_ttl_s = pending_ttl_s
        self.on_unconfirmed = on_unconfirmed
        self.monotonic = monotonic

    # ---- reads ---------------------------------------------------------------------------

    def confirmed(self, key: str) -> SessionRecord | None:
        """What the log says about `key` (raises on an unreadable record)."""
        record = self.hot.get(key)
        if record is not None:
            self.hot.move_to_end(key)
            return record
        row = self.db.execute("select body from sessions where key = ?", (key,)).fetchone()
        if row is None:
            return None
        record = SessionRecord.model_validate_json(row[0])
        self.hot[key] = record
        if len(self.hot) > self.hot_size:
            self.hot.popitem(last=False)
        return record

    def get(self, key: str) -> SessionRecord | None:
        """The newest record this replica knows: its own unconfirmed write, or the log's."""
        current = self.confirmed(key)
        mine = self.pending.get(key)
        if mine is None:
            return current
        record, written = mine
        if current is not None and not supersedes(record.version, current.version):
            del self.pending[key]  # the log has it, or a newer write from elsewhere
            return current
        if self.monotonic() - written > self.pending_ttl_s:
            del self.pending[key]  # never reached the log (Kafka trouble): forget it
            self.on_unconfirmed(key)
            return current
        return record

    def put_pending(self, key: str, record: SessionRecord) -> None:
        self.pending[key] = (record, self.monotonic())

    def count(self) -> int:
        return int(self.db.execute("select count(*) from sessions").fetchone()[0])

    def expired(
        self, before: float, limit: int, after: tuple[float, str] | None = None
    ) -> list[tuple[str, int, float]]:
        """Up to `limit` (key, version, touched) of sessions last touched before `before`,
        oldest first, from past `after` (the last row of the previous page), leaving out
        those this replica has just written."""
        start = after or (float("-inf"), "")
        rows = self.db.execute(
            "select key, version, touched from sessions where touched < ? "
            "and (touched, key) > (?, ?) order by touched, key limit ?",
            (before, start[0], start[1], limit),
        ).fetchall()
        return [(k, int(v), float(t)) for k, v, t in rows if k not in self.pending]

    # ---- the log -------------------------------------------------------------------------

    def apply(self, entries: Iterable[LogEntry], me: str) -> list[tuple[str, bytes]]:
        """Apply log entries in log order. Returns the (key, body) of records this replica
        must write again: one of its own tombstones lost a race with a newer write, and
        compaction would otherwise keep the tombstone as the key's last word."""
        upserts: list[tuple[str, int, float, bytes]] = []
        reassert: list[tuple[str, bytes]] = []
        hot, pending = self.hot, self.pending
        db = self.db
        db.execute("begin")
        try:
            for e in entries:
                hot.pop(e.key, None)
                if e.value is None:
                    if upserts:  # keep log order around the tombstone
                        db.executemany(_UPSERT, upserts)
                        upserts = []
                    if self._tombstone(e, me):
                        row = db.execute(
                            "select body from sessions where key = ?", (e.key,)
                        ).fetchone()
                        if row is not None:
                            reassert.append((e.key, bytes(row[0])))
                    continue
                try:
                    meta = orjson.loads(e.value)
                    version = int(meta.get("version", 0))
                    touched = float(meta.get("touched_at") or e.timestamp)
                except (orjson.JSONDecodeError, AttributeError, TypeError, ValueError):
                    continue  # not a record: nothing to remember
                upserts.append((e.key, version, touched, e.value))
                mine = pending.get(e.key)
                if mine is not None and not supersedes(mine[0].version, version):
                    del pending[e.key]
            if upserts:
                db.executemany(_UPSERT, upserts)
        finally:
            db.execute("commit")
        return reassert

    def _tombstone(self, e: LogEntry, me: str) -> bool:
        """Delete per the tombstone; True when it was this replica's and a newer record
        survived it."""
        if e.expires_version is None:
            self.db.execute("delete from sessions where key = ?", (e.key,))
            return False
        cursor = self.db.execute(
            "delete from sessions where key = ? and version <= ?", (e.key, e.expires_version)
        )
        return cursor.rowcount == 0 and e.by == me

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.db.close()
        with contextlib.suppress(OSError):
            self.path.unlink()
