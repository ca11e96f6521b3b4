"""The ``flash`` command line (typer)."""

from openflash.cli.main import app, main

__all__ = ["app", "main"]
