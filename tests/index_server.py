"""A package index on loopback with PyPI's layout (PEP 503 simple API), for tests.

The indexes a test needs (a private one, the PyTorch index with its ``+cpu`` builds) cannot be
reached from here; this serves a folder of wheels the test made, the same way: ``/simple/`` lists
the projects, ``/simple/<name>/`` links each file with its sha256, ``/files/<file>`` serves it.
Every page is served with ``Cache-Control: max-age=600`` as PyPI does, so uv may keep a page in
its cache. Optionally behind HTTP basic auth.
"""

from __future__ import annotations

import base64
import hashlib
import html
import http.server
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import ClassVar

from packaging.utils import canonicalize_name, parse_wheel_filename


class _Handler(http.server.BaseHTTPRequestHandler):
    folder: Path
    auth: str | None
    requests: list[str]
    #: File name to the reason it is yanked (PEP 592's ``data-yanked``).
    yanked: ClassVar[dict[str, str]] = {}

    def log_message(self, format: str, *args: object) -> None:  # quiet
        pass

    def do_HEAD(self) -> None:
        self._head = True
        self.do_GET()

    def do_GET(self) -> None:
        self.requests.append(self.path)
        if self.auth is not None:
            expected = "Basic " + base64.b64encode(self.auth.encode()).decode()
            if self.headers.get("Authorization") != expected:
                self.send_response(401)
                self.send_header("WWW-Authenticate", 'Basic realm="index"')
                self.end_headers()
                return
        path = self.path.split("?", 1)[0]
        if path in ("/simple", "/simple/"):
            names = sorted({_project(f) for f in self._files()})
            links = "".join(f'<a href="/simple/{n}/">{n}</a>\n' for n in names)
            return self._send(f"<html><body>\n{links}</body></html>\n", "text/html")
        match = re.fullmatch(r"/simple/([^/]+)/?", path)
        if match:
            wanted = canonicalize_name(match[1])
            files = [f for f in self._files() if _project(f) == wanted]
            if not files:
                return self._missing()
            links = "".join(
                f'<a href="/files/{html.escape(f.name)}#sha256='
                f'{hashlib.sha256(f.read_bytes()).hexdigest()}"{self._yanked(f)}>'
                f"{html.escape(f.name)}</a>\n"
                for f in files
            )
            return self._send(f"<html><body>\n{links}</body></html>\n", "text/html")
        match = re.fullmatch(r"/files/([^/]+)", path)
        if match and (self.folder / match[1]).is_file():
            return self._send((self.folder / match[1]).read_bytes(), "application/octet-stream")
        return self._missing()

    def _yanked(self, file: Path) -> str:
        reason = self.yanked.get(file.name)
        return "" if reason is None else f' data-yanked="{html.escape(reason)}"'

    def _files(self) -> list[Path]:
        return sorted(f for f in self.folder.iterdir() if f.suffix in (".whl", ".gz"))

    def _send(self, body: str | bytes, kind: str) -> None:
        data = body.encode() if isinstance(body, str) else body
        self.send_response(200)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "max-age=600, public")
        self.end_headers()
        if not getattr(self, "_head", False):
            self.wfile.write(data)

    def _missing(self) -> None:
        self.send_response(404)
        self.end_headers()


def _project(file: Path) -> str:
    if file.suffix == ".whl":
        return canonicalize_name(parse_wheel_filename(file.name)[0])
    return canonicalize_name(file.name.rsplit("-", 1)[0])


@contextmanager
def serve_index(
    folder: Path, *, auth: str | None = None, yanked: dict[str, str] | None = None
) -> Iterator[tuple[str, list[str]]]:
    """Serve ``folder``'s wheels; yields (the index URL, the paths requested so far).

    ``auth`` is ``"user:password"`` to require basic auth (the URL yielded has no credentials);
    ``yanked`` maps file names to the reason they are yanked (PEP 592: ``data-yanked``).
    """
    folder.mkdir(parents=True, exist_ok=True)
    requests: list[str] = []
    attrs = {"folder": folder, "auth": auth, "requests": requests, "yanked": dict(yanked or {})}
    handler = type("Handler", (_Handler,), attrs)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/simple", requests
    finally:
        server.shutdown()
        server.server_close()


class _VariantHandler(_Handler):
    """The PyTorch index's layout: ``/whl/<variant>/<name>/`` per variant (cpu, cu121, ...)."""

    def do_GET(self) -> None:
        self.requests.append(self.path)
        path = self.path.split("?", 1)[0]
        match = re.fullmatch(r"/whl/([^/]+)/(?:([^/]+)/?)?", path)
        if match and (self.folder / match[1]).is_dir() and match[1] != "files":
            files = sorted(
                f for f in (self.folder / match[1]).iterdir() if f.suffix in (".whl", ".gz")
            )
            if match[2] is None:
                names = sorted({_project(f) for f in files})
                links = "".join(f'<a href="{n}/">{n}</a>\n' for n in names)
                return self._send(f"<html><body>\n{links}</body></html>\n", "text/html")
            wanted = canonicalize_name(match[2])
            files = [f for f in files if _project(f) == wanted]
            if not files:
                return self._missing()
            links = "".join(
                f'<a href="/whl/files/{match[1]}/{html.escape(f.name)}#sha256='
                f'{hashlib.sha256(f.read_bytes()).hexdigest()}">{html.escape(f.name)}</a>\n'
                for f in files
            )
            return self._send(f"<html><body>\n{links}</body></html>\n", "text/html")
        match = re.fullmatch(r"/whl/files/([^/]+)/([^/]+)", path)
        if match and (self.folder / match[1] / match[2]).is_file():
            data = (self.folder / match[1] / match[2]).read_bytes()
            return self._send(data, "application/octet-stream")
        return self._missing()


@contextmanager
def serve_torch_index(folder: Path) -> Iterator[tuple[str, list[str]]]:
    """A stand-in for the PyTorch index (download.pytorch.org/whl), which cannot be reached
    from here: ``folder/<variant>/`` holds that variant's wheels (``+cpu``, ``+cu121``), served
    at ``<base>/<variant>/`` as PEP 503 simple pages. Yields (the base URL, the paths asked)."""
    requests: list[str] = []
    attrs = {"folder": folder, "auth": None, "requests": requests}
    handler = type("TorchHandler", (_VariantHandler,), attrs)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/whl", requests
    finally:
        server.shutdown()
        server.server_close()
