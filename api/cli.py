"""The `provenroute` command line."""

from __future__ import annotations

import typer

from api.commands import services

app = typer.Typer(
    name="provenroute",
    help="Event-sourced, benchmark-driven LLM model router.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
app.add_typer(services.app, name="services")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
