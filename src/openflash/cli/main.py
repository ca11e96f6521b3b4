"""``flash``: the command line.

``main`` runs the commands with two things typer leaves out: an error of openflash's own
(``FlashError``: a bad ``FLASH_*`` value, a bad spec) that a command lets through is printed as
its message and hint, exit code 2, never a traceback (``-v`` or FLASH_VERBOSE=1 keeps the
traceback); and ``--help`` shows flags as flags, without typer's type column (``<bool>``).
"""

from __future__ import annotations

import os
import sys
from typing import Any

import typer
from rich.markup import escape

import openflash
from openflash.cli.build import build
from openflash.cli.check import check
from openflash.cli.common import console
from openflash.cli.env import app as env_app
from openflash.cli.init import init
from openflash.cli.lock import lock
from openflash.cli.run import run
from openflash.errors import FlashError
from openflash.runtime import process, stopping

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


def command() -> Any:
    """The click command ``flash`` runs: the typer app's, its help tidied (``_tidy``)."""
    root = typer.main.get_command(app)
    _tidy(root)
    return root


def main() -> None:
    # A Ctrl-C or SIGTERM while a command builds kills uv and what it started (their own
    # process groups), at once and at exit, and says in one line what it stopped
    # (runtime/stopping.py).
    stopping.install(process.current, sigint=True)
    try:
        command()(prog_name="flash")
    except FlashError as e:
        verbose = {"-v", "--verbose"} & set(sys.argv[1:])
        if verbose or os.environ.get("FLASH_VERBOSE", "").strip() in ("1", "true", "yes"):
            raise
        console.print(f"[red]error:[/red] {escape(e.message)}")
        if e.hint:
            console.print(f"[dim]hint:[/dim] {escape(e.hint)}")
        raise SystemExit(2) from None


def _tidy(command: Any) -> None:
    """Flags shown as flags and values by name (``--port PORT``), not typer's ``<bool>`` and
    ``<int>`` type column; through every subcommand (typer vendors click: duck-typed)."""
    for param in command.params:
        if getattr(param, "is_flag", False) or getattr(param, "count", False):
            param.metavar = ""
        elif param.param_type_name == "argument":  # shown by its name: no type beside it
            param.display_type_rich = lambda ctx: None
        elif param.metavar is None:
            param.metavar = param.name.upper()
    get_help = command.get_help_option

    def help_option(ctx: Any) -> Any:
        option = get_help(ctx)
        if option is not None:
            option.metavar = ""
        return option

    command.get_help_option = help_option
    for sub in getattr(command, "commands", {}).values():
        _tidy(sub)


if __name__ == "__main__":
    main()
