"""`provenroute demo`: the main job end to end on the local services and the SIMULATED fleet.

Starts the simulated provider, a worker and the projector as child processes (logs in
.state/logs), saves the example config, runs a classifier and a decider benchmark with
progress bars, and prints the published routing table and classifier winner; then serves
/decide and sends a few conversations through the gateway client.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import time
from pathlib import Path

import typer

from api.cli.runs import console
from api.cli.services import collect_health
from api.gateway_client import demo_conversations
from infra.clock import utc_now
from infra.processes import (
    ChildFailed,
    child_env,
    cli,
    start_projector,
    start_serve,
    start_sim_provider,
    start_worker,
)
from infra.settings import PROJECT_ROOT, Settings, assume_dev
from streams.kafka_admin import ensure_topics

EXAMPLE_CONFIG = PROJECT_ROOT / "examples" / "benchmark-config.yaml"


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a child so far (how the work spread over the workers)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


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
    assume_dev()
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
    step(cli("datasets", "check"), child_env())

    logs = PROJECT_ROOT / ".state" / "logs"
    env = child_env(
        COLUMNS=os.environ.get("COLUMNS", "160"),  # wide tables when piped
        # Simulated hangs must not stall the demo: a call gets 20 s at most.
        PROVENROUTE_PROVIDER_TIMEOUT_S=os.environ.get("PROVENROUTE_PROVIDER_TIMEOUT_S", "20"),
    )
    console.print(f"logs of the simulated provider and the worker: {logs}")
    with contextlib.ExitStack() as stack:
        try:
            sim, _url = start_sim_provider(
                PROJECT_ROOT,
                env,
                latency_scale=latency_scale,
                port=settings.sim_port,
                name="sim-provider",
                log_dir=logs,
            )
        except ChildFailed as e:
            console.print(f"[red]the simulated provider did not start[/]: {e}")
            raise typer.Exit(1) from None
        stack.enter_context(sim)
        worker_pids = [
            stack.enter_context(
                start_worker(PROJECT_ROOT, env, name=f"worker-{i + 1}", log_dir=logs)
            ).pid
            for i in range(workers)
        ]
        stack.enter_context(start_projector(PROJECT_ROOT, env, log_dir=logs))
        console.rule("save the benchmark config")
        step(cli("config", "set", "-f", str(config), "--timeout", "180"), env)
        for kind in ("classifier", "decider"):
            console.rule(f"{kind} benchmark")
            args = ["run", "start", "--kind", kind, "--wait"] + (["--force"] if force else [])
            step(cli(*args), env)
        for i, pid in enumerate(worker_pids):
            console.print(f"worker-{i + 1} (pid {pid}): {cpu_seconds(pid):.1f} s CPU so far")
        console.rule("the live routing table, from the PostgreSQL projection")
        time.sleep(2)  # the projector follows the log; give it a moment to catch up
        step(cli("routing-table", "show"), env)
        console.rule("POST /decide through the gateway client")
        served_since = utc_now()
        urls: list[str] = []
        with contextlib.ExitStack() as apis:
            for i in range(replicas):
                name = f"api-{i + 1}"
                try:
                    api, url = start_serve(
                        PROJECT_ROOT,
                        {**env, "PROVENROUTE_DECIDE_REPLICA_ID": name},
                        port=settings.api_port + i,
                        name=name,
                        log_dir=logs,
                    )
                except ChildFailed as e:
                    console.print(f"[red]the decide service {name} did not get ready[/]: {e}")
                    raise typer.Exit(1) from None
                apis.enter_context(api)
                urls.append(url)
            asyncio.run(
                demo_conversations(
                    urls,
                    settings.internal_secret.get_secret_value(),
                    settings.gateway_fallback_model,
                )
            )
        console.rule("what-if: this demo's traffic under the lower-bound acceptance rule")
        step(
            cli(
                "whatif", "--since", served_since, "--run", "latest", "--acceptance", "lower_bound"
            ),
            env,
        )
    console.rule("[bold]done[/]")
    console.print("Run `make demo` again: every model is carried, so the runs publish at once.")
