#!/usr/bin/env python3
"""Runs one agent-CLI session inside a job container (stdlib only; python3 >= 3.9).

    agent_run.py SPEC.json | --b64 DATA

SPEC: {"argv": [...], "env": {...}, "stdin": "...", "files": {abs path: text},
"timeout_s": S, "port": P, "socket": "/run/provenroute/model.sock",
"result": "/tmp/.../result.json", "read_back": [abs paths], "cleanup": [dirs],
"max_stdout": N}.

1. writes `files` (CLI config, prompt) — outside the workspace, which the task owns;
2. serves 127.0.0.1:`port` and relays every connection, byte for byte, to the unix socket
   `socket` (the container has no network: that socket, bind-mounted from the worker, is
   its only way out, and the model proxy behind it holds the credential);
3. runs `argv` in the workspace as the leader of its own process group with exactly `env`
   (no inherited environment), stdin from `stdin`; on timeout the whole group is killed;
4. writes `result`: exit code, timed_out, duration, stdout (head and tail kept), stderr
   with anything that looks like a credential redacted, and the `read_back` files.

Prints one JSON line (the result's path and exit facts). The result goes to a file because
the event stream can be larger than what an exec captures.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

WORKSPACE = os.environ.get("PROVENROUTE_WORKSPACE", "/workspace")
DEFAULT_MAX_STDOUT = 512 * 1024
MAX_STDERR = 16 * 1024
MAX_READ_BACK = 256 * 1024
_SECRETISH = [
    re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=-]{8,}"),
    re.compile(r"\bsk-[A-Za-z0-9_-]{8,}"),
    re.compile(r"(?i)((?:api[_-]?key|authorization|token)[\"']?\s*[:=]\s*[\"']?)[^\s\"',}]{6,}"),
]


def redact_secretish(text: str) -> str:
    """Scrub what looks like a credential (the container holds none; defence in depth)."""
    for pattern in _SECRETISH:
        text = pattern.sub(lambda m: (m.group(1) if m.groups() else "") + "[REDACTED]", text)
    return text


# ------------------------------------------------------------------ forwarder


def _pump(src: socket.socket, dst: socket.socket) -> None:
    try:
        while True:
            data = src.recv(65536)
            if not data:
                break
            dst.sendall(data)
    except OSError:
        pass
    finally:
        for s, how in ((dst, socket.SHUT_WR), (src, socket.SHUT_RD)):
            with contextlib.suppress(OSError):
                s.shutdown(how)


def _serve_connection(client: socket.socket, socket_path: str) -> None:
    upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        upstream.connect(socket_path)
    except OSError:
        client.close()
        upstream.close()
        return
    back = threading.Thread(target=_pump, args=(upstream, client), daemon=True)
    back.start()
    _pump(client, upstream)
    back.join()
    client.close()
    upstream.close()


def start_forwarder(port: int, socket_path: str) -> socket.socket:
    """Listen on 127.0.0.1:port (before the CLI starts: no connection is ever refused)."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", port))
    listener.listen(64)

    def accept_loop() -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            threading.Thread(
                target=_serve_connection, args=(client, socket_path), daemon=True
            ).start()

    threading.Thread(target=accept_loop, daemon=True).start()
    return listener


# ------------------------------------------------------------------ the CLI run


def _cap(data: bytes, limit: int) -> tuple[str, bool]:
    if len(data) <= limit:
        return data.decode("utf-8", "replace"), False
    half = limit // 2
    head = data[:half].decode("utf-8", "replace")
    tail = data[-half:].decode("utf-8", "replace")
    return f"{head}\n[... {len(data) - 2 * half} bytes cut ...]\n{tail}", True


def run(spec: dict) -> dict:
    for path, text in (spec.get("files") or {}).items():
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
    listener = start_forwarder(int(spec["port"]), spec["socket"])
    timeout_s = float(spec["timeout_s"])
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        t0 = time.monotonic()
        proc = subprocess.Popen(
            spec["argv"],
            cwd=spec.get("cwd") or WORKSPACE,
            env=dict(spec.get("env") or {}),
            stdin=subprocess.PIPE,
            stdout=out,
            stderr=err,
            start_new_session=True,
        )
        timed_out = False
        try:
            proc.communicate((spec.get("stdin") or "").encode("utf-8"), timeout=timeout_s)
        except subprocess.TimeoutExpired:
            timed_out = True
        finally:
            # Kill the whole group also after a normal exit: CLIs leave helpers behind.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        duration_ms = (time.monotonic() - t0) * 1000.0
        listener.close()
        out.seek(0)
        err.seek(0)
        stdout, stdout_cut = _cap(out.read(), int(spec.get("max_stdout") or DEFAULT_MAX_STDOUT))
        stderr_raw = err.read()
    stderr = redact_secretish(stderr_raw[-MAX_STDERR:].decode("utf-8", "replace"))
    read_back: dict = {}
    for path in spec.get("read_back") or []:
        try:
            with open(path, "rb") as f:
                read_back[path] = _cap(f.read(), MAX_READ_BACK)[0]
        except OSError:
            read_back[path] = None
    for path in spec.get("cleanup") or []:  # the CLI's state of this run
        shutil.rmtree(path, ignore_errors=True)
    return {
        "exit_code": None if timed_out else proc.returncode,
        "timed_out": timed_out,
        "duration_ms": duration_ms,
        "stdout": stdout,
        "stdout_truncated": stdout_cut,
        "stderr": stderr,
        "read_back": read_back,
    }


def main(argv: list[str]) -> int:
    if argv[:1] == ["--b64"] and len(argv) > 1:
        spec = json.loads(base64.b64decode(argv[1]))
    else:
        with open(argv[0], encoding="utf-8") as f:
            spec = json.load(f)
    try:
        result = run(spec)
    except Exception as e:  # the harness reads the reason instead of a traceback
        result = {"error": redact_secretish(f"{type(e).__name__}: {e}")}
    with open(spec["result"], "w", encoding="utf-8") as f:
        json.dump(result, f, ensure_ascii=False)
    summary = {k: result.get(k) for k in ("exit_code", "timed_out", "duration_ms", "error")}
    sys.stdout.write(json.dumps({"result": spec["result"], **summary}) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
