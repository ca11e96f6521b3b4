"""``flash``: the command line."""

from __future__ import annotations

import typer

import openflash
from openflash.cli.run import run

app = typer.Typer(
    name="flash",
    help="Run Flash-style remote functions with per-function dependencies on your own machines.",
    no_args_is_help=True,
    add_completion=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"openflash {openflash.__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """openflash"""


@app.command()
def version() -> None:
    """Print openflash's version."""
    typer.echo(f"openflash {openflash.__version__}")


app.command("run")(run)
app.command("dev", help="Alias of `flash run`.")(run)


def main() -> None:
    app()
