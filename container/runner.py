#!/usr/bin/env python3
"""In-container runner for decider jobs (stdlib only; runs on any python3 >= 3.9).

`runner.py serve` is the container's command, PID 1. It forks: the parent stays PID 1 and
reaps every orphan (keeps zombies off the pids limit); the child serves the worker's requests
over its stdin/stdout, which the worker holds as one `docker attach` stream for the life of
the job. When that stream closes (the worker closed the sandbox, or died), stdin reaches EOF,
the server kills what it still runs and exits, PID 1 follows and the container (created with
auto-remove) disappears.

Framing, both ways: a 4-byte big-endian length, then that many bytes of a UTF-8 JSON object.
A request is `{"id": N, "op": OP, ...}`; its response carries the same `id` and `ok`.

    warmup                            absorbs one-time start costs, reports tool versions
    exec    cmd timeout_s grace_s max_output [env] [stdin]
    write   files                     writes {relative path: text} into the workspace
    read    path [max_bytes]          a file of the workspace (or an absolute path)
    reset   [files]                   empties the workspace and writes `files`, which become
                                      the pristine copy; without `files`, restores that copy
    recycle                           back to the state of a fresh container for another job:
                                      every other process killed, workspace emptied, scratch
                                      dirs and the home as they were when the runner started
    cancel  target                    kills the process group of request `target` (no answer)

Requests run one at a time, in order, on one worker thread (a reset is never overtaken by the
exec after it); `cancel` is handled by the reading thread at once, so it reaches a running
exec. How a command runs (process group, timeout, output caps, stray pipe holders) is in
`runner_exec.py`, copied next to this file in the image.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time

try:  # the repository (tests, type checks)
    from container.runner_exec import EXEC_ENV, WORKSPACE, Commands
except ImportError:  # the image: a script next to its sibling (python3 -E -s -S runner.py)
    from runner_exec import EXEC_ENV, WORKSPACE, Commands  # type: ignore[no-redef]

DEFAULT_MAX_LIFETIME_S = 4 * 3600.0
"""A container whose worker vanished stops itself after this long (EOF is faster)."""
MAX_FRAME = 256 * 1024 * 1024


# ------------------------------------------------------------------------------- workspace


def _inside(rel: str) -> str:
    """Resolve a workspace-relative path, refusing anything that would leave the workspace."""
    if not isinstance(rel, str) or not rel or rel.startswith("/") or "\x00" in rel:
        raise ValueError(f"path must be relative to the workspace: {rel!r}")
    parts = rel.replace("\\", "/").split("/")
    if ".." in parts:
        raise ValueError(f"path must stay inside the workspace: {rel!r}")
    root = os.path.realpath(WORKSPACE)
    full = os.path.realpath(os.path.join(root, rel))
    if full != root and not full.startswith(root + os.sep):
        raise ValueError(f"path resolves outside the workspace: {rel!r}")
    return full


def _unlock_tree(path: str) -> None:
    """A task may have chmod-ed its directories unreadable; we own them, so unlock first."""
    with contextlib.suppress(OSError):
        os.chmod(path, 0o700)
    for root, dirs, _files in os.walk(path):  # top-down: children unlocked before descent
        for d in dirs:
            child = os.path.join(root, d)
            if not os.path.islink(child):  # never chmod through a symlink
                with contextlib.suppress(OSError):
                    os.chmod(child, 0o700)


def _clean_workspace() -> None:
    """Empty the workspace (dotfiles included), keeping the directory itself."""
    with contextlib.suppress(OSError):
        os.chmod(WORKSPACE, 0o755)  # a task may have locked the workspace itself
    for entry in os.scandir(WORKSPACE):
        if entry.is_dir(follow_symlinks=False):
            _unlock_tree(entry.path)
            shutil.rmtree(entry.path)
        else:
            os.unlink(entry.path)


def _write_files(files: object) -> list[str]:
    if not isinstance(files, dict):
        raise ValueError("files must be a JSON object")
    written = []
    for rel, text in files.items():
        if not isinstance(text, str):
            raise ValueError(f"content of {rel!r} must be text")
        full = _inside(rel)
        os.makedirs(os.path.dirname(full), exist_ok=True)
        with open(full, "w", encoding="utf-8", newline="") as out:
            out.write(text)
        written.append(rel)
    return written


_pristine: dict = {}
"""The files of the last `reset` that carried files: what a bare `reset` restores."""


def op_reset(req: dict) -> dict:
    global _pristine
    files = req.get("files")
    if files is not None:
        if not isinstance(files, dict):
            raise ValueError("files must be a JSON object")
        _pristine = dict(files)
    _clean_workspace()
    return {"written": _write_files(_pristine)}


# Where the runner user can write outside the workspace (`find / -xdev -writable` as the
# runner user in the image, plus the tmpfs mounts /dev/shm and /dev/mqueue).
SCRATCH_DIRS = ("/tmp", "/var/tmp", "/run/lock", "/dev/shm", "/dev/mqueue")
HOME = os.environ.get("HOME") or "/home/runner"
RECYCLE_KILL_S = 5.0
"""Longest a recycle waits for the previous job's processes to die (then it fails)."""


class _Baseline:
    """What the scratch dirs and the home held when the runner started (a fresh container):
    entry names, and the home's small regular files with their content and mode."""

    def __init__(self) -> None:
        self.entries: dict = {}
        self.home_files: dict = {}

    def take(self) -> None:
        for d in sorted({os.path.realpath(p) for p in (*SCRATCH_DIRS, HOME)}):
            with contextlib.suppress(OSError):
                self.entries[d] = set(os.listdir(d))
        with contextlib.suppress(OSError):
            for entry in os.scandir(HOME):
                if entry.is_file(follow_symlinks=False) and entry.stat().st_size <= 1 << 16:
                    with open(entry.path, "rb") as fh:
                        self.home_files[entry.name] = (fh.read(), entry.stat().st_mode & 0o777)


_baseline = _Baseline()


def _remove(path: str) -> None:
    if os.path.isdir(path) and not os.path.islink(path):
        _unlock_tree(path)
        shutil.rmtree(path)
    else:
        os.unlink(path)


def _others() -> list:
    """Live processes of the container other than PID 1 and this server (zombies are
    dead: PID 1 reaps them)."""
    me, alive = os.getpid(), []
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) in (1, me):
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as fh:
                state = fh.read().rsplit(b")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue  # gone meanwhile
        if state not in (b"Z", b"X"):
            alive.append(int(name))
    return alive


def _kill_others() -> int:
    """SIGKILL every other process of the container: what the previous job left running
    (background children, daemons that left their process group). kill(-1) reaches every
    process of the container's pid namespace we may signal (all run as the runner user),
    except PID 1 and this process."""
    deadline = time.monotonic() + RECYCLE_KILL_S
    killed = len(_others())
    while True:
        with contextlib.suppress(ProcessLookupError):
            os.kill(-1, signal.SIGKILL)
        left = _others()
        if not left:
            return killed
        if time.monotonic() >= deadline:
            raise RuntimeError(f"processes survived SIGKILL: {left}")
        time.sleep(0.005)


def op_recycle(_req: dict) -> dict:
    global _pristine
    start = time.monotonic()
    killed = _kill_others()  # first: nothing may write while we clean
    _pristine = {}
    _clean_workspace()
    removed = 0
    for d, keep in _baseline.entries.items():
        for entry in os.scandir(d):
            if entry.name not in keep:
                _remove(entry.path)
                removed += 1
    with contextlib.suppress(OSError):
        os.chmod(HOME, 0o755)
    for name, (data, mode) in _baseline.home_files.items():
        path = os.path.join(HOME, name)
        if os.path.lexists(path):
            _remove(path)  # rewritten, not edited: also drops a symlink put in its place
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        with os.fdopen(fd, "wb") as out:
            out.write(data)
    ipc = _clear_sysv_ipc()
    return {
        "killed": killed,
        "removed": removed,
        "ipc": ipc,
        "duration_ms": (time.monotonic() - start) * 1000.0,
    }


def _clear_sysv_ipc() -> bool:
    """System V shared memory, semaphores and message queues outlive their processes in
    the container's IPC namespace; stdlib cannot remove them, ipcrm can (rarely needed:
    it only runs when /proc lists one)."""
    used = False
    for kind in ("shm", "sem", "msg"):
        with contextlib.suppress(OSError), open(f"/proc/sysvipc/{kind}") as fh:
            used = used or len(fh.read().splitlines()) > 1
    if used:
        done = subprocess.run(
            ["ipcrm", "--all"], stdin=subprocess.DEVNULL, capture_output=True, check=False
        )
        if done.returncode != 0:
            raise RuntimeError(f"ipcrm failed: {done.stderr[-500:]!r}")
    return used


def op_write(req: dict) -> dict:
    return {"written": _write_files(req.get("files"))}


def op_read(req: dict) -> dict:
    path = req.get("path")
    max_bytes = int(req.get("max_bytes") or 1024 * 1024)
    if not isinstance(path, str) or not path:
        raise ValueError("read needs a path")
    full = path if path.startswith("/") else os.path.join(WORKSPACE, path)
    try:
        with open(full, "rb") as fh:
            data = fh.read(max_bytes + 1)
    except FileNotFoundError:
        return {"ok": False, "error": f"no such file: {path}", "kind": "not_found"}
    except IsADirectoryError:
        return {"ok": False, "error": f"is a directory: {path}", "kind": "is_dir"}
    except OSError as e:
        return {"ok": False, "error": f"{type(e).__name__}: {e}", "kind": "os"}
    return {
        "content": data[:max_bytes].decode("utf-8", errors="replace"),
        "truncated": len(data) > max_bytes,
    }


def op_warmup(_req: dict) -> dict:
    """Touch what the first real command would pay for (bash, the workspace) and find the
    tools. One bash, no tool run: every container start pays for this, and the tools'
    pages are shared by all containers of the image anyway."""
    start = time.monotonic()
    probe = subprocess.run(
        ["/bin/bash", "-c", "command -v jq gawk grep sed python3"],
        cwd=WORKSPACE,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env=EXEC_ENV,
        timeout=30,
        check=False,
    )
    writable = os.access(WORKSPACE, os.W_OK)
    return {
        "ok": probe.returncode == 0 and writable,
        "python": sys.version.split()[0],
        "tools": [line for line in probe.stdout.splitlines() if line.strip()],
        "stderr": probe.stderr[-2000:],
        "workspace_writable": writable,
        "uid": os.getuid(),
        "duration_ms": (time.monotonic() - start) * 1000.0,
    }


# ---------------------------------------------------------------------------------- server

_commands = Commands()
OPS = {
    "warmup": op_warmup,
    "exec": _commands.exec,
    "write": op_write,
    "read": op_read,
    "reset": op_reset,
    "recycle": op_recycle,
}
_out_lock = threading.Lock()


def _send(obj: dict) -> None:
    body = json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    data = memoryview(len(body).to_bytes(4, "big") + body)
    with _out_lock:
        while data:
            data = data[os.write(1, data) :]


def _read_exact(n: int) -> bytes | None:
    buf = bytearray()
    while len(buf) < n:
        chunk = os.read(0, n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return bytes(buf)


def _handle(req: dict) -> None:
    rid = req.get("id")
    op = OPS.get(req.get("op"))  # type: ignore[arg-type]
    try:
        if _commands.skip(rid):  # cancelled while queued: the worker no longer waits for it
            return
        if op is None:
            raise ValueError(f"unknown op {req.get('op')!r}; one of {sorted(OPS)}")
        out = op(req)
    except Exception as e:  # always answer
        out = {"ok": False, "error": f"{type(e).__name__}: {e}"}
    finally:
        _commands.done(rid)
    out.setdefault("ok", True)
    out["id"] = rid
    _send(out)


def _work(requests: queue.Queue) -> None:
    while True:
        _handle(requests.get())


def serve() -> int:
    _baseline.take()  # before any job ran: what `recycle` restores
    requests: queue.Queue = queue.Queue()
    # Started before any command runs: a fork storm that fills the pids limit must not leave
    # the runner unable to start the thread that answers.
    threading.Thread(target=_work, args=(requests,), daemon=True).start()
    while True:
        head = _read_exact(4)
        size = int.from_bytes(head, "big") if head else -1
        body = _read_exact(size) if 0 <= size <= MAX_FRAME else None
        if body is None:
            break  # EOF (the worker is gone) or a broken stream
        try:
            req = json.loads(body.decode("utf-8"))
            if not isinstance(req, dict):
                raise ValueError("a request must be a JSON object")
        except ValueError as e:
            _send({"id": None, "ok": False, "error": f"bad request: {e}"})
            continue
        if req.get("op") == "cancel":
            _commands.cancel(req.get("target"))
        else:
            _commands.queued(req.get("id"))
            requests.put(req)
    _commands.kill_all()
    return 0


def cmd_serve(argv: list[str]) -> int:
    """PID 1: fork the server, reap every orphan, exit with the server (or on TERM)."""
    max_lifetime = DEFAULT_MAX_LIFETIME_S
    if argv[:1] == ["--max-lifetime"] and len(argv) > 1:
        max_lifetime = float(argv[1])
    server = os.fork()
    if server == 0:
        code = 1
        try:
            code = serve()
        finally:
            os._exit(code)  # do not wait for threads a stray may still block

    def _exit(_signum: int, _frame: object) -> None:
        os._exit(0)  # the kernel kills every other process of the namespace with PID 1

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGALRM):
        signal.signal(sig, _exit)
    signal.alarm(max(int(max_lifetime), 1))
    os.close(0)  # only the server reads the worker's stream
    while True:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            os._exit(0)
        if pid == server:
            os._exit(os.waitstatus_to_exitcode(status))


def main(argv: list[str]) -> int:
    if argv[:1] != ["serve"]:
        sys.stderr.write("usage: runner.py serve [--max-lifetime S]\n")
        return 2
    return cmd_serve(argv[1:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
