"""A local, append-only spool for messages that must reach Kafka at least once.

The decide service never waits on Kafka, so a decision event that cannot be queued (the
queue is full) or delivered (the broker refused it three times) is written here instead of
being dropped, and sent again once Kafka takes messages. Decision events carry their own id
(`decision_id`), so a message sent twice is deduplicated by its consumers.

Each process appends to a file of its own and holds an exclusive `flock` on it while it is
open. A file nobody holds a lock on is finished: its writer rotated it for sending, or died.
Any replica (or the next start) claims such a file by taking the lock, sends its lines, then
deletes it — so a crash never loses what was spooled, it only delays it.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Final

import orjson

log = logging.getLogger("provenroute.decide.spool")

_SUFFIX: Final = ".jsonl"


@dataclass(frozen=True, slots=True)
class Spooled:
    kind: str
    topic: str
    key: bytes
    value: bytes


class Spool:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._file: IO[bytes] | None = None
        self._path: Path | None = None
        self.pending = 0
        """Lines this process wrote and has not yet sent (an estimate across restarts)."""

    # ---- writing (the hot path when Kafka is behind) -----------------------------------

    def append(self, kind: str, topic: str, key: bytes, value: bytes) -> None:
        """Write one message durably enough to survive this process being killed."""
        f = self._file or self._open()
        f.write(orjson.dumps([kind, topic, key.decode(), value.decode()]) + b"\n")
        f.flush()  # in the kernel: a kill -9 of this process no longer loses it
        self.pending += 1

    def _open(self) -> IO[bytes]:
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.directory / f"spool-{os.getpid()}-{uuid.uuid4().hex[:12]}{_SUFFIX}"
        f = open(path, "ab")  # noqa: SIM115 - held open on purpose, closed by `rotate`
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        self._file, self._path = f, path
        return f

    def rotate(self) -> None:
        """Finish the current file (releasing its lock) so it can be claimed and sent."""
        if self._file is not None:
            self._file.close()
            self._file = self._path = None

    # ---- sending -----------------------------------------------------------------------

    def claimable(self) -> list[Path]:
        """Finished files, oldest first (names sort by nothing useful; mtime does)."""
        if not self.directory.is_dir():
            return []
        files = [p for p in self.directory.glob(f"spool-*{_SUFFIX}") if p != self._path]
        return sorted(files, key=lambda p: p.stat().st_mtime if p.exists() else 0.0)

    @contextlib.contextmanager
    def claim(self, path: Path) -> Iterator[list[Spooled] | None]:
        """The file's messages, or None when another process holds it. The caller deletes
        the file (`done`) once every message was handed on."""
        try:
            f = open(path, "rb")  # noqa: SIM115 - closed below
        except FileNotFoundError:
            yield None
            return
        try:
            try:
                fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield None
                return
            yield list(_parse(f.read(), path))
        finally:
            f.close()

    def done(self, path: Path, sent: int) -> None:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        self.pending = max(self.pending - sent, 0)

    def close(self) -> None:
        self.rotate()


def _parse(data: bytes, path: Path) -> Iterator[Spooled]:
    for n, line in enumerate(data.splitlines(), 1):
        try:
            kind, topic, key, value = orjson.loads(line)
        except (orjson.JSONDecodeError, ValueError):
            # A line cut short by a crash mid-write: the message before it is whole.
            log.warning("skipping an unreadable line %d of %s", n, path.name)
            continue
        yield Spooled(kind, topic, key.encode(), value.encode())
