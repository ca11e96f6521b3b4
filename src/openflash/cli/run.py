"""``flash run`` (alias ``flash dev``): serve a project's endpoints on this machine."""

from __future__ import annotations

import errno
import inspect
import ipaddress
import json
import logging
import os
import socket
import typing
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Annotated, Any, NoReturn

import typer
import uvicorn
from dotenv import load_dotenv
from rich.table import Table

from openflash._settings import Settings
from openflash.cli.common import Quiet, Verbose, console
from openflash.errors import ConfigError, FlashError
from openflash.prepare.build_progress import quiet_from_env
from openflash.project import Project
from openflash.runtime import dumpable
from openflash.server.app import create_app
from openflash.server.edge import (
    allowed_hosts,
    edge_settings,
    header_timeout_protocol,
    raise_fd_limit,
)
from openflash.server.journal_files import JournalLock
from openflash.server.security import DEFAULT_MAX_BODY

__all__ = ["run"]

PORT_ATTEMPTS = 20


def run(
    path: Annotated[Path, typer.Argument(help="The project folder.")] = Path("."),
    host: Annotated[
        str, typer.Option(envvar="FLASH_HOST", help="Address to listen on.")
    ] = "127.0.0.1",
    port: Annotated[
        int, typer.Option("--port", "-p", envvar="FLASH_PORT", help="Port to listen on.")
    ] = 8888,
    reload: Annotated[
        bool, typer.Option("--reload/--no-reload", help="Reload routes when files change.")
    ] = True,
    only: Annotated[
        list[str] | None,
        typer.Option("--only", envvar="FLASH_ENDPOINTS", help="Serve only this endpoint (repeat)."),
    ] = None,
    backend: Annotated[
        str | None,
        typer.Option(envvar="FLASH_BACKEND", help="Where workers run: local or ray."),
    ] = None,
    address: Annotated[
        str | None, typer.Option(envvar="RAY_ADDRESS", help="The Ray cluster (with --backend ray).")
    ] = None,
    log_format: Annotated[
        str,
        typer.Option(
            "--log-format",
            envvar="FLASH_LOG_FORMAT",
            help="How calls, builds and workers are logged: text or json (one object a line).",
        ),
    ] = "text",
    quiet: Quiet = False,
    verbose: Verbose = False,
) -> None:
    """Serve the project's endpoints over HTTP, with docs at /docs and a dashboard at /.

    Example: flash run --port 8888
    """
    quiet = quiet or quiet_from_env()  # FLASH_QUIET=1 is -q
    root = path.resolve()
    if not root.is_dir():
        _fail(f"{path} is not a folder", "run flash run in your project folder, or pass its path")
    os.chdir(root)  # workers start here, as they do under `python file.py`
    load_dotenv(root / ".env", override=False)
    if backend:
        os.environ["FLASH_BACKEND"] = backend  # read when the server's runtime starts
    if address:
        os.environ["RAY_ADDRESS"] = address
    # A bad FLASH_* value stops here, as its message and hint (cli/main.py), not in the server.
    settings = Settings.from_env()
    # Before any worker starts: they cannot read this process's keys (runtime/dumpable.py).
    dumpable.protect(settings.non_dumpable, "server")
    api_key = os.environ.get("FLASH_API_KEY") or os.environ.get("RUNPOD_API_KEY") or None
    if not _is_loopback(host) and not api_key:
        _fail(
            f"refusing to listen on {host}, which other machines can reach, without an API key",
            "set FLASH_API_KEY (or RUNPOD_API_KEY); clients send 'Authorization: Bearer <key>'",
        )
    if _is_loopback(host):
        api_key = (
            os.environ.get("FLASH_API_KEY") or None
        )  # a Runpod key alone does not lock localhost
    max_body = _max_body()
    fd_limit = raise_fd_limit()  # thousands of connections do not exhaust a default of 1024
    try:
        edge = edge_settings(fd_limit)
    except ConfigError as e:
        _fail(e.message, e.hint)
    # a key-less server on loopback answers only to its own names (no DNS rebinding)
    hosts = allowed_hosts(host) if api_key is None and _is_loopback(host) else None
    if log_format not in ("text", "json"):
        env = os.environ.get("FLASH_LOG_FORMAT") == log_format  # set there (the flag wins)
        given = f"FLASH_LOG_FORMAT={log_format!r}" if env else f"--log-format {log_format!r}"
        _fail(
            f"{given} is not text or json",
            "pass --log-format text or --log-format json (or set FLASH_LOG_FORMAT to one of them)",
        )
    names = frozenset(n.strip() for item in only or [] for n in item.split(",") if n.strip())
    if verbose:
        logging.basicConfig(format="%(name)s: %(message)s")
        logging.getLogger("openflash").setLevel(logging.DEBUG)
    try:  # before anything is imported or resumed: one server per journal
        journal_lock = JournalLock.acquire(root / ".flash")
    except FlashError as e:
        _fail(e.message, e.hint)
    try:
        app = create_app(
            root,
            api_key=api_key,
            max_body=max_body,
            reload=reload,
            only=names or None,
            quiet=quiet,
            log_format=log_format,
            allowed_hosts=hosts,
        )
    except FlashError as e:  # the journal refused, say
        _fail(e.message, e.hint)
    if names and not app.state.flash.endpoints():
        _fail(f"no endpoint named {', '.join(sorted(names))} in {root}", "check --only's names")
    sock, bound = _bind(host, port)
    journal_lock.record(host=host, port=bound)
    if bound != port:
        console.print(f"[yellow]port {port} is taken; using {bound}[/yellow]")
    if not quiet:
        _print_routes(app.state.flash, host, bound, api_key is not None)
    config = uvicorn.Config(
        app,
        log_level="warning",
        lifespan="on",
        timeout_graceful_shutdown=5,
        http=header_timeout_protocol(edge.header_timeout_s),
        timeout_keep_alive=edge.keep_alive_s,
        limit_concurrency=edge.max_connections,
    )
    server = _Server(config, on_exit=lambda: _stop(app))
    app.state.flash_stopping = lambda: server.should_exit  # open dashboards let go at a stop
    server.run(sockets=[sock])


class _Server(uvicorn.Server):
    """uvicorn's server, which also stops openflash's builds and calls as soon as a Ctrl-C or
    SIGTERM comes (server/app.py's ``stop``), so that its graceful shutdown has nothing to wait
    for."""

    def __init__(self, config: uvicorn.Config, on_exit: Callable[[], None]) -> None:
        super().__init__(config)
        self._on_exit = on_exit

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        super().handle_exit(sig, frame)
        self._on_exit()


def _stop(app: Any) -> None:
    stop = getattr(app.state, "stop", None)  # set once the server has started
    if stop is not None:
        stop()


def _fail(message: str, hint: str) -> NoReturn:
    console.print(f"[red]error:[/red] {message}\n[dim]hint:[/dim] {hint}")
    raise typer.Exit(2)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _max_body() -> int:
    text = os.environ.get("FLASH_MAX_BODY", "").strip()
    if not text:
        return DEFAULT_MAX_BODY
    if not text.isdigit() or int(text) < 1:
        _fail(f"FLASH_MAX_BODY={text!r} is not a number of bytes", "e.g. FLASH_MAX_BODY=10485760")
    return int(text)


def _bind(host: str, port: int) -> tuple[socket.socket, int]:
    """A listening socket on ``port`` or, if it is taken, on one of the next ones."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    for candidate in range(port, port + PORT_ATTEMPTS + 1):
        # IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on sockets that say they are TCP,
        # and without it every keep-alive response waits ~40 ms for a delayed ACK.
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, candidate))
        except OSError as e:
            sock.close()
            if e.errno == errno.EADDRINUSE:
                continue
            _fail(f"cannot listen on {host}:{candidate}: {e.strerror}", "check --host")
        sock.listen(2048)
        sock.set_inheritable(True)
        return sock, candidate
    _fail(f"ports {port} to {port + PORT_ATTEMPTS} are all taken", "pass a free one with --port")
    raise AssertionError  # unreachable


def _print_routes(state: object, host: str, port: int, locked: bool) -> None:
    from openflash.server.state import ServerState

    assert isinstance(state, ServerState)
    project = state.project
    table = Table(title=f"openflash dev server  http://{host}:{port}", title_justify="left")
    table.add_column("method")
    table.add_column("path")
    table.add_column("endpoint")
    table.add_column("kind", style="dim")
    for route in project.queue:
        kind = "queue" + (f" ({route.method} of {route.name})" if route.method else "")
        table.add_row("POST", f"{route.path}/runsync", route.endpoint_name, kind)
        if route.short_path:
            table.add_row(
                "POST", f"{route.short_path}/runsync", route.endpoint_name, "queue (Runpod's URL)"
            )
    for lb in project.lb:
        kind = "load-balanced, in this process" if lb.route.local else "load-balanced"
        table.add_row(lb.method, lb.path, lb.endpoint_name, kind)
    console.print(table)
    if not project.queue and not project.lb:
        console.print(
            "[yellow]no endpoints found[/yellow]: decorate functions with "
            "@Endpoint(...) or @remote(...)"
        )
    for failure in project.failures:
        console.print(
            f"[red]{failure.file.relative_to(project.root)} failed to import:[/red]\n"
            f"{failure.traceback}"
        )
    console.print(
        f"dashboard http://{host}:{port}/  ·  docs http://{host}:{port}/docs  ·  "
        f"jobs also at .../run, .../status/{{id}}" + ("  ·  API key required" if locked else "")
    )
    if project.queue or project.lb:  # Runpod's API shape: what Endpoint(id=name) and the SDK call
        console.print(f"by endpoint name (Endpoint(id=...)): http://{host}:{port}/v2/{{name}}/...")
    for line in next_commands(project, host, port, locked):
        console.print(line, markup=False)


def next_commands(project: Project, host: str, port: int, locked: bool) -> list[str]:
    """What to run next: a ready-to-paste call of the first queue function (its parameters
    filled with sample values of their types), and how to stop."""
    lines = ["next:"]
    auth = " -H 'Authorization: Bearer $FLASH_API_KEY'" if locked else ""
    if project.queue:
        route = project.queue[0]
        fn = route.handle.__wrapped__
        fn = getattr(fn, route.method) if route.method else fn
        body = json.dumps({"input": _sample_input(fn)})
        lines.append(
            f"  curl -X POST http://{host}:{port}{route.path}/runsync{auth} "
            f"-H 'Content-Type: application/json' -d '{body}'"
        )
    elif project.lb:
        lb = project.lb[0]
        lines.append(f"  curl -X {lb.method} http://{host}:{port}{lb.path}{auth}")
    lines.append("  Ctrl-C stops the server and its workers")
    return lines


_SAMPLES: dict[object, object] = {str: "text", int: 1, float: 1.0, bool: True, list: [], dict: {}}


def _sample_input(fn: object) -> dict[str, object]:
    """A sample value for each parameter of ``fn``: its default, or a value of its type."""
    try:
        signature = inspect.signature(fn)  # type: ignore[arg-type]
        hints = typing.get_type_hints(fn)
    except (TypeError, ValueError, NameError):
        return {}
    sample: dict[str, object] = {}
    for name, param in signature.parameters.items():
        if name in ("self", "cls") or param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        if param.default is not param.empty:
            if isinstance(param.default, (str, int, float, bool, list, dict)):
                sample[name] = param.default  # a value the function itself expects
            continue
        kind = hints.get(name)
        sample[name] = _SAMPLES.get(typing.get_origin(kind) or kind, "...")
    return sample
