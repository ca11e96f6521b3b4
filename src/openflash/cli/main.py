"""``flash``: the command line."""

from __future__ import annotations

import typer

import openflash
from openflash.cli.build import build
from openflash.cli.check import check
from openflash.cli.env import app as env_app
from openflash.cli.init import init
from openflash.cli.lock import lock
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
app.command("init")(init)
app.command("check")(check)
app.command("lock")(lock)
app.add_typer(env_app, name="env")
app.command("build")(build)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
