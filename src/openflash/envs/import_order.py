"""The order in which a first worker will import an environment's files, guessed before it runs.

The first environment using some packages on a machine has no bytecode when its first worker
starts (envs/bytecode_later.py compiles it meanwhile), and nothing was learned yet about what its
workers import (envs/preload_records.py). That worker compiles every module it imports, one after
another in its one thread: for the medium set (pandas, numpy, scipy, matplotlib) 423 modules,
13 MB of source, about 1.2 s of CPU on top of 0.4 s with bytecode. The background compiler can
take that off the worker only if it compiles those modules first, in the order the worker loads
them, while the worker starts.

This module guesses that order from the files alone, without importing or parsing them (parsing
is most of what compiling costs): the *roots* are the top-level modules of the environment's
distributions, those no other distribution of the environment requires (what a user declared, in
practice) first; from each root, the ``import`` and ``from ... import`` statements that run when
the module is loaded (at the top level of the file, or in its top-level ``try``/``if``/``with``
blocks, not under ``if TYPE_CHECKING``, not in a function or class body, nor in a module
``__getattr__`` defined in such a block: numpy's lazy submodules) are followed depth
first, in the order they appear, parents before children: the order Python loads modules in. A
name that is no file of the environment (the standard library, an extension module, a word in a
docstring) is skipped. It is a guess: lazy imports and imports by computed names are missed,
imports of never-taken branches are included; the files it does not name are compiled after.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

__all__ = ["predicted_sources"]

#: The most sources one guess names (a bound on a strange environment, not a usual figure).
MAX_SOURCES = 20000
#: Top-level statements whose indented body runs at import time.
_RUN_AT_IMPORT = frozenset({"try", "except", "else", "elif", "finally", "if", "with"})
_IMPORT = re.compile(r"import\s+(.+)")
_FROM = re.compile(r"from\s+(\.*)([\w.]*)\s+import\s+(.+)")
_NAME = re.compile(r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*")
#: A line that imports, defines a module's ``__getattr__`` in a block (PEP 562: its imports are
#: lazy), or starts a top-level statement (after "\n": a literal the regular expression engine
#: looks for quickly; any indented ``def`` would cost more than it saves).
_LINE = re.compile(
    r"\n([ \t]*(?:import|from)[ \t][^\n]*|[ \t]+def[ \t]+__getattr__\b[^\n]*|[A-Za-z_@][^\n]*)"
)
_REQUIRES = re.compile(r"^Requires-Dist:\s*([A-Za-z0-9][A-Za-z0-9._-]*)(.*)$", re.MULTILINE)


def predicted_sources(site_packages: Path) -> list[Path]:
    """The ``.py`` files under ``site_packages`` that importing its distributions' top-level
    modules loads, in the order Python would load them (a guess: see the module's text); at most
    ``MAX_SOURCES``. Unreadable files and metadata are skipped, never an error."""
    walk = _Walk(site_packages)
    for root in _roots(site_packages):
        walk.visit(root)
        if len(walk.order) >= MAX_SOURCES:
            break
    return walk.order[:MAX_SOURCES]


class _Walk:
    """A depth-first walk of module names to their files, each file once."""

    def __init__(self, site_packages: Path) -> None:
        self.site = site_packages
        self.order: list[Path] = []
        self.seen: set[str] = set()
        # Every file and folder, listed once: a name looked up is a set lookup, not a stat
        # (about 11000 of them for the medium set, a third of the guess's time).
        self.files: set[str] = set()
        self.folders: set[str] = set()
        for dirpath, dirnames, filenames in os.walk(site_packages):
            dirnames[:] = [d for d in dirnames if d != "__pycache__"]
            here = os.path.relpath(dirpath, site_packages)
            prefix = "" if here == "." else here + "/"
            self.folders.update(prefix + d for d in dirnames)
            self.files.update(prefix + f for f in filenames if f.endswith(".py"))

    def visit(self, name: str) -> None:
        stack: list[Iterator[str]] = [iter([name])]
        while stack and len(self.order) < MAX_SOURCES:
            name = next(stack[-1], "")
            if not name:
                stack.pop()
                continue
            parts = name.split(".")
            # Parents first: importing a.b.c runs a and a.b before it.
            for depth in range(1, len(parts) + 1):
                module = ".".join(parts[:depth])
                if module in self.seen:
                    continue
                self.seen.add(module)
                source = self._source(parts[:depth])
                if source is None:
                    if "/".join(parts[:depth]) in self.folders:
                        continue  # a namespace package: no file of its own, its children may
                    break  # no file of this environment: its children are none either
                self.order.append(source)
                children = list(_imports(source, module, source.name == "__init__.py"))
                rest = ".".join(parts)
                if module != rest:
                    children.append(rest)  # then the child asked for, after the parent's own
                stack.append(iter(children))
                break

    def _source(self, parts: list[str]) -> Path | None:
        base = "/".join(parts)
        for candidate in (base + "/__init__.py", base + ".py"):
            if candidate in self.files:
                return self.site / candidate
        return None


def _imports(source: Path, module: str, package: bool) -> Iterator[str]:
    """The absolute module names ``source``'s import-time statements name, in order (for ``from
    X import a``, both ``X`` and ``X.a``: ``a`` may be a submodule)."""
    try:
        text = source.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return
    here = module.split(".") if package else module.split(".")[:-1]
    runs = True  # whether the current top-level block runs at import time
    inside_def = 0  # the indent of a function defined in such a block (0: none)
    for statement in _statements(text):
        indent = len(statement) - len(statement.lstrip())
        line = statement.strip()
        if not indent:
            inside_def = 0
            word = re.split(r"[\s:(]", line, maxsplit=1)[0]
            if word not in ("import", "from"):
                guarded = word in ("if", "elif") and "TYPE_CHECKING" in line
                runs = word in _RUN_AT_IMPORT and not guarded
                continue
        elif not runs or (inside_def and indent > inside_def):
            continue
        elif line.startswith("def "):
            inside_def = indent  # its body runs when called (numpy's lazy __getattr__), not now
            continue
        else:
            inside_def = 0
        if match := _FROM.match(line):
            dots, base, names = match.groups()
            if dots:
                up = len(dots) - 1
                if up > len(here):
                    continue
                prefix = here[: len(here) - up] if up else here
                base = ".".join([*prefix, base] if base else prefix)
            if not base:
                continue
            yield base
            for name in _NAME.findall(names.replace(" as ", " , ")):
                if name != "import" and "." not in name:
                    yield f"{base}.{name}"
        elif match := _IMPORT.match(line):
            for part in match.group(1).split(","):
                name = _NAME.match(part.strip())
                if name:
                    yield name.group(0)


def _statements(text: str) -> Iterator[str]:
    """The lines of ``text`` that start with ``import``/``from`` or start a top-level block,
    a parenthesized or backslash-continued import joined into one line (found by one regular
    expression: a Python loop over every line costs more than the rest of the guess)."""
    text = "\n" + text
    for match in _LINE.finditer(text):
        line = match.group(1)
        if line.lstrip().startswith(("import ", "from ", "import\t", "from\t")):
            end = match.end()
            if line.count("(") > line.count(")"):
                close = text.find(")", end)
                line += " " + text[end : close if close >= 0 else len(text)]
            elif line.endswith("\\"):
                following = text.find("\n", end + 1)
                line = line[:-1] + " " + text[end + 1 : following if following >= 0 else None]
            line = re.sub(r"#[^\n]*", "", line).replace("\n", " ")
            line = line.replace("(", " ").replace(")", " ")
        yield line


def _roots(site_packages: Path) -> list[str]:
    """The top-level modules of the distributions in ``site_packages``: first those of the
    distributions no other one requires (leaving out extras), then the others, each group by
    name."""
    owners: dict[str, list[str]] = {}
    required: set[str] = set()
    for info in sorted(site_packages.glob("*.dist-info")):
        dist = _normalize(info.name[: -len(".dist-info")].rsplit("-", 1)[0])
        owners[dist] = _top_level(info)
        try:
            metadata = (info / "METADATA").read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        for name, rest in _REQUIRES.findall(metadata):
            if "extra" not in rest:
                required.add(_normalize(name))
    order = sorted(owners, key=lambda dist: (dist in required, dist))
    return list(dict.fromkeys(top for dist in order for top in owners[dist]))


def _top_level(info: Path) -> list[str]:
    """The importable top-level names a distribution installed (from its RECORD)."""
    try:
        record = (info / "RECORD").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return []
    names = []
    for line in record.splitlines():
        path = line.split(",", 1)[0]
        first = path.split("/", 1)[0]
        if first.endswith((".dist-info", ".data", ".pth")) or first.startswith(".."):
            continue
        if "/" in path or first.endswith(".py"):
            name = first[:-3] if first.endswith(".py") and "/" not in path else first
            if name.isidentifier():
                names.append(name)
    return list(dict.fromkeys(names))


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()
