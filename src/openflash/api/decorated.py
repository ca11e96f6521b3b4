"""Which source files decorate something: read without importing them.

``flash run`` imports only the project files that define an endpoint, as Runpod's dev server does,
so a plain script beside them (a load-test client, a one-off tool) never has its module-level code
run. A file counts when, read as Python syntax, it has

* a decorator named ``remote`` or ``Endpoint`` (``@remote(...)``, ``@Endpoint(...)``,
  ``@flash.remote``),
* a route decorator ``@<name>.get/post/put/delete/patch(...)`` (``@api.post("/x")`` on an
  ``Endpoint`` made here or imported), or
* a call of the decorators' result (``remote(config)(fn)``).

A file that cannot be read as Python counts too, so that its error is reported rather than hidden.
"""

from __future__ import annotations

import ast
from pathlib import Path

__all__ = ["DECORATOR_NAMES", "decorates_something"]

DECORATOR_NAMES = frozenset({"remote", "Endpoint"})
ROUTE_VERBS = frozenset({"get", "post", "put", "delete", "patch"})


def decorates_something(file: Path) -> bool:
    """Whether ``file`` defines an endpoint (or cannot be parsed, and so must be imported)."""
    try:
        tree = ast.parse(file.read_bytes(), filename=str(file))
    except (OSError, SyntaxError, ValueError):
        return True
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            if any(_is_endpoint_decorator(d) for d in node.decorator_list):
                return True
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Call)
            and _name(node.func.func) in DECORATOR_NAMES  # remote(config)(fn)
        ):
            return True
    return False


def _is_endpoint_decorator(decorator: ast.expr) -> bool:
    target = decorator.func if isinstance(decorator, ast.Call) else decorator
    if _name(target) in DECORATOR_NAMES:
        return True
    return (
        isinstance(decorator, ast.Call)
        and isinstance(target, ast.Attribute)
        and target.attr in ROUTE_VERBS
    )


def _name(node: ast.expr) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return None
