"""`provenroute sim-provider`: serve the simulated OpenAI-compatible provider."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def sim_provider(
    fleet: Annotated[
        Path | None,
        typer.Option(
            "--fleet",
            help="Fleet YAML file (default: the fleet shipped in simulator/fleet.yaml).",
            exists=True,
            dir_okay=False,
        ),
    ] = None,
    port: Annotated[
        int | None,
        typer.Option("--port", help="Port to listen on (default: PROVENROUTE_SIM_PORT, 8787)."),
    ] = None,
    host: Annotated[str, typer.Option("--host", help="Interface to bind.")] = "127.0.0.1",
) -> None:
    """Serve SIMULATED models at http://HOST:PORT/v1 (chat completions and model list).

    Latency is scaled by PROVENROUTE_SIM_LATENCY_SCALE (default 1.0; 0 answers at once).
    """
    import uvicorn

    from infra.settings import Settings, assume_dev
    from simulator.fleet import load_fleet
    from simulator.server import create_app

    try:
        loaded = load_fleet(fleet)
        app = create_app(loaded)
    except ValueError as e:
        typer.secho(f"error: {e}", err=True, fg=typer.colors.RED)
        raise typer.Exit(2) from e
    assume_dev()  # the simulated provider is the offline stand-in: development by nature
    bind_port = Settings().sim_port if port is None else port
    typer.echo(
        f"simulated provider: {len(loaded.models)} SIMULATED models at "
        f"http://{host}:{bind_port}/v1 ({', '.join(m.id for m in loaded.models)})"
    )
    uvicorn.run(app, host=host, port=bind_port, log_level="info", timeout_graceful_shutdown=2)
