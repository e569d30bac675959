"""`provenroute demo`: the main job end to end on the local services and the SIMULATED fleet.

Starts the simulated provider, `--workers` workers and the projector as child processes
(logs in .state/logs), saves the example config, runs a classifier and a decider benchmark
with progress bars, and prints the published routing table and classifier winner; then
serves /decide from `--replicas` replicas and sends a few conversations through the gateway
client, round robin over the replicas, naming the replica that answered each turn and the
CPU each worker spent on the runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import typer

from api.cli.runs import console
from api.cli.services import collect_health
from api.gateway_client import demo_conversations
from infra.settings import PROJECT_ROOT, Settings
from streams.kafka_admin import ensure_topics

EXAMPLE_CONFIG = PROJECT_ROOT / "examples" / "benchmark-config.yaml"


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "api.cli", *args]


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a child so far (how the work spread over the workers)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextlib.contextmanager
def child(name: str, argv: list[str], env: dict[str, str], logs: Path) -> Iterator[int]:
    logs.mkdir(parents=True, exist_ok=True)
    with open(logs / f"{name}.log", "ab") as out:
        proc = subprocess.Popen(
            argv, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=PROJECT_ROOT
        )
        try:
            yield proc.pid
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()


def wait_for_sim(url: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url}/models", timeout=2).status_code == 200:
                return
        time.sleep(0.3)
    raise typer.Exit(f"simulated provider did not answer at {url}")  # type: ignore[arg-type]


def wait_until_ready(url: str, timeout_s: float = 90.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=2).status_code == 200:
                return
        time.sleep(0.5)
    console.print(f"[red]{url} not ready after {timeout_s:.0f}s[/]")
    raise typer.Exit(1)


def step(cmd: list[str], env: dict[str, str]) -> None:
    result = subprocess.run(cmd, env=env, cwd=PROJECT_ROOT)
    if result.returncode != 0:
        console.print(f"[red]demo step failed:[/] {' '.join(cmd[2:])}")
        raise typer.Exit(result.returncode)


def demo(
    latency_scale: float = typer.Option(
        0.1, help="Scale of the simulated models' latency (1.0 = as declared)."
    ),
    config: Path = typer.Option(EXAMPLE_CONFIG, help="Benchmark config to save."),
    force: bool = typer.Option(False, help="Re-run every model even if it has results."),
    workers: int = typer.Option(1, min=1, max=8, help="Worker processes (one consumer group)."),
    replicas: int = typer.Option(
        1, min=1, max=8, help="Decide replicas, on consecutive ports from the API port."
    ),
) -> None:
    """Run the benchmark-and-publish story end to end on the SIMULATED fleet."""
    settings = Settings()
    console.rule("[bold]provenroute demo[/] (models are SIMULATED)")
    with contextlib.suppress(Exception):  # a broker that is down is reported just below
        asyncio.run(ensure_topics(settings.kafka_bootstrap, settings.topic_prefix))
    health = collect_health(settings)
    for h in health:
        console.print(f"  {h.name:9} {'[green]up[/]' if h.ok else '[red]down[/]'}  {h.detail}")
    if not all(h.ok for h in health):
        console.print("[red]services are not healthy: run `make services-up`[/]")
        raise typer.Exit(1)
    step(_cli("datasets", "check"), dict(os.environ))

    logs = PROJECT_ROOT / ".state" / "logs"
    env = {
        **os.environ,
        "PROVENROUTE_SIM_LATENCY_SCALE": str(latency_scale),
        "COLUMNS": os.environ.get("COLUMNS", "160"),  # wide tables when piped
        # Simulated hangs must not stall the demo: a call gets 20 s at most.
        "PROVENROUTE_PROVIDER_TIMEOUT_S": os.environ.get("PROVENROUTE_PROVIDER_TIMEOUT_S", "20"),
    }
    sim_url = f"http://127.0.0.1:{settings.sim_port}/v1"
    console.print(f"logs of the simulated provider and the worker: {logs}")
    with contextlib.ExitStack() as stack:
        stack.enter_context(
            child("sim-provider", _cli("sim-provider", "--port", str(settings.sim_port)), env, logs)
        )
        worker_pids = [
            stack.enter_context(child(f"worker-{i + 1}", _cli("worker"), env, logs))
            for i in range(workers)
        ]
        stack.enter_context(child("projector", _cli("project"), env, logs))
        wait_for_sim(sim_url)
        console.rule("save the benchmark config")
        step(_cli("config", "set", "-f", str(config), "--timeout", "180"), env)
        for kind in ("classifier", "decider"):
            console.rule(f"{kind} benchmark")
            args = ["run", "start", "--kind", kind, "--wait"] + (["--force"] if force else [])
            step(_cli(*args), env)
        for i, pid in enumerate(worker_pids):
            console.print(f"worker-{i + 1} (pid {pid}): {cpu_seconds(pid):.1f} s CPU so far")
        console.rule("the live routing table, from the PostgreSQL projection")
        time.sleep(2)  # the projector follows the log; give it a moment to catch up
        step(_cli("routing-table", "show"), env)
        console.rule("POST /decide through the gateway client")
        urls = [f"http://127.0.0.1:{settings.api_port + i}" for i in range(replicas)]
        with contextlib.ExitStack() as apis:
            for i in range(replicas):
                name = f"api-{i + 1}"
                port = str(settings.api_port + i)
                api_env = {**env, "PROVENROUTE_DECIDE_REPLICA_ID": name}
                apis.enter_context(child(name, _cli("serve", "--port", port), api_env, logs))
            for url in urls:
                wait_until_ready(f"{url}/readyz")
            asyncio.run(
                demo_conversations(
                    urls,
                    settings.internal_secret.get_secret_value(),
                    settings.gateway_fallback_model,
                )
            )
    console.rule("[bold]done[/]")
    console.print("Run `make demo` again: every model is carried, so the runs publish at once.")
