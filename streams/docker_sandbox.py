"""Docker implementation of the Sandbox: one container per decider job.

The container runs `container/runner.py init` as PID 1 (reaps orphans) with no network, a
non-root user, memory / pids / CPU limits and no environment of ours (it never sees a
credential). Every operation is a `docker exec` of the runner; the docker SDK is blocking,
so each call runs in a thread. Calls are serialised per sandbox (one case at a time).

The container is removed on every path: `close()` after success, error or cancellation
(also when `start()` itself failed or was cancelled half-way), `close_all_sandboxes()` at
worker shutdown, an atexit hook as a last resort; `streams.janitor` sweeps what a killed
worker left behind.
"""

from __future__ import annotations

import asyncio
import atexit
import base64
import contextlib
import hashlib
import io
import json
import logging
import os
import re
import tarfile
import time
import uuid
import weakref
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from streams.janitor import (
    LABEL_CREATED,
    LABEL_JOB,
    LABEL_MANAGED,
    LABEL_WORKER,
    default_worker_id,
    worker_is_dead,
)
from streams.sandbox import ExecResult, SandboxError

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
INLINE_PAYLOAD_MAX = 64 * 1024
"""Payloads up to this size travel base64-encoded in the exec's argv (Linux caps one
argument at 128 KiB); bigger ones are uploaded as a file first."""
TRANSPORT_SLACK_S = 15.0
"""Host-side allowance on top of timeout + grace before an exec is given up on."""

_NAME_UNSAFE = re.compile(r"[^a-zA-Z0-9_.-]+")
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


class DockerSandbox:
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
        self._start_task: asyncio.Future[None] | None = None
        self._closed = False
        self._lock = asyncio.Lock()

    # ---------------------------------------------------------------- lifecycle

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def start(self) -> None:
        if self._start_task is not None:
            raise SandboxError("sandbox already started")
        if self._closed:
            raise SandboxError("sandbox is closed")
        _LIVE.add(self)
        t0 = time.perf_counter()
        # The create runs to completion in its thread even if we are cancelled meanwhile;
        # close() waits for it, so a container created "too late" is still removed.
        self._start_task = asyncio.ensure_future(asyncio.to_thread(self._create_blocking))
        try:
            await asyncio.shield(self._start_task)
            if self.warmup_enabled:
                self.warmup_info = await self._runner_json(["warmup"], timeout_s=60.0)
                if not self.warmup_info.get("ok"):
                    raise SandboxError(f"warm-up failed: {self.warmup_info}")
        except BaseException:
            await self.close()
            raise
        self.start_ms = (time.perf_counter() - t0) * 1000.0

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            if self._start_task is not None:
                with contextlib.suppress(BaseException):
                    await asyncio.shield(self._start_task)
            # Removal in a thread completes even if this task is cancelled again meanwhile.
            await asyncio.shield(asyncio.to_thread(self._remove_blocking))
        finally:
            _LIVE.discard(self)

    # ---------------------------------------------------------------- operations

    async def exec(self, cmd: str, timeout_s: float) -> ExecResult:
        timeout_s = max(float(timeout_s), 0.1)
        argv = [
            "exec",
            "--timeout",
            f"{timeout_s:.3f}",
            "--grace",
            f"{self.grace_s:.3f}",
            "--max-output",
            str(self.max_output),
            "--",
            cmd,
        ]
        try:
            out = await self._runner_json(argv, timeout_s=timeout_s + self.grace_s)
        except TimeoutError:
            return ExecResult(
                exit_code=None,
                stdout="",
                stderr="sandbox: the runner did not answer in time",
                timed_out=True,
                duration_ms=(timeout_s + self.grace_s + TRANSPORT_SLACK_S) * 1000.0,
                truncated=False,
            )
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
            await self._write(files, clean=False)

    async def reset_workspace(self, files: Mapping[str, str] | None = None) -> None:
        """Empty the workspace and write `files`, in one runner call (a case's setup)."""
        await self._write(files or {}, clean=True)

    async def _write(self, files: Mapping[str, str], *, clean: bool) -> None:
        for path, text in files.items():
            if not isinstance(text, str):
                raise TypeError(f"content of {path!r} must be str")
            if not path or path.startswith("/") or ".." in path.replace("\\", "/").split("/"):
                raise ValueError(f"workspace path must be relative and inside: {path!r}")
        payload = json.dumps(dict(files), ensure_ascii=False).encode("utf-8")
        flags = ["--clean"] if clean else []
        async with self._lock:
            if len(payload) <= INLINE_PAYLOAD_MAX:
                inline = base64.b64encode(payload).decode("ascii")
                argv = ["write", *flags, "--b64", inline]
            else:  # too big for one argv string: upload it, then point the runner at it
                name = f"provenroute-write-{uuid.uuid4().hex}.json"
                archive = _tar_one(name, payload, uid=RUNNER_UID)
                container = self._require_container()
                ok = await asyncio.to_thread(container.put_archive, "/tmp", archive)
                if not ok:
                    raise SandboxError("could not upload the workspace payload")
                argv = ["write", *flags, f"/tmp/{name}"]
            out = await self._runner_json_unlocked(argv, timeout_s=60.0)
        if not out.get("ok"):
            raise SandboxError(f"writing workspace files failed: {out.get('error')}")

    async def read_file(self, path: str) -> str:
        out = await self._runner_json(["read", "--max-bytes", "1048576", path], timeout_s=30.0)
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

    async def _runner_json(self, argv: list[str], *, timeout_s: float) -> dict[str, Any]:
        async with self._lock:
            return await self._runner_json_unlocked(argv, timeout_s=timeout_s)

    async def _runner_json_unlocked(self, argv: list[str], *, timeout_s: float) -> dict[str, Any]:
        container = self._require_container()
        call = asyncio.to_thread(self._exec_blocking, container, ["python3", RUNNER, *argv])
        exit_code, stdout, stderr = await asyncio.wait_for(call, timeout_s + TRANSPORT_SLACK_S)
        line = stdout.strip().splitlines()[-1] if stdout.strip() else b""
        try:
            out = json.loads(line)
        except ValueError:
            out = None
        if not isinstance(out, dict):
            raise SandboxError(
                f"runner {argv[0]} failed (exit {exit_code}): "
                f"{stderr.decode('utf-8', 'replace')[-500:] or stdout[-500:]!r}"
            )
        return out

    @staticmethod
    def _exec_blocking(container: Any, cmd: list[str]) -> tuple[int | None, bytes, bytes]:
        from docker.errors import APIError

        try:
            res = container.exec_run(
                cmd, user=RUNNER_USER, workdir=WORKSPACE, demux=True, stdin=False, tty=False
            )
        except APIError as e:
            raise SandboxError(f"docker exec failed: {e.explanation or e}") from None
        out, err = res.output if res.output is not None else (None, None)
        return res.exit_code, out or b"", err or b""

    def _client_blocking(self) -> Any:
        if self._client is None:
            import docker

            self._client = docker.from_env()
        return self._client

    def _create_blocking(self) -> None:
        from docker.errors import APIError, ImageNotFound

        client = self._client_blocking()
        kwargs: dict[str, Any] = dict(
            command=["python3", RUNNER, "init", "--max-lifetime", str(int(self.max_lifetime_s))],
            name=self.name,
            labels={**self.labels, LABEL_CREATED: str(int(time.time()))},
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
            auto_remove=True,  # an orphan that outlives max_lifetime_s removes itself
            detach=True,
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
                self._clear_conflicting_name(client)
                container = client.containers.create(self.image, **kwargs)
            self._container = container
            container.start()
        except ImageNotFound:
            raise SandboxError(f"image {self.image} not found: run `make image`") from None
        except APIError as e:
            raise SandboxError(f"could not start container {self.name}: {e.explanation}") from None

    def _clear_conflicting_name(self, client: Any) -> None:
        """A container of the same job exists: a previous attempt of this job whose worker
        died (remove it), or the job running elsewhere right now (refuse)."""
        from docker.errors import NotFound

        try:
            other = client.containers.get(self.name)
        except NotFound:
            return
        owner = (other.labels or {}).get(LABEL_WORKER)
        if owner == self.worker_id:
            if any(s is not self and s.name == self.name for s in list(_LIVE)):
                raise SandboxError(f"job {self.job_key} is already running in this worker")
        elif not worker_is_dead(owner):
            raise SandboxError(f"job {self.job_key} already has a live container ({owner})")
        log.info("removing leftover container %s of worker %s", self.name, owner)
        with contextlib.suppress(NotFound):
            other.remove(force=True, v=True)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # auto_remove may still be in flight
            try:
                client.containers.get(self.name)
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
                    if not _is_conflict(e):  # 409: auto-removal already in progress
                        log.warning("could not remove %s: %s", self.name, e.explanation)
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
        if labels.get(LABEL_WORKER) == self.worker_id and labels.get(LABEL_JOB) == self.job_key:
            return c
        return None


def _tar_one(name: str, data: bytes, *, uid: int) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        info.mode = 0o600
        info.uid = info.gid = uid
        info.mtime = int(time.time())
        tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


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
