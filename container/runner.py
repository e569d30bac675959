#!/usr/bin/env python3
"""In-container runner for decider jobs (stdlib only; runs on any python3 >= 3.9).

The worker drives a job's container through `docker exec` calls of this script:

    runner.py init                      PID 1: reaps orphans, exits on SIGTERM or max lifetime
    runner.py warmup                    absorbs one-time start costs, reports tool versions
    runner.py write [--clean] (PAYLOAD.json | --b64 DATA)
                                        writes {relative path: text} into the workspace
    runner.py read [--max-bytes N] PATH prints a file of the workspace
    runner.py exec [--timeout S] [--grace S] [--max-output N] -- COMMAND

Every subcommand except `init` prints exactly one JSON object on stdout.

`exec` runs COMMAND with bash in the workspace as the leader of its own process group. On
timeout the whole group is SIGKILLed. Output is read from pipes by threads; when a stray
process (one that escaped the group, or a background child still holding the pipes after
the leader exited) keeps them open, the runner stops waiting after a grace period and
returns anyway, so a case can never hang on a pipe.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time

WORKSPACE = os.environ.get("PROVENROUTE_WORKSPACE", "/workspace")
DEFAULT_MAX_OUTPUT = 64 * 1024
"""Bytes kept per stream (head and tail halves); the rest is counted and dropped."""
DEFAULT_GRACE_S = 2.0
DEFAULT_MAX_LIFETIME_S = 4 * 3600.0
"""A container whose worker vanished stops itself after this long (the janitor is faster)."""
# A stable, minimal environment: the container has no secrets, and commands must not
# depend on whatever `docker exec` happened to inherit.
EXEC_ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "HOME": os.environ.get("HOME", "/tmp"),
    "LANG": "C.UTF-8",
    "LC_ALL": "C.UTF-8",
    "TERM": "dumb",
    "PYTHONDONTWRITEBYTECODE": "1",
}


def _emit(obj: dict) -> None:
    sys.stdout.write(json.dumps(obj, ensure_ascii=False))
    sys.stdout.write("\n")
    sys.stdout.flush()


# ------------------------------------------------------------------------------------ init


def cmd_init(argv: list[str]) -> int:
    """Minimal init: reap every orphan (keeps zombies off the pids limit), exit on TERM.

    Processes left behind by `docker exec` commands are re-parented to PID 1; without a
    reaper their zombies would count against the pids limit until the container died.
    """
    max_lifetime = DEFAULT_MAX_LIFETIME_S
    if argv[:1] == ["--max-lifetime"] and len(argv) > 1:
        max_lifetime = float(argv[1])

    def _exit(_signum: int, _frame: object) -> None:
        raise SystemExit(0)

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGALRM):
        signal.signal(sig, _exit)
    signal.alarm(max(int(max_lifetime), 1))
    while True:
        try:
            os.wait()
        except ChildProcessError:
            time.sleep(0.2)  # no children yet: orphans are adopted while we sleep


# ---------------------------------------------------------------------------------- warmup


def cmd_warmup(_argv: list[str]) -> int:
    """Touch what the first real command would pay for: bash, the tools, the workspace."""
    start = time.monotonic()
    probe = subprocess.run(
        [
            "/bin/bash",
            "-c",
            "set -e; jq --version; gawk --version | head -n1; grep --version | head -n1;"
            " sed --version | head -n1; python3 --version",
        ],
        cwd=WORKSPACE,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env=EXEC_ENV,
        timeout=30,
        check=False,
    )
    writable = os.access(WORKSPACE, os.W_OK)
    _emit(
        {
            "ok": probe.returncode == 0 and writable,
            "python": sys.version.split()[0],
            "tools": [line for line in probe.stdout.splitlines() if line.strip()],
            "stderr": probe.stderr[-2000:],
            "workspace_writable": writable,
            "uid": os.getuid(),
            "duration_ms": (time.monotonic() - start) * 1000.0,
        }
    )
    return 0


# ------------------------------------------------------------------------------ write/read


def _inside(rel: str) -> str:
    """Resolve a workspace-relative path, refusing anything that would leave the workspace."""
    if not rel or rel.startswith("/") or "\x00" in rel:
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
    for entry in os.scandir(WORKSPACE):
        if entry.is_dir(follow_symlinks=False):
            _unlock_tree(entry.path)
            shutil.rmtree(entry.path)
        else:
            os.unlink(entry.path)


def cmd_write(argv: list[str]) -> int:
    """Write {relative path: text} into the workspace.

    The payload is a JSON file (deleted afterwards) or, for small payloads, inline base64
    JSON after `--b64` (one exec instead of an upload plus an exec). `--clean` empties the
    workspace first: a fresh workspace for a case in a single call.
    """
    clean = "--clean" in argv
    argv = [a for a in argv if a != "--clean"]
    payload_path: str | None = None
    try:
        if len(argv) == 2 and argv[0] == "--b64":
            files = json.loads(base64.b64decode(argv[1]).decode("utf-8"))
        elif len(argv) == 1:
            payload_path = argv[0]
            with open(payload_path, encoding="utf-8") as fh:
                files = json.load(fh)
        else:
            _emit({"ok": False, "error": "usage: write [--clean] (PAYLOAD.json | --b64 DATA)"})
            return 2
        if not isinstance(files, dict):
            raise ValueError("payload must be a JSON object")
        if clean:
            _clean_workspace()
        written = []
        for rel, text in files.items():
            if not isinstance(text, str):
                raise ValueError(f"content of {rel!r} must be text")
            full = _inside(rel)
            os.makedirs(os.path.dirname(full), exist_ok=True)
            with open(full, "w", encoding="utf-8", newline="") as out:
                out.write(text)
            written.append(rel)
        _emit({"ok": True, "written": written})
        return 0
    except Exception as e:  # always answer in JSON
        _emit({"ok": False, "error": f"{type(e).__name__}: {e}"})
        return 1
    finally:
        if payload_path is not None:
            with contextlib.suppress(OSError):
                os.unlink(payload_path)


def cmd_read(argv: list[str]) -> int:
    max_bytes = 1024 * 1024
    if argv[:1] == ["--max-bytes"] and len(argv) > 2:
        max_bytes = int(argv[1])
        argv = argv[2:]
    if len(argv) != 1:
        _emit({"ok": False, "error": "usage: read [--max-bytes N] PATH"})
        return 2
    path = argv[0]
    full = path if path.startswith("/") else os.path.join(WORKSPACE, path)
    try:
        with open(full, "rb") as fh:
            data = fh.read(max_bytes + 1)
        truncated = len(data) > max_bytes
        _emit(
            {
                "ok": True,
                "content": data[:max_bytes].decode("utf-8", errors="replace"),
                "truncated": truncated,
            }
        )
        return 0
    except FileNotFoundError:
        _emit({"ok": False, "error": f"no such file: {path}", "kind": "not_found"})
    except IsADirectoryError:
        _emit({"ok": False, "error": f"is a directory: {path}", "kind": "is_dir"})
    except OSError as e:
        _emit({"ok": False, "error": f"{type(e).__name__}: {e}", "kind": "os"})
    return 1


# ------------------------------------------------------------------------------------ exec


class _Capture:
    """Keeps the first and last `limit // 2` bytes of a stream and counts the rest."""

    def __init__(self, limit: int) -> None:
        self.half = max(limit // 2, 1)
        self.head = bytearray()
        self.tail = bytearray()
        self.total = 0
        self.done = threading.Event()

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


def _pump(fd: int, cap: _Capture) -> None:
    try:
        while True:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            cap.feed(chunk)
    except OSError:
        pass
    finally:
        cap.done.set()


def _killpg(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def run_command(command: str, timeout_s: float, grace_s: float, max_output: int) -> dict:
    start = time.monotonic()
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    out_cap, err_cap = _Capture(max_output), _Capture(max_output)
    # Readers start before the command: a command that fills the pids limit at once (a
    # fork storm) must not leave the runner unable to start its own threads.
    for fd, cap in ((out_r, out_cap), (err_r, err_cap)):
        threading.Thread(target=_pump, args=(fd, cap), daemon=True).start()
    try:
        proc = subprocess.Popen(
            ["/bin/bash", "-c", command],
            cwd=WORKSPACE,
            stdin=subprocess.DEVNULL,
            stdout=out_w,
            stderr=err_w,
            env=EXEC_ENV,
            start_new_session=True,  # leader of its own session and process group
            close_fds=True,
        )
    except OSError as e:  # e.g. EAGAIN: no pid left under the limit
        os.close(out_w)
        os.close(err_w)
        return {
            "exit_code": 126,
            "timed_out": False,
            "stdout": "",
            "stderr": f"runner: could not start the command: {e}\n",
            "truncated": False,
            "pipes_held": False,
            "duration_ms": (time.monotonic() - start) * 1000.0,
        }
    os.close(out_w)
    os.close(err_w)

    timed_out = False
    try:
        proc.wait(timeout=max(timeout_s, 0.0))
    except subprocess.TimeoutExpired:
        timed_out = True
        _killpg(proc.pid)
        proc.wait()

    # The leader is gone. Pipes close once every holder exits; give strays a grace period,
    # then kill what is left of the group and stop waiting regardless (the backstop).
    grace_deadline = time.monotonic() + grace_s
    for cap in (out_cap, err_cap):
        cap.done.wait(timeout=max(grace_deadline - time.monotonic(), 0.0))
    pipes_held = not (out_cap.done.is_set() and err_cap.done.is_set())
    if pipes_held:
        _killpg(proc.pid)
        for cap in (out_cap, err_cap):
            cap.done.wait(timeout=0.2)

    code = proc.returncode
    if code is not None and code < 0:
        code = 128 - code  # killed by a signal: report it the way a shell does
    return {
        "exit_code": None if timed_out else code,
        "timed_out": timed_out,
        "stdout": out_cap.text(),
        "stderr": err_cap.text(),
        "truncated": out_cap.truncated or err_cap.truncated,
        "pipes_held": pipes_held,
        "duration_ms": (time.monotonic() - start) * 1000.0,
    }


def cmd_exec(argv: list[str]) -> int:
    timeout_s, grace_s, max_output = 60.0, DEFAULT_GRACE_S, DEFAULT_MAX_OUTPUT
    while argv and argv[0] != "--":
        flag, value, argv = argv[0], argv[1], argv[2:]
        if flag == "--timeout":
            timeout_s = float(value)
        elif flag == "--grace":
            grace_s = float(value)
        elif flag == "--max-output":
            max_output = int(value)
        else:
            _emit({"ok": False, "error": f"unknown flag {flag}"})
            return 2
    if len(argv) != 2:
        _emit({"ok": False, "error": "usage: exec [flags] -- COMMAND"})
        return 2
    result = run_command(argv[1], timeout_s, grace_s, max_output)
    result["ok"] = True
    _emit(result)
    # Return without waiting for the (daemon) reader threads a stray may still block.
    sys.stdout.flush()
    os._exit(0)


COMMANDS = {
    "init": cmd_init,
    "warmup": cmd_warmup,
    "write": cmd_write,
    "read": cmd_read,
    "exec": cmd_exec,
}


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in COMMANDS:
        _emit({"ok": False, "error": f"usage: runner.py {{{','.join(COMMANDS)}}} ..."})
        return 2
    return COMMANDS[argv[0]](argv[1:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
