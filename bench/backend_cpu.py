"""CPU seconds that Postgres spends for one application's connections (a local server only).

The machine the benches run on is shared, so wall-clock rates move with the load average;
CPU seconds barely do. A sampler thread lists the application's backends (and the parallel
workers they lead) in pg_stat_activity and reads their CPU time from /proc; a backend's last
sample counts, so a backend that ends between two samples loses at most one interval.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import psycopg

_TICK = os.sysconf("SC_CLK_TCK")

_BACKENDS = """
select pid from pg_stat_activity where application_name = %(app)s
union
select w.pid from pg_stat_activity w join pg_stat_activity l on l.pid = w.leader_pid
where l.application_name = %(app)s
"""


class NotVisible(Exception):
    """The server's processes are not this machine's (a remote server, a container)."""


def process_cpu_s(pid: int) -> float | None:
    """User + system CPU seconds of a local Postgres process; None once it has ended."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return None
    except OSError as e:
        raise NotVisible(str(e)) from e
    if not stat.split(" ", 2)[1].startswith("(postgres"):
        raise NotVisible(f"process {pid} is not a postgres process here")
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


class BackendCpu:
    """Samples the CPU time of `app`'s backends every `interval` seconds until `stop()`."""

    def __init__(self, url: str, app: str, *, interval: float = 0.1) -> None:
        self.url = url
        self.app = app
        self.interval = interval
        self.last: dict[int, float] = {}
        self.readable = True
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name="backend-cpu", daemon=True)

    def __enter__(self) -> BackendCpu:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._done.set()
        self._thread.join()

    @property
    def seconds(self) -> float | None:
        """Total sampled CPU seconds, None when the server's processes are not visible here."""
        return round(sum(self.last.values()), 2) if self.readable else None

    def _run(self) -> None:
        with psycopg.connect(self.url, autocommit=True, application_name="bench-sampler") as conn:
            while not self._done.wait(self.interval):
                for (pid,) in conn.execute(_BACKENDS, {"app": self.app}).fetchall():
                    try:
                        cpu = process_cpu_s(pid)
                    except NotVisible:
                        self.readable = False
                        return
                    if cpu is not None:
                        self.last[pid] = cpu
