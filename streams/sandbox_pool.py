"""A warm pool of job containers: the next job's container starts while the current jobs run.

A job's `PooledSandbox.start()` claims a started, warmed-up container from the pool (it
takes the job's name, see `DockerSandbox.claim`) and the pool starts a replacement in the
background, so a job waits for a rename instead of create + start + warm-up. Bounded by the
job slots: at most `spare` containers wait unclaimed (the worker passes its job slots);
starts queue at `DockerSandbox`'s per-process gate like any other.

Nothing is left behind: a job's close removes its container in the background (the pool
awaits those removals when it closes); a pool unused for `idle_s` removes its spares; a
cancelled claim puts its container back; `aclose()` removes everything. A warm container is
a `DockerSandbox` like any other (labelled with this worker, listed for the atexit hook and
`close_all_sandboxes`, ended by EOF when the worker dies, swept by the janitor).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import time
from collections import deque
from collections.abc import Callable, Coroutine, Mapping
from typing import Any

from streams.docker_sandbox import DockerSandbox
from streams.sandbox import ExecResult, ManagedSandbox, SandboxError

log = logging.getLogger(__name__)

SandboxMaker = Callable[[str], DockerSandbox]
"""Key -> a sandbox not yet started (the pool's warm containers use pool keys)."""


class SandboxPool:
    def __init__(
        self,
        make: SandboxMaker,
        *,
        spare: int,
        idle_s: float = 60.0,
        key_prefix: str = "pool",
    ) -> None:
        if spare < 0:
            raise ValueError("spare must be >= 0")
        self.make = make
        self.spare = spare
        self.idle_s = idle_s
        self.key_prefix = key_prefix
        self._warm: deque[asyncio.Task[DockerSandbox]] = deque()
        self._background: set[asyncio.Task[None]] = set()
        self._numbers = itertools.count()
        self._idle_timer: asyncio.TimerHandle | None = None
        self._closed = False

    def sandbox(self, job_key: str) -> PooledSandbox:
        """The executor's sandbox factory: a job's sandbox, claimed when it starts."""
        return PooledSandbox(self, job_key)

    async def claim(self, job_key: str) -> DockerSandbox:
        """A started sandbox renamed for `job_key`; a new one when no warm one is left."""
        while True:
            if self._closed:
                raise SandboxError("the sandbox pool is closed")
            task = self._take()
            self._refill()
            try:
                sandbox = await asyncio.shield(task)
            except asyncio.CancelledError:
                failed = task.done() and (task.cancelled() or task.exception() is not None)
                if self._closed or failed:
                    self._dispose(task)
                else:  # still starting, or started: the next claim takes it
                    self._warm.appendleft(task)
                raise
            if self._closed or not sandbox.alive:  # its runner died meanwhile (janitor...)
                log.info("warm sandbox %s is gone; taking another", sandbox.name)
                self._close_later(sandbox)
                continue
            try:
                await sandbox.claim(job_key)
            except BaseException:
                self._close_later(sandbox)
                raise
            return sandbox

    def release(self, sandbox: DockerSandbox) -> None:
        """A job is done with `sandbox`: removed in the background, never reused."""
        self._close_later(sandbox)

    async def aclose(self) -> None:
        """Remove every warm container and wait for every pending removal."""
        self._closed = True
        if self._idle_timer is not None:
            self._idle_timer.cancel()
        while self._warm:
            self._dispose(self._warm.popleft())
        while self._background:
            await asyncio.gather(*list(self._background), return_exceptions=True)

    @property
    def warm(self) -> int:
        """Containers started or starting and not yet claimed."""
        return len(self._warm)

    @property
    def ready(self) -> int:
        """Containers started, warmed up and not yet claimed."""
        return sum(1 for t in self._warm if t.done() and not t.cancelled() and not t.exception())

    def fill(self) -> None:
        """Start spares now (a worker about to take jobs), not at the first claim."""
        self._refill()

    # ------------------------------------------------------------------ internals

    def _take(self) -> asyncio.Task[DockerSandbox]:
        # A ready one first, then the one that has been starting the longest.
        for task in self._warm:
            if task.done() and not task.cancelled() and not task.exception():
                self._warm.remove(task)
                return task
        return self._warm.popleft() if self._warm else self._spawn()

    def _refill(self) -> None:
        while len(self._warm) < self.spare and not self._closed:
            self._warm.append(self._spawn())
        if self._idle_timer is not None:
            self._idle_timer.cancel()
        self._idle_timer = asyncio.get_running_loop().call_later(self.idle_s, self._trim)

    def _spawn(self) -> asyncio.Task[DockerSandbox]:
        # Unique across the workers of a host: their pooled containers never share a name.
        key = f"{self.key_prefix}:{os.getpid()}:{next(self._numbers)}:{time.time_ns()}"
        return asyncio.create_task(self._start(self.make(key)), name=f"warm sandbox {key}")

    @staticmethod
    async def _start(sandbox: DockerSandbox) -> DockerSandbox:
        await sandbox.start()  # closes itself when it fails or is cancelled
        return sandbox

    def _trim(self) -> None:
        """No claim for `idle_s`: the spares go (the next claim starts afresh)."""
        while self._warm:
            self._dispose(self._warm.popleft())

    def _dispose(self, task: asyncio.Task[DockerSandbox]) -> None:
        if not task.done():
            task.cancel()  # a cancelled start removes its container itself
            self._track(self._swallow(task))
        elif not task.cancelled() and task.exception() is None:
            self._close_later(task.result())

    @staticmethod
    async def _swallow(task: asyncio.Task[DockerSandbox]) -> None:
        with contextlib.suppress(BaseException):
            sandbox = await task
            await sandbox.close()  # it finished starting before the cancel landed

    def _close_later(self, sandbox: DockerSandbox) -> None:
        self._track(sandbox.close())

    def _track(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)


class PooledSandbox(ManagedSandbox):
    """A job's sandbox backed by a warm container of a `SandboxPool`."""

    def __init__(self, pool: SandboxPool, job_key: str) -> None:
        self.pool = pool
        self.job_key = job_key
        self.start_ms: float | None = None
        """What the job waited for its container (a claim: a rename when one was warm)."""
        self.cold_start_ms: float | None = None
        """Create + start + warm-up of the container it got (paid ahead, in the pool)."""
        self._inner: DockerSandbox | None = None
        self._closed = False

    @property
    def name(self) -> str | None:
        return self._inner.name if self._inner is not None else None

    async def start(self) -> None:
        if self._inner is not None or self._closed:
            raise SandboxError("sandbox already started or closed")
        t0 = time.perf_counter()
        self._inner = await self.pool.claim(self.job_key)
        self.start_ms = (time.perf_counter() - t0) * 1000.0
        self.cold_start_ms = self._inner.start_ms

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._inner is not None:
            self.pool.release(self._inner)

    def _sandbox(self) -> DockerSandbox:
        if self._inner is None or self._closed:
            raise SandboxError("sandbox is not running (not started, or closed)")
        return self._inner

    async def exec(
        self,
        cmd: str,
        timeout_s: float,
        *,
        env: Mapping[str, str] | None = None,
        stdin: str | None = None,
    ) -> ExecResult:
        return await self._sandbox().exec(cmd, timeout_s, env=env, stdin=stdin)

    async def write_files(self, files: Mapping[str, str]) -> None:
        await self._sandbox().write_files(files)

    async def read_file(self, path: str) -> str:
        return await self._sandbox().read_file(path)

    async def reset(self, files: Mapping[str, str] | None = None) -> None:
        await self._sandbox().reset(files)
