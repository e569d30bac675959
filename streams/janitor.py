"""Labels of job containers, worker identity, and removal of containers of dead workers.

Every job container carries `provenroute.managed=true`, `provenroute.worker=<host:pid>`
and `provenroute.job=<job key>`. A worker removes its own containers on every path it
controls; the janitor handles the one it cannot: a worker killed with SIGKILL (or a host
crash) leaves containers running, and any worker's janitor sweep removes them.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Iterable
from typing import Any

log = logging.getLogger(__name__)

LABEL_MANAGED = "provenroute.managed"
LABEL_WORKER = "provenroute.worker"
LABEL_JOB = "provenroute.job"
LABEL_CREATED = "provenroute.created"
"""Unix time the container was created at (seconds, as text)."""


def default_worker_id() -> str:
    """`hostname:pid` of this process: unique per live worker, checkable on its own host."""
    return f"{socket.gethostname()}:{os.getpid()}"


def parse_worker_id(worker_id: str) -> tuple[str, int] | None:
    host, sep, pid = worker_id.rpartition(":")
    if not sep or not host or not pid.isdigit():
        return None
    return host, int(pid)


def pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True


def worker_is_dead(
    worker_id: str | None,
    live_worker_ids: Iterable[str] | None = None,
    *,
    hostname: str | None = None,
) -> bool:
    """Whether the containers of `worker_id` are safe to remove.

    Alive if listed in `live_worker_ids`. Otherwise a worker of this host is dead when its
    pid no longer exists; a worker of another host is dead only when the caller passed an
    explicit live set (from which it is absent) — without one we cannot know, so we keep it.
    """
    live = set(live_worker_ids) if live_worker_ids is not None else None
    if worker_id is None:
        return live is not None
    if live is not None and worker_id in live:
        return False
    parsed = parse_worker_id(worker_id)
    this_host = hostname if hostname is not None else socket.gethostname()
    if parsed is not None and parsed[0] == this_host:
        return not pid_alive(parsed[1])
    return live is not None


def remove_stale_containers(
    client: Any,
    live_worker_ids: Iterable[str] | None = None,
    *,
    max_age_s: float | None = None,
    now: float | None = None,
) -> list[str]:
    """Remove labelled job containers whose worker is dead (or older than `max_age_s`).

    Blocking (docker SDK): call it through `asyncio.to_thread` from async code. Returns the
    names of the containers removed. Failures to remove one container are logged and the
    sweep goes on.
    """
    live = list(live_worker_ids) if live_worker_ids is not None else None
    now = time.time() if now is None else now
    removed: list[str] = []
    from docker.errors import APIError, NotFound

    # The summary listing, not `containers.list()`: that inspects each container after
    # listing it, and one that removes itself meanwhile (auto-remove) would fail the sweep.
    for c in client.api.containers(all=True, filters={"label": f"{LABEL_MANAGED}=true"}):
        labels = c.get("Labels") or {}
        name = (c.get("Names") or [c["Id"]])[0].lstrip("/")
        worker = labels.get(LABEL_WORKER)
        stale = worker_is_dead(worker, live)
        if not stale and max_age_s is not None:
            try:
                stale = now - float(labels.get(LABEL_CREATED, "")) > max_age_s
            except ValueError:
                stale = False
        if not stale:
            continue
        try:
            client.api.remove_container(c["Id"], force=True, v=True)
            removed.append(name)
            log.info("janitor removed container %s of worker %s", name, worker)
        except NotFound:
            pass
        except APIError as e:
            if e.status_code != 409:  # 409: removal already in progress
                log.warning("janitor could not remove %s: %s", name, e.explanation)
    return removed
