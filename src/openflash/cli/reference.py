"""docs/cli.md, generated from the CLI itself: ``python -m openflash.cli.reference > docs/cli.md``.

The test suite regenerates it and fails when the file in docs/ differs, so the reference cannot
drift from the commands.
"""

from __future__ import annotations

from typing import Any

import typer

__all__ = ["render"]


def render() -> str:
    from openflash.cli.main import app

    root = typer.main.get_command(app)
    lines = [
        "# CLI reference",
        "",
        "Generated from the commands themselves",
        "(`python -m openflash.cli.reference > docs/cli.md`; the test suite fails if this page",
        "and the CLI disagree). Every command also answers `--help`.",
        "",
    ]
    _command(root, ["flash"], lines)
    return "\n".join(lines).rstrip() + "\n"


def _command(command: Any, path: list[str], lines: list[str]) -> None:
    """One command's section, then its subcommands' (typer vendors click: duck-typed)."""
    name = " ".join(path)
    ctx = command.context_class(command, info_name=name)
    lines += [f"## `{name}`", ""]
    text = (command.help or "").strip()
    if text:
        lines += [_plain(text), ""]
    lines += ["```text", command.get_usage(ctx).replace("Usage: ", "usage: ", 1), "```", ""]
    rows = [_param_row(p) for p in command.params if not getattr(p, "hidden", False)]
    if rows:
        lines += ["| argument or option | default | meaning |", "| --- | --- | --- |", *rows, ""]
    if hasattr(command, "list_commands"):
        for sub_name in command.list_commands(ctx):
            sub = command.get_command(ctx, sub_name)
            if sub is not None and not sub.hidden:
                _command(sub, [*path, sub_name], lines)


def _param_row(param: Any) -> str:
    if param.param_type_name == "argument":
        label = f"`{(param.metavar or param.name).upper()}`" + (
            "" if param.required else " (optional)"
        )
        meaning = getattr(param, "help", None) or ""
    else:
        label = ", ".join(f"`{n}`" for n in [*param.opts, *param.secondary_opts])
        meaning = param.help or ""
    default = param.default
    flag_off = getattr(param, "is_flag", False) and not default
    shown = "" if default in (None, ()) or flag_off or callable(default) else f"`{default}`"
    return f"| {label} | {shown} | {_plain(meaning)} |"


def _plain(text: str) -> str:
    return " ".join(text.replace("|", "\\|").split())


if __name__ == "__main__":
    print(render(), end="")
