"""The worker's end of a job container's runner: framed JSON requests over one attach stream.

The container's command is `container/runner.py serve`, which reads requests on its stdin
and answers on its stdout. The worker attaches to both once, before the container starts,
and keeps that one stream for the job (see `DockerSandbox`).

Why the attach stream and not a unix socket in a bind-mounted directory: it shares no host
directory with the container (nothing a task could write into or plant a socket in), needs
no file permissions agreed between the worker's uid and the container's, works against a
remote Docker engine, and ties the runner's life to the worker's: when the worker closes the
stream or dies (SIGKILL included), the runner reads EOF, exits, and the auto-removed
container goes with it. The price is one hop through dockerd, about 0.1 ms a round trip.

Frames: the runner writes `4-byte big-endian length + JSON`; Docker wraps what a non-TTY
container prints in its own 8-byte headers (stream id, length), which are stripped here.
Requests carry an id; the runner answers each with the same id, in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import socket
import struct
from collections.abc import Mapping
from typing import Any

import orjson

from contracts.sandbox import SandboxError

log = logging.getLogger(__name__)

_MUX = struct.Struct(">BxxxI")
"""Docker's header in front of each chunk a non-TTY container prints: stream (1 stdout,
2 stderr), three zero bytes, payload length."""
_STDOUT = 1
STDERR_TAIL = 2000
"""Bytes of the runner's own stderr (a crash's traceback) kept for the error message."""


class RunnerChannel:
    """Requests to one runner, any number in flight, each answered by id."""

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, name: str
    ) -> None:
        self.name = name
        self._reader = reader
        self._writer = writer
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._ids = itertools.count(1)
        self._error: SandboxError | None = None
        self._stderr = bytearray()
        self._task = asyncio.create_task(self._read_loop(), name=f"runner-channel {name}")

    @classmethod
    async def open(cls, sock: socket.socket, name: str) -> RunnerChannel:
        """Take over `sock` (the attach stream, connected); it is closed with the channel."""
        reader, writer = await asyncio.open_connection(sock=sock, limit=1 << 20)
        return cls(reader, writer, name)

    @property
    def broken(self) -> bool:
        return self._error is not None

    async def call(
        self, op: str, fields: Mapping[str, Any] | None = None, *, wait_s: float
    ) -> dict[str, Any]:
        """Send one request (`op` and its `fields`) and wait for its answer.

        TimeoutError after `wait_s`; SandboxError when the runner is gone. A call that
        times out or is cancelled sends `cancel` for itself, so an exec the worker gave up
        on does not keep the runner (and the requests queued behind it) busy.
        """
        if self._error is not None:
            raise self._error
        rid = next(self._ids)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[rid] = future
        try:
            self._send({**(fields or {}), "id": rid, "op": op})
            await self._writer.drain()
            async with asyncio.timeout(wait_s):
                return await future
        except BaseException:
            if self._pending.pop(rid, None) is not None and self._error is None:
                with contextlib.suppress(Exception):
                    self._send({"id": 0, "op": "cancel", "target": rid})
            raise

    async def close(self) -> None:
        """Close the stream: the runner reads EOF, kills what it runs and exits."""
        self._fail("the sandbox was closed")
        self._writer.close()
        with contextlib.suppress(Exception):
            await self._writer.wait_closed()
        self._task.cancel()
        with contextlib.suppress(BaseException):
            await self._task

    def _send(self, obj: dict[str, Any]) -> None:
        body = orjson.dumps(obj)
        self._writer.write(len(body).to_bytes(4, "big") + body)

    async def _read_loop(self) -> None:
        buf = bytearray()
        reason = "the runner's stream closed"
        try:
            while True:
                stream, size = _MUX.unpack(await self._reader.readexactly(_MUX.size))
                chunk = await self._reader.readexactly(size)
                if stream != _STDOUT:
                    self._on_stderr(chunk)
                    continue
                buf += chunk
                start = 0
                while len(buf) - start >= 4:
                    end = start + 4 + int.from_bytes(buf[start : start + 4], "big")
                    if end > len(buf):
                        break
                    self._deliver(orjson.loads(buf[start + 4 : end]))
                    start = end
                del buf[:start]
        except (asyncio.IncompleteReadError, ConnectionError, OSError):
            pass
        except orjson.JSONDecodeError as e:
            reason = f"the runner sent a malformed frame ({e})"
        finally:
            self._fail(reason)

    def _deliver(self, answer: Any) -> None:
        rid = answer.get("id") if isinstance(answer, dict) else None
        future = self._pending.pop(rid, None) if isinstance(rid, int) else None
        if future is not None and not future.done():
            future.set_result(answer)
        elif rid is None:
            log.warning("runner of %s: %s", self.name, str(answer)[:500])
        # otherwise: the answer to a call that was given up on (cancelled, timed out)

    def _on_stderr(self, chunk: bytes) -> None:
        self._stderr += chunk
        del self._stderr[:-STDERR_TAIL]
        log.warning("runner of %s: %s", self.name, chunk.decode("utf-8", "replace")[:500])

    def _fail(self, reason: str) -> None:
        if self._error is None:
            tail = self._stderr.decode("utf-8", "replace").strip()
            detail = f"; its stderr: {tail[-500:]}" if tail else ""
            self._error = SandboxError(f"runner of {self.name} is gone: {reason}{detail}")
        pending, self._pending = self._pending, {}
        for future in pending.values():
            if not future.done():
                future.set_exception(self._error)
