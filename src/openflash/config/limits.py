"""The bounds of what a resource config holds: an endpoint's name (it names files, routes,
Dockerfiles and log lines), integer fields (no bools, nothing past a sane bound) and ``env``
(what a process environment can hold), and how a bad value is shown (escaped, cut short)."""

from __future__ import annotations

import os
import re
import sys
from typing import Any

__all__ = ["ENDPOINT_NAME", "INT_LIMITS", "check_env_size", "check_integer", "shown"]

#: An endpoint's name: letters, digits, '_', '.', '-'; never a path, a newline or an escape.
ENDPOINT_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")

#: The largest value each integer field takes (beyond: a typo, or an overflow later).
INT_LIMITS = {
    "gpuCount": 64,
    "workersMin": 1000,
    "workersMax": 1000,
    "idleTimeout": 3600,
    "executionTimeoutMs": 30 * 86400 * 1000,  # 30 days
}


def _sysconf(name: str, default: int) -> int:
    try:
        value = os.sysconf(name)
    except (ValueError, OSError):
        return default
    return value if value > 0 else default


#: Linux's limits on a new process's environment: one string, and all of it with the arguments.
MAX_ARG_STRLEN = 32 * _sysconf("SC_PAGE_SIZE", 4096)
ARG_MAX = _sysconf("SC_ARG_MAX", 2 * 1024 * 1024)


def check_integer(field: str, value: Any) -> Any:
    """``value`` for the integer ``field``, refused (ValueError) if a bool or past its bound."""
    if isinstance(value, bool):
        raise ValueError("a number is needed, not a bool")
    limit = INT_LIMITS[field]
    if isinstance(value, int) and value > limit:
        raise ValueError(f"past the largest value allowed, {limit}")
    return value


def check_env_size(env: dict[str, str]) -> None:
    """Refuse (ValueError) an ``env`` a worker's process could not be started with: one
    variable past MAX_ARG_STRLEN, or all of them past half of ARG_MAX (the host's need room)."""
    sizes = {key: len(f"{key}={item}".encode(errors="replace")) + 1 for key, item in env.items()}
    for key, size in sizes.items():
        if size > MAX_ARG_STRLEN:
            raise ValueError(
                f"the value of {key!r} is {size} bytes; a process's environment variable "
                f"holds at most {MAX_ARG_STRLEN} (the OS's MAX_ARG_STRLEN)"
            )
    if sum(sizes.values()) > ARG_MAX // 2:
        raise ValueError(
            f"its variables take {sum(sizes.values())} bytes; a worker's whole environment "
            f"and arguments must fit in {ARG_MAX} (the OS's ARG_MAX), with the host's"
        )


def shown(value: Any) -> str:
    """``repr(value)`` (control characters escaped), cut short when long (10**400)."""
    try:
        text = repr(value)
    except ValueError:  # an int too long to print
        return f"<an int of more than {sys.get_int_max_str_digits()} digits>"
    return text if len(text) <= 80 else f"{text[:60]}... ({len(text)} characters)"
