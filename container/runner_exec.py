"""How the in-container runner runs one command (stdlib only; python3 >= 3.9).

A command runs with bash in the workspace as the leader of its own process group; on
timeout (or a cancel from the worker) the whole group is SIGKILLed. Output is read with a
poll loop and capped (head and tail kept). When a stray process (one that escaped the
group, or a background child still holding the pipes after the leader exited) keeps them
open, the runner stops waiting after a grace period and answers anyway, so a case can never
hang on a pipe.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import signal
import subprocess
import threading
import time

WORKSPACE = os.environ.get("PROVENROUTE_WORKSPACE", "/workspace")
DEFAULT_MAX_OUTPUT = 64 * 1024
"""Bytes kept per stream (head and tail halves); the rest is counted and dropped."""
DEFAULT_GRACE_S = 2.0
TICK_S = 0.02
"""Without pidfds: how often a running command is checked for its leader's exit."""
# A stable, minimal environment: the container has no secrets, and commands must not
# depend on whatever the runner itself inherited. A request may add variables on top.
EXEC_ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "HOME": os.environ.get("HOME", "/tmp"),
    "LANG": "C.UTF-8",
    "LC_ALL": "C.UTF-8",
    "TERM": "dumb",
    "PYTHONDONTWRITEBYTECODE": "1",
}


class _Capture:
    """Keeps the first and last `limit // 2` bytes of a stream and counts the rest."""

    def __init__(self, limit: int) -> None:
        self.half = max(limit // 2, 1)
        self.head = bytearray()
        self.tail = bytearray()
        self.total = 0

    def feed(self, chunk: bytes) -> None:
        self.total += len(chunk)
        room = self.half - len(self.head)
        if room > 0:
            self.head += chunk[:room]
            chunk = chunk[room:]
        if chunk:
            self.tail += chunk
            if len(self.tail) > self.half:
                del self.tail[: len(self.tail) - self.half]

    @property
    def truncated(self) -> bool:
        return self.total > len(self.head) + len(self.tail)

    def text(self) -> str:
        if not self.truncated:
            return (bytes(self.head) + bytes(self.tail)).decode("utf-8", errors="replace")
        dropped = self.total - len(self.head) - len(self.tail)
        return (
            bytes(self.head).decode("utf-8", errors="replace")
            + f"\n[... {dropped} bytes truncated ...]\n"
            + bytes(self.tail).decode("utf-8", errors="replace")
        )


def killpg(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def _pidfd(pid: int) -> int | None:
    try:
        return os.pidfd_open(pid)  # type: ignore[attr-defined,no-any-return]
    except (AttributeError, OSError):  # python < 3.9, kernel < 5.3, or a seccomp refusal
        return None


class Commands:
    """The runner's requests by id: which are queued, which command runs for which, so a
    cancel from the worker reaches a command that runs or skips one that waits."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._queued: set = set()
        self._cancelled: set = set()
        self._running: dict = {}
        """Request id -> pid (= process group) of its command."""

    def queued(self, rid: object) -> None:
        with self._lock:
            self._queued.add(rid)

    def skip(self, rid: object) -> bool:
        """True when `rid` was cancelled before it started: nobody waits for its answer."""
        with self._lock:
            return rid in self._cancelled

    def done(self, rid: object) -> None:
        with self._lock:
            self._queued.discard(rid)
            self._cancelled.discard(rid)

    def cancel(self, rid: object) -> None:
        with self._lock:
            if rid in self._queued:
                self._cancelled.add(rid)
            pid = self._running.get(rid)
        if pid is not None:
            killpg(pid)

    def kill_all(self) -> None:
        with self._lock:
            pids = list(self._running.values())
        for pid in pids:
            killpg(pid)

    def exec(self, req: dict) -> dict:
        """The `exec` request: {cmd, timeout_s, grace_s, max_output, [env], [stdin]}."""
        command = req.get("cmd")
        if not isinstance(command, str):
            raise ValueError("exec needs a cmd string")
        extra = req.get("env") or {}
        if not isinstance(extra, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in extra.items()
        ):
            raise ValueError("env must map names to strings")
        stdin = req.get("stdin")
        if stdin is not None and not isinstance(stdin, str):
            raise ValueError("stdin must be text")
        return self.run(
            req.get("id"),
            command,
            timeout_s=float(req.get("timeout_s", 60.0)),
            grace_s=float(req.get("grace_s", DEFAULT_GRACE_S)),
            max_output=int(req.get("max_output", DEFAULT_MAX_OUTPUT)),
            env={**EXEC_ENV, **extra},
            stdin=None if stdin is None else stdin.encode("utf-8"),
        )

    def run(
        self,
        rid: object,
        command: str,
        *,
        timeout_s: float,
        grace_s: float,
        max_output: int,
        env: dict,
        stdin: bytes | None,
    ) -> dict:
        start = time.monotonic()
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        in_r, in_w = os.pipe() if stdin else (None, None)
        try:
            proc = subprocess.Popen(
                ["/bin/bash", "-c", command],
                cwd=WORKSPACE,
                stdin=in_r if in_r is not None else subprocess.DEVNULL,
                stdout=out_w,
                stderr=err_w,
                env=env,
                start_new_session=True,  # leader of its own session and process group
                close_fds=True,
            )
        except OSError as e:  # e.g. EAGAIN: no pid left under the limit
            for fd in (out_r, out_w, err_r, err_w, in_r, in_w):
                if fd is not None:
                    os.close(fd)
            return {
                "exit_code": 126,
                "timed_out": False,
                "stdout": "",
                "stderr": f"runner: could not start the command: {e}\n",
                "truncated": False,
                "pipes_held": False,
                "duration_ms": (time.monotonic() - start) * 1000.0,
            }
        for fd in (out_w, err_w, in_r):
            if fd is not None:
                os.close(fd)
        with self._lock:
            self._running[rid] = proc.pid
            cancelled = rid in self._cancelled
        if cancelled:
            killpg(proc.pid)
        out, err = _Capture(max_output), _Capture(max_output)
        try:
            timed_out, pipes_held = _wait(
                proc, {out_r: out, err_r: err}, in_w, stdin, start + timeout_s, grace_s
            )
        finally:
            with self._lock:
                self._running.pop(rid, None)
                cancelled = rid in self._cancelled
        code = proc.returncode
        if code is not None and code < 0:
            code = 128 - code  # killed by a signal: report it the way a shell does
        return {
            "exit_code": None if timed_out else code,
            "timed_out": timed_out,
            "cancelled": cancelled,
            "stdout": out.text(),
            "stderr": err.text(),
            "truncated": out.truncated or err.truncated,
            "pipes_held": pipes_held,
            "duration_ms": (time.monotonic() - start) * 1000.0,
        }


def _wait(
    proc: subprocess.Popen,
    caps: dict,
    in_w: int | None,
    stdin: bytes | None,
    deadline: float,
    grace_s: float,
) -> tuple[bool, bool]:
    """Feed stdin, capture output, wait for the leader: (timed out, pipes held by strays).

    Wakes on the leader's exit (its pidfd), output or a deadline, never on a timer. The
    leader may exit while strays keep the pipes open: they get `grace_s`, then what is left
    of the group is killed and the wait ends regardless (the backstop)."""
    sel = selectors.DefaultSelector()
    for fd in caps:
        sel.register(fd, selectors.EVENT_READ)
    pending = memoryview(stdin or b"")
    if in_w is not None:
        os.set_blocking(in_w, False)
        sel.register(in_w, selectors.EVENT_WRITE)
    pidfd = _pidfd(proc.pid)
    if pidfd is not None:
        sel.register(pidfd, selectors.EVENT_READ)
    timed_out = False
    gone_at: float | None = None
    try:
        while True:
            now = time.monotonic()
            if gone_at is None and proc.poll() is not None:
                gone_at = now
            if gone_at is not None and pidfd is not None:
                sel.unregister(pidfd)
                os.close(pidfd)
                pidfd = None
            if gone_at is not None and not caps:
                return timed_out, False
            if gone_at is None and now >= deadline:
                timed_out = True
                killpg(proc.pid)
                proc.wait()
                continue
            if gone_at is not None and now >= gone_at + grace_s:
                killpg(proc.pid)
                return timed_out, True
            wait = max((deadline if gone_at is None else gone_at + grace_s) - now, 0.0)
            if gone_at is None and pidfd is None:
                wait = min(wait, TICK_S)
            if not sel.get_map():
                time.sleep(wait)
                continue
            for key, _mask in sel.select(timeout=wait):
                fd = key.fd
                if fd == pidfd:
                    continue  # the leader exited: seen at the top of the loop
                if fd == in_w:
                    try:
                        pending = pending[os.write(fd, pending[:65536]) :]
                    except OSError:  # the command closed its stdin: drop the rest
                        pending = pending[:0]
                    if not pending:
                        sel.unregister(fd)
                        os.close(fd)
                        in_w = None
                    continue
                try:
                    chunk = os.read(fd, 65536)
                except OSError:
                    chunk = b""
                if chunk:
                    caps[fd].feed(chunk)
                else:  # EOF: every holder of the pipe's write end is gone
                    sel.unregister(fd)
                    os.close(fd)
                    del caps[fd]
    finally:
        sel.close()
        for fd in [*caps, in_w, pidfd]:
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)
        if proc.returncode is None:
            proc.wait()
