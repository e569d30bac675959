"""Local child processes of provenroute (simulated provider, worker, projector, decide
service): started with their output in a log file, in their own process group, waited on
until they answer, and stopped cleanly. Used by the demo, the benches and the e2e and
browser tests, so there is one way to run the stack as processes.

Every child gets `PROVENROUTE_ENV=dev` unless the caller's environment names another: these
are local stacks on the development secrets (see `infra.settings`).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Self

import httpx


class ChildFailed(RuntimeError):
    """A child exited or did not become ready in time; the message carries its log's tail."""


def cli(*args: str) -> list[str]:
    """argv of the `provenroute` CLI run by this interpreter."""
    return [sys.executable, "-m", "api.cli", *args]


def child_env(base: Mapping[str, str] | None = None, **extra: str) -> dict[str, str]:
    """The environment for a local child: `base` (default: ours), then `extra`, with
    `PROVENROUTE_ENV=dev` unless set."""
    env = {**(os.environ if base is None else base), **extra}
    env.setdefault("PROVENROUTE_ENV", "dev")
    return env


def port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def free_port(preferred: int | None = None) -> int:
    """`preferred` if it is free on 127.0.0.1, else a port the kernel picks."""
    if preferred is not None and port_free(preferred):
        return preferred
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def peak_rss_mb(pid: int) -> float | None:
    """Process `pid`'s peak resident set (the kernel's VmHWM) in MB; None once it is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except (OSError, ValueError):
        return None
    return None


class ChildProcess:
    """A child in its own session (process group), its output appended to `<log_dir>/<name>.log`.

    Signals go to the whole group, so a stop leaves nothing of it behind. The peak RSS is
    sampled (`sample()`) because VmHWM is gone once the process exits.
    """

    def __init__(
        self,
        name: str,
        argv: list[str],
        env: Mapping[str, str],
        cwd: Path,
        *,
        log_dir: Path | None = None,
    ) -> None:
        self.name = name
        log_dir = log_dir or cwd
        log_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = log_dir / f"{name}.log"
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.started = time.monotonic()
        self.peak_rss_kb = 0
        self.proc = subprocess.Popen(
            argv,
            env=child_env(env),
            cwd=cwd,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def sample(self) -> None:
        """Record the current peak RSS (call it while the child lives)."""
        mb = peak_rss_mb(self.pid) if self.alive() else None
        if mb is not None:
            self.peak_rss_kb = max(self.peak_rss_kb, int(mb * 1024))

    @property
    def peak_rss_mb(self) -> float:
        return self.peak_rss_kb / 1024

    def signal(self, sig: int) -> None:
        self.sample()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, sig)  # its own session: only this child and its children

    def kill9(self) -> None:
        """SIGKILL, no chance to clean up (a worker's job containers are left to the janitor)."""
        self.signal(signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=30)

    def stop(self, timeout_s: float = 30.0) -> int | None:
        """SIGTERM, then SIGKILL after `timeout_s`; closes the log. Idempotent."""
        if self.alive():
            self.signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.signal(signal.SIGKILL)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.proc.wait(timeout=10)
        with contextlib.suppress(Exception):
            self._log.close()
        return self.proc.returncode

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def tail(self, lines: int = 40) -> str:
        """The log's last lines, without Faust's offset tables."""
        kept = [ln for ln in self.text().splitlines() if not ln.startswith(("|", "+", "\u3003"))]
        return f"--- {self.name} (pid {self.pid}, log {self.log_path}) ---\n" + "\n".join(
            kept[-lines:]
        )

    def wait_ready(
        self, probe: Callable[[], bool], timeout_s: float, what: str, interval_s: float = 0.2
    ) -> None:
        """Poll `probe` until it holds; ChildFailed when the child exits or time runs out."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not self.alive():
                raise ChildFailed(f"{self.name} exited ({self.proc.returncode}):\n{self.tail()}")
            with contextlib.suppress(httpx.HTTPError):
                if probe():
                    return
            time.sleep(interval_s)
        raise ChildFailed(f"{what} not ready after {timeout_s:.0f}s:\n{self.tail()}")

    def wait_http(self, url: str, timeout_s: float = 90.0) -> None:
        """Until GET `url` answers 200."""
        self.wait_ready(lambda: httpx.get(url, timeout=2).status_code == 200, timeout_s, url)


# ---- the stack's roles --------------------------------------------------------------------


def _answering(proc: ChildProcess, url: str, timeout_s: float) -> ChildProcess:
    """`proc` once `url` answers 200; stopped (and ChildFailed) when it does not."""
    try:
        proc.wait_http(url, timeout_s)
    except ChildFailed:
        proc.stop()
        raise
    return proc


def start_sim_provider(
    workdir: Path,
    env: Mapping[str, str],
    *,
    latency_scale: float,
    port: int | None = None,
    name: str | None = None,
    log_dir: Path | None = None,
    timeout_s: float = 60.0,
) -> tuple[ChildProcess, str]:
    """The SIMULATED provider, ready; returns it and its base URL (`.../v1`)."""
    port = port or free_port()
    env = {**env, "PROVENROUTE_SIM_LATENCY_SCALE": str(latency_scale)}
    proc = ChildProcess(
        name or f"sim-{port}",
        cli("sim-provider", "--port", str(port)),
        env,
        workdir,
        log_dir=log_dir,
    )
    url = f"http://127.0.0.1:{port}/v1"
    return _answering(proc, f"{url}/models", timeout_s), url


def start_worker(
    workdir: Path,
    env: Mapping[str, str],
    *,
    name: str = "worker",
    loglevel: str = "info",
    log_dir: Path | None = None,
) -> ChildProcess:
    """A Faust worker (it writes its data dir into `workdir`, its working directory)."""
    return ChildProcess(name, cli("worker", "--loglevel", loglevel), env, workdir, log_dir=log_dir)


def start_projector(
    workdir: Path,
    env: Mapping[str, str],
    *,
    schema: str | None = None,
    name: str = "projector",
    log_dir: Path | None = None,
) -> ChildProcess:
    args = ["project", *(["--schema", schema] if schema else [])]
    return ChildProcess(name, cli(*args), env, workdir, log_dir=log_dir)


def start_serve(
    workdir: Path,
    env: Mapping[str, str],
    *,
    port: int | None = None,
    ready_path: str = "/readyz",
    name: str = "api",
    log_dir: Path | None = None,
    timeout_s: float = 90.0,
) -> tuple[ChildProcess, str]:
    """The decide service and admin API, answering 200 on `ready_path`; returns it and its
    URL."""
    port = port or free_port()
    proc = ChildProcess(name, cli("serve", "--port", str(port)), env, workdir, log_dir=log_dir)
    url = f"http://127.0.0.1:{port}"
    return _answering(proc, f"{url}{ready_path}", timeout_s), url
