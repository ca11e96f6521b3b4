"""The cluster package cache: a small read-only package index that fetches each file once.

N nodes building the same environment would each download its wheels from the package index.
Instead the driver runs this index (PEP 503's simple API, over HTTP on the cluster's address) and
the nodes install from it (``UV_INDEX_URL``), with the real index as ``UV_EXTRA_INDEX_URL``. A
project page is fetched from the upstream index once (kept ``PAGE_TTL_S``), its file links
rewritten to this server, their ``#sha256=`` kept, so that uv on the node verifies every file
against the index's own hash. A file is fetched from upstream on its first request only (one
fetch however many nodes ask at once), verified against that hash, stored as
``<folder>/<sha256>/<file>`` and served from there to every later node. A project the upstream
index does not have is a 404 here, and uv falls back to the extra index: the index is reached
only for what the cache lacks. Nothing here writes to the upstream index; the server only reads.

bench/package_cache.py measures the upstream traffic for 1, 4 and 16 node stores.
"""

from __future__ import annotations

import hashlib
import html
import http.server
import re
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["PAGE_TTL_S", "PackageCache"]

#: Seconds a project page fetched from upstream is reused.
PAGE_TTL_S = 600.0
_ANCHOR = re.compile(r"<a\s([^>]*?)href=\"([^\"]+)\"([^>]*)>([^<]*)</a>", re.I)
_TIMEOUT_S = 300.0


@dataclass
class _Upstream:
    """What the cache knows of the upstream index: pages, where each file is, and its hash."""

    url: str
    pages: dict[str, tuple[float, str]] = field(default_factory=dict)
    files: dict[str, tuple[str, str]] = field(default_factory=dict)
    locks: dict[str, threading.Lock] = field(default_factory=dict)
    guard: threading.Lock = field(default_factory=threading.Lock)
    #: Requests made to the upstream index (pages and files).
    fetches: int = 0

    def lock_for(self, name: str) -> threading.Lock:
        with self.guard:
            return self.locks.setdefault(name, threading.Lock())

    def get(self, url: str) -> bytes:
        with self.guard:
            self.fetches += 1
        with urllib.request.urlopen(url, timeout=_TIMEOUT_S) as reply:
            data: bytes = reply.read()
            return data


class PackageCache:
    """The index: ``start()`` serves it on ``host``; ``url`` is its simple API's root."""

    def __init__(self, folder: Path, upstream: str) -> None:
        self.folder = folder
        self.upstream = _Upstream(upstream.rstrip("/"))
        self._server: http.server.ThreadingHTTPServer | None = None
        self.url = ""

    @property
    def upstream_fetches(self) -> int:
        return self.upstream.fetches

    def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        self.folder.mkdir(parents=True, exist_ok=True)
        handler = type("Handler", (_Handler,), {"cache": self})
        self._server = http.server.ThreadingHTTPServer((host, port), handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        self.url = f"http://{host}:{self._server.server_address[1]}/simple"
        return self.url

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def page(self, project: str) -> str | None:
        """The project's page, its links pointing here; None when upstream has no such project."""
        up = self.upstream
        with up.lock_for(f"page:{project}"):
            cached = up.pages.get(project)
            if cached is not None and time.monotonic() - cached[0] < PAGE_TTL_S:
                return cached[1]
            page_url = f"{up.url}/{project}/"
            try:
                text = up.get(page_url).decode()
            except urllib.error.HTTPError as e:
                if e.code == 404:
                    return None
                raise
            links = []
            for match in _ANCHOR.finditer(text):
                before, href, after, label = match.groups()
                absolute, _, fragment = urllib.parse.urljoin(page_url, href).partition("#")
                name = urllib.parse.unquote(absolute.rsplit("/", 1)[-1])
                digest = fragment[len("sha256=") :] if fragment.startswith("sha256=") else ""
                if not digest:  # a file without its hash is not served: nothing to verify
                    continue
                up.files[name] = (absolute, digest)
                local = f"/files/{digest}/{urllib.parse.quote(name)}#sha256={digest}"
                links.append(f'<a {before}href="{html.escape(local)}"{after}>{label}</a>')
            body = "<html><body>\n" + "<br/>\n".join(links) + "\n</body></html>\n"
            up.pages[project] = (time.monotonic(), body)
            return body

    def file(self, digest: str, name: str) -> Path | None:
        """The stored file (fetched and verified on first use); None when unknown here."""
        stored = self.folder / digest / name
        if stored.is_file():
            return stored
        known = self.upstream.files.get(name)
        if known is None or known[1] != digest:
            return None
        with self.upstream.lock_for(f"file:{digest}"):
            if stored.is_file():  # another node's request fetched it meanwhile
                return stored
            data = self.upstream.get(known[0])
            if hashlib.sha256(data).hexdigest() != digest:
                raise ValueError(f"{name} from {known[0]} does not match its sha256 {digest}")
            stored.parent.mkdir(parents=True, exist_ok=True)
            scratch = stored.with_name(f".{name}.part")
            scratch.write_bytes(data)
            scratch.rename(stored)
        return stored


class _Handler(http.server.BaseHTTPRequestHandler):
    cache: PackageCache

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_HEAD(self) -> None:  # uv asks before ranged reads of a wheel's metadata
        self._head = True
        self.do_GET()

    def do_GET(self) -> None:
        path = urllib.parse.unquote(self.path.split("?", 1)[0])
        try:
            match = re.fullmatch(r"/simple/([^/]+)/?", path)
            if match:
                page = self.cache.page(match[1])
                return self._send(page.encode(), "text/html") if page else self._status(404)
            match = re.fullmatch(r"/files/([0-9a-f]{64})/([^/]+)", path)
            if match:
                stored = self.cache.file(match[1], match[2])
                if stored is None:
                    return self._status(404)
                return self._send(stored.read_bytes(), "application/octet-stream")
        except (OSError, ValueError):  # upstream unreachable or a bad file: uv falls back
            return self._status(404)
        return self._status(404)

    def _send(self, data: bytes, kind: str) -> None:
        self.send_response(200)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if not getattr(self, "_head", False):
            self.wfile.write(data)

    def _status(self, code: int) -> None:
        self.send_response(code)
        self.send_header("Content-Length", "0")
        self.end_headers()
