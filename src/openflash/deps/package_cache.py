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

The same server is the nodes' apt proxy for the Debian archives the driver's apt uses (its
``hosts``, plain http: a node's apt is told ``Acquire::http::Proxy::<host>`` for each, see
deps/apt.py): an archive's immutable files, the .debs under ``/pool/`` and the index files under
``/by-hash/``, are fetched from the archive once and served from ``<folder>/apt/`` to every later
node; the rest (``InRelease``, which changes) is passed through. apt on the node verifies every
file against the archive's signed index, as it does without a proxy, and a ``by-hash`` file is
verified here against the hash its path names too. A request for another host is refused (403),
so the server is no open proxy.

Every file served is counted in ``records`` (``CacheRecord``: its kind, name, and whether it was
fetched from upstream or was a hit), so that what reached upstream can be read back.
bench/package_cache.py measures the upstream traffic for 1, 4 and 16 node stores.
"""

from __future__ import annotations

import collections
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
from typing import Literal

__all__ = ["PAGE_TTL_S", "CacheRecord", "PackageCache"]

#: Seconds a project page fetched from upstream is reused.
PAGE_TTL_S = 600.0
_ANCHOR = re.compile(r"<a\s([^>]*?)href=\"([^\"]+)\"([^>]*)>([^<]*)</a>", re.I)
_TIMEOUT_S = 300.0
_BY_HASH = re.compile(r"/by-hash/SHA256/([0-9a-f]{64})$")
_FILE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+~%-]*")
#: The upstream headers a passed-through apt reply keeps.
_PASSED_HEADERS = ("Last-Modified", "Content-Type", "ETag")


@dataclass(frozen=True, slots=True)
class CacheRecord:
    """One kind of answer the cache gave: a ``wheel`` (or other file of the package index), a
    ``deb``, an ``apt-index`` file (``by-hash``), or an apt file ``passed`` through uncached;
    ``outcome`` says whether upstream was asked (``fetched``, ``passed``) or not (``hit``)."""

    kind: Literal["wheel", "deb", "apt-index", "apt-other"]
    name: str
    outcome: Literal["fetched", "hit", "passed"]


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

    def __init__(self, folder: Path, upstream: str, apt_hosts: tuple[str, ...] = ()) -> None:
        self.folder = folder
        self.upstream = _Upstream(upstream.rstrip("/"))
        #: The Debian archives' hosts (plain http) whose files this server proxies for apt.
        self.apt_hosts = apt_hosts
        #: How many times each answer was given (``CacheRecord``), since the server started.
        self.records: collections.Counter[CacheRecord] = collections.Counter()
        self._records_guard = threading.Lock()
        self._server: http.server.ThreadingHTTPServer | None = None
        self.url = ""

    @property
    def upstream_fetches(self) -> int:
        return self.upstream.fetches

    @property
    def proxy_url(self) -> str:
        """The server's root (``http://host:port``): apt's proxy for ``apt_hosts``."""
        return self.url.rsplit("/simple", 1)[0]

    def record(self, record: CacheRecord) -> None:
        with self._records_guard:
            self.records[record] += 1

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
            self.record(CacheRecord("wheel", name, "hit"))
            return stored
        known = self.upstream.files.get(name)
        if known is None or known[1] != digest:
            return None
        return self._once(known[0], stored, digest, CacheRecord("wheel", name, "fetched"))

    def apt_file(self, url: str) -> tuple[bytes, dict[str, str], int] | None:
        """What apt asked for at ``url`` through this proxy: (body, headers, status); an
        immutable file from the store (fetched once), anything else passed through. None when
        ``url`` is on a host this cache does not proxy."""
        parts = urllib.parse.urlsplit(url)
        if parts.scheme != "http" or parts.hostname not in self.apt_hosts:
            return None
        name = parts.path.rsplit("/", 1)[-1]  # as apt names the file (an epoch's ':' is %3a)
        if not _FILE_NAME.fullmatch(name):  # never a path: %2F, "..", hidden names
            return b"", {}, 404
        by_hash = _BY_HASH.search(parts.path)
        immutable = by_hash is not None or (
            "/pool/" in parts.path and name.endswith((".deb", ".udeb"))
        )
        if not immutable:
            self.record(CacheRecord("apt-other", name, "passed"))
            return self._pass(url)
        kind: Literal["deb", "apt-index"] = "apt-index" if by_hash else "deb"
        key = hashlib.sha256(url.encode()).hexdigest()
        stored = self.folder / "apt" / key / name
        if stored.is_file():
            self.record(CacheRecord(kind, name, "hit"))
        else:
            digest = by_hash[1] if by_hash else None
            self._once(url, stored, digest, CacheRecord(kind, name, "fetched"))
        return stored.read_bytes(), {"Content-Type": "application/octet-stream"}, 200

    def _once(self, url: str, stored: Path, digest: str | None, fetched: CacheRecord) -> Path:
        """``stored``, fetched from ``url`` by the first request only (later ones wait for it
        and are hits), verified against ``digest`` (its sha256) where there is one."""
        with self.upstream.lock_for(f"file:{url}"):
            if stored.is_file():  # another node's request fetched it meanwhile
                self.record(CacheRecord(fetched.kind, fetched.name, "hit"))
                return stored
            data = self.upstream.get(url)
            if digest is not None and hashlib.sha256(data).hexdigest() != digest:
                raise ValueError(f"{stored.name} from {url} does not match its sha256 {digest}")
            stored.parent.mkdir(parents=True, exist_ok=True)
            scratch = stored.with_name(f".{stored.name}.part")
            scratch.write_bytes(data)
            scratch.rename(stored)
            self.record(fetched)
        return stored

    def _pass(self, url: str) -> tuple[bytes, dict[str, str], int]:
        """``url`` fetched from upstream as it is now (not stored)."""
        try:
            with self.upstream.guard:
                self.upstream.fetches += 1
            with urllib.request.urlopen(url, timeout=_TIMEOUT_S) as reply:
                headers = {h: reply.headers[h] for h in _PASSED_HEADERS if reply.headers[h]}
                return reply.read(), headers, 200
        except urllib.error.HTTPError as e:
            return b"", {}, e.code


class _Handler(http.server.BaseHTTPRequestHandler):
    cache: PackageCache

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_HEAD(self) -> None:  # uv asks before ranged reads of a wheel's metadata
        self._head = True
        self.do_GET()

    def do_GET(self) -> None:
        if self.path.startswith("http://"):  # apt, with this server as its proxy
            return self._proxy()
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

    def _proxy(self) -> None:
        try:
            answer = self.cache.apt_file(self.path)
        except (OSError, ValueError):  # upstream unreachable, a short or bad file
            return self._status(502)
        if answer is None:
            return self._status(403)
        data, headers, code = answer
        if code != 200:
            return self._status(code)
        return self._send(data, headers.pop("Content-Type", "application/octet-stream"), headers)

    def _send(self, data: bytes, kind: str, headers: dict[str, str] | None = None) -> None:
        self.send_response(200)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if not getattr(self, "_head", False):
            self.wfile.write(data)

    def _status(self, code: int) -> None:
        self.send_response(code)
        self.send_header("Content-Length", "0")
        self.end_headers()
