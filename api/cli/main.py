"""The `provenroute` command line."""

from __future__ import annotations

import typer

from api.cli import datasets, demo, harness, projections, runs, serve, services, sim, usage, whatif

app = typer.Typer(
    name="provenroute",
    help="Event-sourced, benchmark-driven LLM model router.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
app.add_typer(services.app, name="services")
app.command("worker")(runs.worker)
app.add_typer(runs.config_app, name="config")
app.add_typer(runs.run_app, name="run")
app.add_typer(datasets.app, name="datasets")
app.add_typer(harness.app, name="harness")
app.command("sim-provider")(sim.sim_provider)
app.command("serve")(serve.serve)
app.command("demo")(demo.demo)
app.command("whatif")(whatif.whatif_cmd)
app.command("usage")(usage.usage_cmd)
projections.register(app)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
