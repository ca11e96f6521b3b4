"""``flash init``: a project skeleton that ``flash run`` serves at once."""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path
from typing import Annotated

import typer

from openflash.cli.common import Quiet, console, fail

__all__ = ["init"]

#: Template file -> the file it becomes.
FILES = {
    "cpu_worker.py.tmpl": "cpu_worker.py",
    "gpu_worker.py.tmpl": "gpu_worker.py",
    "lb_worker.py.tmpl": "lb_worker.py",
    "pyproject.toml.tmpl": "pyproject.toml",
    "README.md.tmpl": "README.md",
    "gitignore.tmpl": ".gitignore",
    "env.example.tmpl": ".env.example",
}


def init(
    name: Annotated[str, typer.Argument(help="A new folder's name, or '.' for this folder.")] = ".",
    force: Annotated[bool, typer.Option(help="Overwrite files that exist.")] = False,
    quiet: Quiet = False,
) -> None:
    """Create a project: a CPU, a GPU and a load-balanced worker, ready for `flash run`.

    Example: flash init my-project && cd my-project && flash run
    """
    target = Path(name)
    if target.exists() and not target.is_dir():
        fail(f"{name} exists and is not a folder", "pick another name")
    project = re.sub(r"[^A-Za-z0-9_-]+", "-", target.resolve().name).strip("-").lower() or "project"
    existing = [dest for dest in FILES.values() if (target / dest).exists()]
    if existing and not force:
        fail(
            f"{target / existing[0]} already exists",
            "pass --force to overwrite the skeleton's files",
        )
    target.mkdir(parents=True, exist_ok=True)
    templates = resources.files("openflash.cli") / "scaffold"
    for template, dest in FILES.items():
        text = (templates / template).read_text().replace("{name}", project)
        (target / dest).write_text(text)
    if quiet:
        return
    console.print(f"created {project} in {target.resolve()}: {', '.join(FILES.values())}")
    steps = [] if name == "." else [(f"cd {name}", "")]
    steps += [
        ("flash check", "resolve every endpoint's dependencies (nothing is built)"),
        ("python cpu_worker.py", "call the CPU endpoint from Python (built on the first call)"),
        ("flash run", "serve them all: dashboard at http://127.0.0.1:8888/, API at /docs"),
    ]
    width = max(len(command) for command, _ in steps)
    console.print("next:", markup=False)
    for command, why in steps:
        console.print(f"  {command.ljust(width)}  {why}".rstrip(), markup=False)
