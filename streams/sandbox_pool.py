"""A warm pool of job containers: the next job's container starts while the current jobs run.

A job's `PooledSandbox.start()` claims a started, warmed-up container from the pool (it
takes the job's name, see `DockerSandbox.claim`) and the pool starts a replacement in the
background, so a job waits for a rename instead of create + start + warm-up. Bounded by the
job slots: at most `spare` containers wait unclaimed (the worker passes its job slots);
starts queue at `DockerSandbox`'s per-process gate like any other.

A job that ended cleanly hands its container back instead (`PooledSandbox.keep`): the
runner recycles it in the background (kills whatever the job left running, empties the
workspace, restores the scratch dirs and the home: `container/runner.py` `recycle`) and it
waits as a *used* spare, tagged with the job's run, for the run's next job on this worker,
which takes it before any warm one: no start at all, and no start competing for the CPU
with the jobs that run. A used spare never serves another run, expires after `reuse_idle_s`
unclaimed, and counts against the same bound (warm + used <= `spare`; a used one coming
back makes room by dropping a warm one, one still starting first). A job that failed,
was cancelled or had a case time out is never kept: its container is removed as before.

Nothing is left behind: a job's close removes its container in the background (the pool
awaits those removals when it closes); a pool unused for `idle_s` removes its spares; a
cancelled claim puts a warm container back (a used one is removed); `aclose()` removes
everything. A warm container is
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
from dataclasses import dataclass, field
from typing import Any

from streams.docker_sandbox import DockerSandbox, container_name
from streams.sandbox import ExecResult, ManagedSandbox, SandboxError

log = logging.getLogger(__name__)

SandboxMaker = Callable[[str], DockerSandbox]
"""Key -> a sandbox not yet started (the pool's warm containers use pool keys)."""

DEFAULT_REUSE_IDLE_S = 5.0
"""How long a used spare waits for its run's next job: jobs of a run follow each other
within milliseconds on a busy worker; a run that ended leaves nothing behind for long."""


@dataclass(eq=False)
class _Used:
    tag: str
    sandbox: DockerSandbox
    task: asyncio.Task[DockerSandbox] = field(init=False)
    """Its recycle: the sandbox once recycled; on failure it has closed itself."""
    timer: asyncio.TimerHandle | None = None
    claimed: bool = False


class SandboxPool:
    def __init__(
        self,
        make: SandboxMaker,
        *,
        spare: int,
        idle_s: float = 60.0,
        reuse_idle_s: float = DEFAULT_REUSE_IDLE_S,
        key_prefix: str = "pool",
    ) -> None:
        if spare < 0:
            raise ValueError("spare must be >= 0")
        self.make = make
        self.spare = spare
        self.idle_s = idle_s
        self.reuse_idle_s = reuse_idle_s
        self.key_prefix = key_prefix
        self._warm: deque[asyncio.Task[DockerSandbox]] = deque()
        self._used: list[_Used] = []
        self.reused = 0
        """Claims served by a used spare (diagnostics, tests)."""
        self._background: set[asyncio.Task[None]] = set()
        self._numbers = itertools.count()
        self._idle_timer: asyncio.TimerHandle | None = None
        self._closed = False

    def sandbox(self, job_key: str, reuse_tag: str | None = None) -> PooledSandbox:
        """The executor's sandbox factory: a job's sandbox, claimed when it starts. With a
        `reuse_tag` (the job's run) it takes a used spare of that tag first, and its
        container may be kept for the tag's next job (`PooledSandbox.keep`)."""
        return PooledSandbox(self, job_key, reuse_tag)

    async def claim(self, job_key: str, reuse_tag: str | None = None) -> DockerSandbox:
        """A started sandbox renamed for `job_key`: a used spare of `reuse_tag`, else a warm
        one, else a new one."""
        if reuse_tag is not None:
            used = await self.claim_used(job_key, reuse_tag)
            if used is not None:
                return used
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
            return await self._renamed(sandbox, job_key)

    def release(self, sandbox: DockerSandbox, reuse_tag: str | None = None) -> None:
        """A job is done with `sandbox`: removed in the background; with a `reuse_tag` (its
        job ended cleanly) recycled instead, for the tag's next job."""
        if reuse_tag is None or self._closed or self.spare == 0 or not sandbox.alive:
            self._close_later(sandbox)
            return
        self._make_room()
        entry = _Used(reuse_tag, sandbox)
        entry.task = asyncio.create_task(
            self._recycle(entry, self._key()), name=f"recycle sandbox {sandbox.name}"
        )
        task = entry.task
        entry.timer = asyncio.get_running_loop().call_later(
            self.reuse_idle_s, self._drop_used, entry
        )
        task.add_done_callback(lambda t: self._drop_used(entry) if _failed(t) else None)
        self._used.append(entry)

    async def aclose(self) -> None:
        """Remove every warm container and wait for every pending removal."""
        self._closed = True
        if self._idle_timer is not None:
            self._idle_timer.cancel()
        while self._warm:
            self._dispose(self._warm.popleft())
        while self._used:
            self._drop_used(self._used[0])
        while self._background:
            await asyncio.gather(*list(self._background), return_exceptions=True)

    @property
    def warm(self) -> int:
        """Containers started or starting and not yet claimed."""
        return len(self._warm)

    @property
    def used(self) -> int:
        """Used containers recycled or recycling for their run's next job."""
        return len(self._used)

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
        while len(self._warm) + len(self._used) < self.spare and not self._closed:
            self._warm.append(self._spawn())
        self._touch()

    def _touch(self) -> None:
        if self._idle_timer is not None:
            self._idle_timer.cancel()
        self._idle_timer = asyncio.get_running_loop().call_later(self.idle_s, self._trim)

    def _key(self) -> str:
        # Unique across the workers of a host: their pooled containers never share a name.
        return f"{self.key_prefix}:{os.getpid()}:{next(self._numbers)}:{time.time_ns()}"

    def _spawn(self) -> asyncio.Task[DockerSandbox]:
        key = self._key()
        task = asyncio.create_task(self._start(self.make(key)), name=f"warm sandbox {key}")
        task.add_done_callback(self._forget_failed)
        return task

    def _forget_failed(self, task: asyncio.Task[DockerSandbox]) -> None:
        # A spare that could not start (no engine, no image) is not handed to a job later;
        # the next claim tries afresh and fails or succeeds on its own.
        if not task.cancelled() and task.exception() is not None and task in self._warm:
            self._warm.remove(task)
            log.warning("a warm sandbox failed to start: %s", task.exception())

    async def claim_used(self, job_key: str, tag: str) -> DockerSandbox | None:
        """A used spare of `tag`, recycled and renamed for `job_key`; None when none is left.
        Taking one starts nothing: the job it serves will give it back in turn."""
        while (entry := self._take_used(tag, container_name(job_key))) is not None:
            self._touch()
            try:
                sandbox = await asyncio.shield(entry.task)
            except asyncio.CancelledError:
                self._dispose(entry.task)  # simpler than putting it back; it is removed
                raise
            except Exception:
                continue  # its recycle failed: it removed itself
            if self._closed or not sandbox.alive:
                self._close_later(sandbox)
                continue
            await self._renamed(sandbox, job_key)
            self.reused += 1
            return sandbox
        return None

    async def _renamed(self, sandbox: DockerSandbox, job_key: str) -> DockerSandbox:
        """`sandbox` under the job's name; removed (in the background) when that fails."""
        try:
            await sandbox.claim(job_key)
        except BaseException:
            self._close_later(sandbox)
            raise
        return sandbox

    def _take_used(self, tag: str, name: str) -> _Used | None:
        # One still recycling holds its last job's name: a later copy of that job takes it
        # (another container could not take the name); else a recycled one first, then one
        # still recycling (milliseconds, not a start).
        mine = [u for u in self._used if u.tag == tag and not _failed(u.task)]
        if not mine:
            return None
        entry = next(
            (u for u in mine if u.sandbox.name == name),
            next((u for u in mine if u.task.done()), mine[0]),
        )
        self._used.remove(entry)
        entry.claimed = True
        if entry.timer is not None:
            entry.timer.cancel()
        return entry

    def _drop_used(self, entry: _Used) -> None:
        if entry in self._used:
            self._used.remove(entry)
            if entry.timer is not None:
                entry.timer.cancel()
            self._dispose(entry.task)

    def _make_room(self) -> None:
        """Room for one more spare under the bound: a warm one still starting goes first
        (its start stops competing for the CPU), then the oldest warm, then the oldest used."""
        while self._warm or self._used:
            if len(self._warm) + len(self._used) < self.spare:
                return
            starting = [t for t in self._warm if not t.done()]
            if starting:
                self._warm.remove(starting[-1])
                self._dispose(starting[-1])
            elif self._warm:
                self._dispose(self._warm.popleft())
            else:
                self._drop_used(self._used[0])

    async def _recycle(self, entry: _Used, key: str) -> DockerSandbox:
        sandbox = entry.sandbox
        try:
            await sandbox.recycle()
            # It gives its last job's name back (a later copy of that job can take it),
            # unless a job already claimed it: that job's claim renames it once, not twice.
            if not entry.claimed:
                await sandbox.claim(key)
        except BaseException as e:
            if not isinstance(e, asyncio.CancelledError):
                log.warning("sandbox %s not reusable (%s); removing it", sandbox.name, e)
            await sandbox.close()
            raise
        return sandbox

    @staticmethod
    async def _start(sandbox: DockerSandbox) -> DockerSandbox:
        await sandbox.start()  # closes itself when it fails or is cancelled
        return sandbox

    def _trim(self) -> None:
        """No claim for `idle_s`: the spares go (the next claim starts afresh)."""
        while self._warm:
            self._dispose(self._warm.popleft())
        while self._used:
            self._drop_used(self._used[0])

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


def _failed(task: asyncio.Task[DockerSandbox]) -> bool:
    return task.done() and (task.cancelled() or task.exception() is not None)


class PooledSandbox(ManagedSandbox):
    """A job's sandbox backed by a warm (or used) container of a `SandboxPool`."""

    def __init__(self, pool: SandboxPool, job_key: str, reuse_tag: str | None = None) -> None:
        self.pool = pool
        self.job_key = job_key
        self.reuse_tag = reuse_tag
        self.reused: bool | None = None
        """Whether the job got a used container of its run (None: not started)."""
        self._keep = False
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
        used = None
        if self.reuse_tag is not None:
            used = await self.pool.claim_used(self.job_key, self.reuse_tag)
        self.reused = used is not None
        self._inner = used or await self.pool.claim(self.job_key)
        self.start_ms = (time.perf_counter() - t0) * 1000.0
        self.cold_start_ms = self._inner.start_ms  # paid once, by its first job's pool

    def keep(self) -> None:
        """The job ended cleanly: `close()` hands the container back for the run's next job
        (when the sandbox has a reuse tag) instead of removing it."""
        self._keep = True

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._inner is not None:
            self.pool.release(self._inner, self.reuse_tag if self._keep else None)

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
