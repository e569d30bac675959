"""One decider job through an agent CLI: the job's model proxy, its socket directory and
its container, set up and torn down together.

The socket directory is per job (a short path under the temp dir: unix socket paths are
limited to 108 bytes) and is bind-mounted read-only into that job's container only, so a
container can reach its own proxy and nothing else.
"""

from __future__ import annotations

import contextlib
import hashlib
import shutil
import socket
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from contracts.config import HarnessName
from infra.provider.client import credential_key
from infra.provider.pricing import PriceTable
from infra.settings import Settings
from streams.cli_flavors import CliFlavor, KiloFlavor, MiniSweAgentFlavor
from streams.cli_harness import CliHarness
from streams.docker_sandbox import DockerSandbox
from streams.model_proxy import SOCKET_NAME, ModelProxy
from streams.sandbox import Sandbox

CLI_MEM_LIMIT = "1g"
"""Memory cap of an agent-CLI job container: the Kilo CLI alone peaks near 680 MB (its
169 MB binary's pages included), over the built-in harness's 512 MB."""
CliSandboxFactory = Callable[[str, Path], Sandbox]
"""(job key, host socket directory) -> a sandbox that bind-mounts that directory."""


def flavor_for(harness: HarnessName) -> CliFlavor:
    if harness == "kilo":
        return KiloFlavor()
    if harness == "mini-swe-agent":
        return MiniSweAgentFlavor()
    raise ValueError(f"{harness!r} is not an agent-CLI harness")


SOCKET_ROOT = Path(tempfile.gettempdir()) / "provenroute-mp"
STALE_AFTER_S = 600.0


def socket_dir(job_key: str) -> Path:
    digest = hashlib.sha256(job_key.encode("utf-8")).hexdigest()[:16]
    return SOCKET_ROOT / digest


def sweep_stale_socket_dirs(root: Path = SOCKET_ROOT, stale_after_s: float = STALE_AFTER_S) -> int:
    """Remove socket directories a killed process left behind: older than `stale_after_s`
    and with nobody listening on their socket. Returns how many went."""
    removed = 0
    now = time.time()
    for directory in root.glob("*") if root.is_dir() else ():
        try:
            if now - directory.stat().st_mtime < stale_after_s:
                continue
        except OSError:
            continue
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(str(directory / SOCKET_NAME))
            continue  # a live proxy
        except OSError:
            pass
        finally:
            sock.close()
        shutil.rmtree(directory, ignore_errors=True)
        removed += 1
    return removed


def settings_secrets(settings: Settings) -> list[str]:
    """Every credential value the worker holds (scrubbed from whatever a harness emits)."""
    return [settings.provider_api_key.get_secret_value()] + [
        s.get_secret_value() for s in settings.provider_credentials.values()
    ]


@contextlib.asynccontextmanager
async def cli_job(
    settings: Settings,
    *,
    job_key: str,
    harness: HarnessName,
    model: str,
    reasoning_effort: str | None,
    credential: str | None,
    sandbox_factory: CliSandboxFactory | None = None,
) -> AsyncIterator[tuple[CliHarness, Sandbox]]:
    """The job's harness and its started sandbox; everything is removed on exit."""
    sweep_stale_socket_dirs()
    directory = socket_dir(job_key)
    shutil.rmtree(directory, ignore_errors=True)  # a previous attempt's leftovers
    directory.mkdir(parents=True, mode=0o755)
    directory.chmod(0o755)
    price_table = PriceTable.load(settings.price_table_file) if settings.price_table_file else None
    proxy = ModelProxy(
        directory / SOCKET_NAME,
        base_url=settings.provider_base_url,
        api_key=credential_key(settings, credential),
        model=model,
        reasoning_effort=reasoning_effort,
        price_table=price_table,
        redact_also=settings_secrets(settings),
    )
    try:
        await proxy.start()
        sandbox = (
            sandbox_factory(job_key, directory)
            if sandbox_factory
            else DockerSandbox(
                job_key,
                image=settings.docker_image,
                model_socket_dir=directory,
                mem_limit=CLI_MEM_LIMIT,
            )
        )
        async with sandbox:
            yield CliHarness(flavor_for(harness), proxy, redact=settings_secrets(settings)), sandbox
    finally:
        await proxy.close()
        shutil.rmtree(directory, ignore_errors=True)
