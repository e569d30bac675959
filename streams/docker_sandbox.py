"""Docker implementation of the Sandbox: one container per decider job.

The container runs `container/runner.py serve` as PID 1 (reaps orphans, serves requests)
with no network, a non-root user, memory / pids / CPU limits and no environment of ours (it
never sees a credential). The worker attaches to the runner's stdin/stdout once, before the
container starts, and sends every operation over that stream (`streams.runner_channel`):
no `docker exec` per call. The docker SDK is blocking, so create and remove run in threads.

The container is removed on every path: `close()` after success, error or cancellation
(also when `start()` itself failed or was cancelled half-way), `close_all_sandboxes()` at
worker shutdown, an atexit hook as a last resort. A worker that dies closes its streams: each
runner reads EOF and exits, and the container removes itself; `streams.janitor` sweeps
whatever still remains.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import hashlib
import logging
import os
import re
import socket
import ssl
import time
import weakref
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from streams.janitor import (
    LABEL_CREATED,
    LABEL_HEARTBEATS,
    LABEL_JOB,
    LABEL_MANAGED,
    LABEL_WORKER,
    current_board,
    default_worker_id,
    worker_is_dead,
)
from streams.runner_channel import RunnerChannel
from streams.sandbox import ExecResult, ManagedSandbox, SandboxError

log = logging.getLogger(__name__)

DEFAULT_IMAGE = os.environ.get("PROVENROUTE_DOCKER_IMAGE") or "provenroute/runner:latest"
"""Settings' `docker_image` reads the same variable: tests and benches that build or start
the image directly honour a private tag too."""
DEFAULT_BASE_IMAGE = "provenroute/base:bookworm"
IMAGE_HASH_LABEL = "provenroute.image.hash"
CONTAINER_CONTEXT = Path(__file__).resolve().parent.parent / "container"
RUNNER = "/opt/provenroute/runner.py"
WORKSPACE = "/workspace"
RUNNER_USER = "10001:10001"
RUNNER_UID = 10001
MODEL_SOCKET_MOUNT = "/run/provenroute"
DEFAULT_GRACE_S = 2.0
DEFAULT_MAX_OUTPUT = 64 * 1024
READ_MAX_BYTES = 1024 * 1024
TRANSPORT_SLACK_S = 15.0
"""Host-side allowance on top of timeout + grace before an exec is given up on."""
OP_TIMEOUT_S = 60.0
"""Longest a write, read or reset may take before the runner is deemed stuck."""

START_CONCURRENCY = max(2, os.cpu_count() or 2)
"""Cold starts in flight at once per process (event loop); the rest queue. A start is
mostly CPU (dockerd, containerd, runc, the runner's interpreter): more at once than there
are cores only makes every one of them slower, and FIFO finishes the first ones sooner."""

_NAME_UNSAFE = re.compile(r"[^a-zA-Z0-9_.-]+")
_START_GATES: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = (
    weakref.WeakKeyDictionary()
)


def _start_gate() -> asyncio.Semaphore:
    loop = asyncio.get_running_loop()
    gate = _START_GATES.get(loop)
    if gate is None:
        gate = _START_GATES[loop] = asyncio.Semaphore(START_CONCURRENCY)
    return gate


_LIVE: weakref.WeakSet[DockerSandbox] = weakref.WeakSet()


def container_name(job_key: str) -> str:
    """A valid, unique Docker name for a job key such as `run-1:openai/gpt-5:3:0`.

    Readable slug (unsafe characters collapsed to `-`, capped) plus a digest of the full key,
    so two keys that sanitise alike still get different names.
    """
    slug = _NAME_UNSAFE.sub("-", job_key).strip("-.")[:80]
    digest = hashlib.sha256(job_key.encode("utf-8")).hexdigest()[:10]
    return f"provenroute-job-{slug}-{digest}" if slug else f"provenroute-job-{digest}"


def _is_conflict(e: Exception) -> bool:
    return getattr(e, "status_code", None) == 409


class DockerSandbox(ManagedSandbox):
    """Sandbox backed by one Docker container; use as `async with DockerSandbox(key): ...`."""

    def __init__(
        self,
        job_key: str,
        *,
        image: str = DEFAULT_IMAGE,
        client: Any | None = None,
        mem_limit: str = "512m",
        pids_limit: int = 256,
        nano_cpus: float = 1e9,
        labels: Mapping[str, str] | None = None,
        worker_id: str | None = None,
        grace_s: float = DEFAULT_GRACE_S,
        max_output: int = DEFAULT_MAX_OUTPUT,
        max_lifetime_s: float = 4 * 3600.0,
        warmup: bool = True,
        model_socket_dir: Path | None = None,
    ) -> None:
        self.job_key = job_key
        self.name = container_name(job_key)
        self.image = image
        self.worker_id = worker_id or default_worker_id()
        self.mem_limit = mem_limit
        self.pids_limit = pids_limit
        self.nano_cpus = int(nano_cpus)
        self.grace_s = grace_s
        self.max_output = max_output
        self.max_lifetime_s = max_lifetime_s
        self.labels = {
            **(labels or {}),
            LABEL_MANAGED: "true",
            LABEL_WORKER: self.worker_id,
            LABEL_JOB: job_key,
        }
        self._board = current_board()
        """Who is alive, read on the loop at construction (the blocking code runs in
        threads); refreshed before a claim."""
        if self._board is not None and worker_id is None:
            self.labels[LABEL_HEARTBEATS] = self._board.topic
        self.warmup_enabled = warmup
        self.model_socket_dir = model_socket_dir
        """Host directory of the job's model-proxy socket, bind-mounted read-only at
        MODEL_SOCKET_MOUNT (agent-CLI harnesses): the container's only way out."""
        self.warmup_info: dict[str, Any] | None = None
        self.start_ms: float | None = None
        """Wall-clock of create + start + warm-up, for diagnostics and the benchmark."""
        self._client = client
        self._own_client = client is None
        self._container: Any | None = None
        self._attached: socket.socket | None = None
        """The attach stream between create and the channel taking it over."""
        self._channel: RunnerChannel | None = None
        self._start_task: asyncio.Future[None] | None = None
        self._started = False
        self._closed = False

    # ---------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        if self._started:
            raise SandboxError("sandbox already started")
        if self._closed:
            raise SandboxError("sandbox is closed")
        self._started = True
        _LIVE.add(self)
        t0 = time.perf_counter()
        try:
            async with _start_gate():
                await self._start()
        except BaseException:
            await self.close()
            raise
        self.start_ms = (time.perf_counter() - t0) * 1000.0

    async def _start(self) -> None:
        # The create runs to completion in its thread even if we are cancelled meanwhile;
        # close() waits for it, so a container created "too late" is still removed.
        self._start_task = asyncio.ensure_future(asyncio.to_thread(self._create_blocking))
        await asyncio.shield(self._start_task)
        attached, self._attached = self._attached, None
        assert attached is not None
        self._channel = await RunnerChannel.open(attached, self.name)
        if self.warmup_enabled:
            self.warmup_info = await self._channel.call("warmup", wait_s=60.0)
            if not self.warmup_info.get("ok"):
                raise SandboxError(f"warm-up failed: {self.warmup_info}")

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            if self._start_task is not None:
                with contextlib.suppress(BaseException):
                    await asyncio.shield(self._start_task)
            try:
                # Removal in a thread completes even if this task is cancelled meanwhile.
                await asyncio.shield(asyncio.to_thread(self._remove_blocking))
            finally:
                # After the removal, so the runner's own exit (EOF) does not race it; were
                # the removal to fail, the closed stream alone still ends the container.
                if self._channel is not None:
                    await self._channel.close()
                if self._attached is not None:
                    self._attached.close()
                    self._attached = None
        finally:
            _LIVE.discard(self)

    @property
    def alive(self) -> bool:
        """Started, not closed, and its runner still answers (as far as we know)."""
        return not self._closed and self._channel is not None and not self._channel.broken

    async def claim(self, job_key: str) -> None:
        """Hand a started sandbox (a warm one of a pool) to the job `job_key`: its container
        takes the job's name, with the same conflict rules as a container created for it."""
        container = self._require_container()
        name = container_name(job_key)
        self._board = current_board()
        await asyncio.to_thread(self._rename_blocking, container, name)
        self.job_key, self.name = job_key, name

    async def recycle(self) -> None:
        """Make a container whose job ended cleanly fit for another job (`SandboxPool`):
        the runner kills every process the job left, empties the workspace and restores the
        scratch dirs, the home and System V IPC as they were at start."""
        out = await self._call("recycle", OP_TIMEOUT_S, {})
        if not out.get("ok"):
            raise SandboxError(f"recycling the sandbox failed: {out.get('error')}")

    # ---------------------------------------------------------------- operations

    async def exec(
        self,
        cmd: str,
        timeout_s: float,
        *,
        env: Mapping[str, str] | None = None,
        stdin: str | None = None,
    ) -> ExecResult:
        timeout_s = max(float(timeout_s), 0.1)
        request: dict[str, Any] = {
            "cmd": cmd,
            "timeout_s": timeout_s,
            "grace_s": self.grace_s,
            "max_output": self.max_output,
        }
        if env:
            request["env"] = dict(env)
        if stdin is not None:
            request["stdin"] = stdin
        try:
            out = await self._call("exec", timeout_s + self.grace_s + TRANSPORT_SLACK_S, request)
        except TimeoutError:
            return ExecResult(
                exit_code=None,
                stdout="",
                stderr="sandbox: the runner did not answer in time",
                timed_out=True,
                duration_ms=(timeout_s + self.grace_s + TRANSPORT_SLACK_S) * 1000.0,
                truncated=False,
            )
        if not out.get("ok"):
            raise SandboxError(f"exec failed in the runner: {out.get('error')}")
        return ExecResult(
            exit_code=out.get("exit_code"),
            stdout=out.get("stdout", ""),
            stderr=out.get("stderr", ""),
            timed_out=bool(out.get("timed_out")),
            duration_ms=float(out.get("duration_ms", 0.0)),
            truncated=bool(out.get("truncated")),
        )

    async def write_files(self, files: Mapping[str, str]) -> None:
        if files:
            out = await self._call("write", OP_TIMEOUT_S, {"files": _checked(files)})
            if not out.get("ok"):
                raise SandboxError(f"writing workspace files failed: {out.get('error')}")

    async def reset(self, files: Mapping[str, str] | None = None) -> None:
        request = {} if files is None else {"files": _checked(files)}
        out = await self._call("reset", OP_TIMEOUT_S, request)
        if not out.get("ok"):
            raise SandboxError(f"resetting the workspace failed: {out.get('error')}")

    async def read_file(self, path: str) -> str:
        out = await self._call("read", OP_TIMEOUT_S, {"path": path, "max_bytes": READ_MAX_BYTES})
        if out.get("ok"):
            return str(out.get("content", ""))
        kind, error = out.get("kind"), str(out.get("error"))
        if kind == "not_found":
            raise FileNotFoundError(error)
        if kind == "is_dir":
            raise IsADirectoryError(error)
        raise SandboxError(error)

    async def memory_peak_bytes(self) -> int | None:
        """Peak memory of the container's cgroup (v1 or v2), for benchmarks."""
        res = await self.exec(
            "cat /sys/fs/cgroup/memory.peak 2>/dev/null"
            " || cat /sys/fs/cgroup/memory/memory.max_usage_in_bytes",
            timeout_s=10,
        )
        try:
            return int(res.stdout.strip().splitlines()[-1])
        except (ValueError, IndexError):
            return None

    # ---------------------------------------------------------------- internals

    def _require_container(self) -> Any:
        if self._closed or self._container is None:
            raise SandboxError("sandbox is not running (not started, or closed)")
        return self._container

    async def _call(self, op: str, timeout_s: float, request: dict[str, Any]) -> dict[str, Any]:
        self._require_container()
        if self._channel is None:
            raise SandboxError("sandbox is not running (not started, or closed)")
        return await self._channel.call(op, request, wait_s=timeout_s)

    def _client_blocking(self) -> Any:
        if self._client is None:
            import docker

            self._client = docker.from_env()
        return self._client

    def _create_blocking(self) -> None:
        from docker.errors import APIError, ImageNotFound

        client = self._client_blocking()
        serve = ["serve", "--max-lifetime", str(int(self.max_lifetime_s))]
        kwargs: dict[str, Any] = dict(
            # -E -s -S: no environment or site packages of the image decide how the runner
            # runs (not -I: it would drop the script's directory, where runner_exec.py is)
            command=["python3", "-E", "-s", "-S", RUNNER, *serve],
            name=self.name,
            labels={**self.labels, LABEL_CREATED: str(int(time.time()))},
            # Network disabled, not only mode "none": runc then gives the container a fresh
            # namespace with loopback alone and Docker's network layer is never called; with
            # "none" alone each start re-executed dockerd for its libnetwork-setkey hook
            # (measured: median start alone 230 -> 128 ms, four at once 450 -> 255 ms). Loopback
            # stays, which the CLI harness's model forwarder on 127.0.0.1 needs.
            network_disabled=True,
            network_mode="none",
            user=RUNNER_USER,
            working_dir=WORKSPACE,
            mem_limit=self.mem_limit,
            memswap_limit=self.mem_limit,  # no swap on top of the memory cap
            pids_limit=self.pids_limit,
            nano_cpus=self.nano_cpus,
            cap_drop=["ALL"],
            security_opt=["no-new-privileges:true"],
            environment={},
            auto_remove=True,  # a runner that ends (EOF, max lifetime) takes the container
            # The runner's stdin/stdout are the worker's channel: stdin stays open for one
            # attach (StdinOnce), so closing that stream is EOF for the runner. Nothing it
            # prints is worth a log file (every frame would be written to disk).
            stdin_open=True,
            detach=False,
            tty=False,
            log_config={"type": "none"},
        )
        if self.model_socket_dir is not None:
            kwargs["volumes"] = {
                str(self.model_socket_dir): {"bind": MODEL_SOCKET_MOUNT, "mode": "ro"}
            }
        try:
            try:
                container = client.containers.create(self.image, **kwargs)
            except APIError as e:
                if not _is_conflict(e):
                    raise
                self._clear_conflicting_name(client, self.name)
                container = client.containers.create(self.image, **kwargs)
            self._container = container
            # Attached before the start, so not a byte the runner prints is missed.
            self._attached = _attach(container)
            container.start()
        except ImageNotFound:
            raise SandboxError(f"image {self.image} not found: run `make image`") from None
        except APIError as e:
            raise SandboxError(f"could not start container {self.name}: {e.explanation}") from None

    def _rename_blocking(self, container: Any, name: str) -> None:
        from docker.errors import APIError

        try:
            try:
                container.rename(name)
            except APIError as e:
                if not _is_conflict(e):
                    raise
                self._clear_conflicting_name(self._client_blocking(), name, container.id)
                container.rename(name)
        except APIError as e:
            raise SandboxError(f"could not give the sandbox the job's name {name}: {e}") from None

    def _clear_conflicting_name(self, client: Any, name: str, own_id: str | None = None) -> None:
        """A container of the same job exists: a previous attempt of this job whose worker
        died (remove it), or the job running elsewhere right now (refuse)."""
        from docker.errors import NotFound

        try:
            other = client.containers.get(name)
        except NotFound:
            return
        if own_id is not None and other.id == own_id:
            return
        other_labels = other.labels or {}
        owner = other_labels.get(LABEL_WORKER)
        board = self._board
        # The heartbeat board decides for a container tracked on it; else only a pid can.
        live = (
            board.workers
            if board is not None and other_labels.get(LABEL_HEARTBEATS) == board.topic
            else None
        )
        if owner == self.worker_id:
            if any(s is not self and s.name == name for s in list(_LIVE)):
                raise SandboxError(f"job {name} is already running in this worker")
        elif not worker_is_dead(owner, live):
            raise SandboxError(f"job {name} already has a live container ({owner})")
        log.info("removing leftover container %s of worker %s", name, owner)
        with contextlib.suppress(NotFound):
            other.remove(force=True, v=True)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # auto_remove may still be in flight
            try:
                client.containers.get(name)
            except NotFound:
                return
            time.sleep(0.1)

    def _remove_blocking(self) -> None:
        from docker.errors import APIError, NotFound

        container = self._container
        self._container = None
        try:
            if container is None:
                container = self._find_own_container()
            if container is not None:
                try:
                    container.remove(force=True, v=True)
                except NotFound:
                    pass
                except APIError as e:
                    if not _is_conflict(e):
                        log.warning("could not remove %s: %s", self.name, e.explanation)
                    else:  # 409: auto-removal (the runner ended) in progress: see it through
                        _wait_gone(container)
        finally:
            if self._own_client and self._client is not None:
                with contextlib.suppress(Exception):
                    self._client.close()
                self._client = None

    def _find_own_container(self) -> Any | None:
        """A create that failed client-side (timeout) may still have created the container."""
        if self._client is None:
            return None
        from docker.errors import NotFound

        try:
            c = self._client.containers.get(self.name)
        except (NotFound, Exception):
            return None
        labels = c.labels or {}
        if labels.get(LABEL_WORKER) == self.worker_id and labels.get(LABEL_JOB) == self.labels.get(
            LABEL_JOB
        ):
            return c
        return None


def _wait_gone(container: Any, deadline_s: float = 10.0) -> None:
    from docker.errors import NotFound

    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        try:
            container.reload()
        except NotFound:
            return
        time.sleep(0.05)


def _checked(files: Mapping[str, str]) -> dict[str, str]:
    for path, text in files.items():
        if not isinstance(text, str):
            raise TypeError(f"content of {path!r} must be str")
        if not path or path.startswith("/") or ".." in path.replace("\\", "/").split("/"):
            raise ValueError(f"workspace path must be relative and inside: {path!r}")
    return dict(files)


def _attach(container: Any) -> socket.socket:
    """The container's stdin/stdout/stderr as one plain socket the event loop can own."""
    stream = container.attach_socket(params={"stdin": 1, "stdout": 1, "stderr": 1, "stream": 1})
    raw = getattr(stream, "_sock", stream)  # docker-py hands a SocketIO over the socket
    if not isinstance(raw, socket.socket) or isinstance(raw, ssl.SSLSocket):
        stream.close()
        raise SandboxError(
            "the runner's stream needs a unix-socket or plain-TCP Docker endpoint"
            f" (got {type(raw).__name__})"
        )
    # Our own descriptor of the connection; docker-py's wrappers are closed at once, so
    # the stream lives exactly as long as the channel that owns it.
    sock = raw.dup()
    stream.close()
    raw.close()
    return sock


async def close_all_sandboxes() -> None:
    """Worker shutdown: remove every container this process still has."""
    await asyncio.gather(*(s.close() for s in list(_LIVE)), return_exceptions=True)


@atexit.register
def _remove_leftovers_at_exit() -> None:
    for s in list(_LIVE):
        with contextlib.suppress(Exception):
            s._closed = True
            s._remove_blocking()


# -------------------------------------------------------------------- image


def image_inputs(context: Path = CONTAINER_CONTEXT) -> list[Path]:
    """The files whose content decides the image (`container/image-inputs.txt`)."""
    lines = (context / "image-inputs.txt").read_text(encoding="utf-8").splitlines()
    return [context / ln.strip() for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]


def image_input_hash(base_image_id: str, context: Path = CONTAINER_CONTEXT) -> str:
    """The value `mk/image.mk` puts in the image's provenroute.image.hash label."""
    files = b"".join(p.read_bytes() for p in image_inputs(context))
    files_sha = hashlib.sha256(files).hexdigest()
    return hashlib.sha256(f"{files_sha}\n{base_image_id}\n".encode()).hexdigest()


def ensure_image(
    client: Any,
    image: str = DEFAULT_IMAGE,
    base_image: str = DEFAULT_BASE_IMAGE,
    context: Path = CONTAINER_CONTEXT,
) -> bool:
    """Build `image` unless its hash label is current (same rule as `make image`).

    Blocking. Returns True when it built. Raises SandboxError when the base is missing.
    """
    from docker.errors import ImageNotFound

    try:
        base_id = client.images.get(base_image).id
    except ImageNotFound:
        raise SandboxError(f"base image {base_image} is missing (bootstrap it first)") from None
    want = image_input_hash(base_id, context)
    try:
        have = (client.images.get(image).labels or {}).get(IMAGE_HASH_LABEL)
    except ImageNotFound:
        have = None
    if have == want:
        return False
    if (
        not (context / "vendor" / "kilo" / ".done").exists()
        or not (context / "vendor" / "wheels" / ".done").exists()
    ):
        raise SandboxError("the agent CLIs are not fetched: run `make image-vendor` first")
    log.info("building %s from %s", image, base_image)
    client.images.build(
        path=str(context),
        tag=image,
        buildargs={"BASE_IMAGE": base_image},
        labels={IMAGE_HASH_LABEL: want},
        rm=True,
        forcerm=True,
    )
    return True
