"""The one launcher of local child processes: logs, readiness, stopping the whole group."""

from __future__ import annotations

import os
import socket
import sys
import time
from pathlib import Path

import pytest

from infra.processes import ChildFailed, ChildProcess, free_port, peak_rss_mb


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    # A zombie still answers kill(0); it is gone for our purposes once it is not running.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[1].split()[0] == "Z"
    except OSError:
        return True


def test_free_port_is_bindable_and_a_free_preferred_port_is_kept() -> None:
    port = free_port()
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))
        assert free_port(port) != port  # taken now: another one is picked
    assert free_port(port) == port


def test_peak_rss_of_a_live_and_a_missing_process() -> None:
    mb = peak_rss_mb(os.getpid())
    assert mb is not None and mb > 1
    assert peak_rss_mb(2**22 + 12345) is None


def test_stop_ends_the_child_and_its_children_and_keeps_the_log(tmp_path: Path) -> None:
    script = "import subprocess, sys, time; p = subprocess.Popen(['sleep', '300']);"
    script += " print(p.pid, flush=True); time.sleep(300)"
    child = ChildProcess("sleeper", [sys.executable, "-c", script], os.environ, tmp_path)
    child.wait_ready(lambda: child.text().strip().isdigit(), 30, "sleeper")
    grandchild = int(child.text().strip())
    assert child.alive() and not _gone(grandchild)
    child.stop(timeout_s=10)
    assert not child.alive()
    deadline = time.monotonic() + 10
    while not _gone(grandchild) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _gone(grandchild)
    assert (tmp_path / "sleeper.log").read_text().strip() == str(grandchild)


def test_a_child_that_exits_fails_its_readiness_wait_with_its_log(tmp_path: Path) -> None:
    child = ChildProcess(
        "crasher",
        [sys.executable, "-c", "print('boom: bad config'); raise SystemExit(3)"],
        os.environ,
        tmp_path,
    )
    with pytest.raises(ChildFailed, match="boom: bad config"):
        child.wait_ready(lambda: False, 30, "crasher")
    assert child.stop() == 3


def test_children_run_on_the_development_settings_unless_told_otherwise(tmp_path: Path) -> None:
    show = [sys.executable, "-c", "import os; print(os.environ['PROVENROUTE_ENV'])"]
    env = {k: v for k, v in os.environ.items() if k != "PROVENROUTE_ENV"}
    with ChildProcess("dev", show, env, tmp_path) as dev:
        dev.proc.wait(timeout=30)
    with ChildProcess("prod", show, {**env, "PROVENROUTE_ENV": "prod"}, tmp_path) as prod:
        prod.proc.wait(timeout=30)
    assert (tmp_path / "dev.log").read_text().strip() == "dev"
    assert (tmp_path / "prod.log").read_text().strip() == "prod"
