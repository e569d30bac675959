"""Labels of job containers, worker identity, and removal of containers of dead workers.

Every job container carries `provenroute.managed=true`, `provenroute.worker=<worker id>`
and `provenroute.job=<job key>`; a worker's containers also name the heartbeat topic it
beats on (`provenroute.heartbeats`). A worker removes its own containers on every path it
controls; the janitor handles the one it cannot: a worker killed with SIGKILL (or a host
crash) leaves containers running, and any worker's janitor sweep removes them.

Who is dead: for a container tracked on the sweeper's heartbeat topic, a worker whose beats
stopped (streams.heartbeats) — this holds across hosts, and for a worker restarted in a
container whose hostname and pid (1) repeat. A worker id is `host:pid:instance`, the
instance drawn at process start, so a restarted worker never passes for its predecessor.
For untracked containers (a one-off sandbox, `harness try`) only a pid on this host can tell.
"""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

LABEL_MANAGED = "provenroute.managed"
LABEL_WORKER = "provenroute.worker"
LABEL_JOB = "provenroute.job"
LABEL_CREATED = "provenroute.created"
"""Unix time the container was created at (seconds, as text)."""
LABEL_HEARTBEATS = "provenroute.heartbeats"
"""The heartbeat topic the container's worker beats on."""

TRACKED_GRACE_S = 30.0
"""A tracked container this young is kept even if its worker is not on the board yet: the
sweeper's read of the board may trail the worker's first beat."""

_INSTANCE = uuid.uuid4().hex[:8]


@dataclass(frozen=True)
class LiveSet:
    """The workers beating on `topic`, as one sweeper read them."""

    topic: str
    workers: frozenset[str]


_board: Callable[[], LiveSet] | None = None


def track_on_board(board: Callable[[], LiveSet] | None) -> None:
    """Make this process's job containers tracked on a heartbeat board (the worker calls it
    once its board is started; one board per process, as there is one worker id)."""
    global _board
    _board = board


def current_board() -> LiveSet | None:
    return _board() if _board is not None else None


def default_worker_id() -> str:
    """`hostname:pid:instance` of this process: unique per process start, even where the
    hostname and the pid repeat (a restarted container's pid is 1 again)."""
    return f"{socket.gethostname()}:{os.getpid()}:{_INSTANCE}"


def parse_worker_id(worker_id: str) -> tuple[str, int] | None:
    """(host, pid) of `host:pid` or `host:pid:instance`."""
    parts = worker_id.split(":")
    for host, pid in ((":".join(parts[:-2]), parts[-2:-1]), (":".join(parts[:-1]), parts[-1:])):
        if host and pid and pid[0].isdigit():
            return host, int(pid[0])
    return None


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

    With a live set (the heartbeat board) it decides: absent means dead. Without one, only
    a worker of this host whose pid no longer exists is known dead; anything else is kept.
    A pid gone on this host is dead either way.
    """
    live = set(live_worker_ids) if live_worker_ids is not None else None
    if worker_id is None:
        return live is not None
    if live is not None and worker_id in live:
        return False
    parsed = parse_worker_id(worker_id)
    this_host = hostname if hostname is not None else socket.gethostname()
    if parsed is not None and parsed[0] == this_host and not pid_alive(parsed[1]):
        return True
    return live is not None


def container_is_stale(
    labels: dict[str, str], board: LiveSet | None, now: float, grace_s: float = TRACKED_GRACE_S
) -> bool:
    """The janitor's rule for one container (see the module doc)."""
    worker = labels.get(LABEL_WORKER)
    if board is not None and labels.get(LABEL_HEARTBEATS) == board.topic:
        try:
            young = now - float(labels.get(LABEL_CREATED, "")) < grace_s
        except ValueError:
            young = False
        if young and worker is not None and not worker_is_dead(worker):
            return False
        return worker_is_dead(worker, board.workers)
    return worker is not None and worker_is_dead(worker)


def remove_stale_containers(
    client: Any,
    board: LiveSet | None = None,
    *,
    max_age_s: float | None = None,
    now: float | None = None,
) -> list[str]:
    """Remove labelled job containers whose worker is dead (or older than `max_age_s`).

    Blocking (docker SDK): call it through `asyncio.to_thread` from async code. Returns the
    names of the containers removed. Failures to remove one container are logged and the
    sweep goes on.
    """
    now = time.time() if now is None else now
    removed: list[str] = []
    from docker.errors import APIError, NotFound

    # The summary listing, not `containers.list()`: that inspects each container after
    # listing it, and one that removes itself meanwhile (auto-remove) would fail the sweep.
    for c in client.api.containers(all=True, filters={"label": f"{LABEL_MANAGED}=true"}):
        labels = c.get("Labels") or {}
        name = (c.get("Names") or [c["Id"]])[0].lstrip("/")
        worker = labels.get(LABEL_WORKER)
        stale = container_is_stale(labels, board, now)
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
