"""Run a Markdown page's code blocks the way a reader would, in order, in one folder.

A fence's info string says what a block is:

    ```python                  a program: written to a file and run with `python`
    ```python file=app.py      a file the reader saves (run by a later block)
    ```bash                    shell commands, run with `bash -eo pipefail` in the page's folder
    ```bash server             a command that keeps running (`flash run`): started in the
                               background, awaited on its port, stopped after the page
    ```text output             what the block before prints: every line must appear, in order
                               (`...` inside a line stands for anything)
    ```python expect=fail      a program that must fail (its output is then checked)
    ```bash skip="why"         not run here, for the reason given (a GPU, a second machine)
    ```bash needs="podman"     run where these programs are installed; elsewhere skipped with
                               the output block after it (an error with OPENFLASH_REQUIRE_PODMAN)
    ```bash cleanup            run after the page, even when a block failed (`ray stop`)

Any other fence (toml, json, text without `output`) is shown, not run. Every block of a page shares
the page's folder and a FLASH_HOME of the page's own; `flash run` listens on FLASH_PORT, a free
port, and `localhost:8888` in later shell blocks is rewritten to it.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

FENCE = re.compile(r"^```([\w-]*)([^\n]*)\n(.*?)^```[ \t]*$", re.M | re.S)
RUNNABLE = {"python", "bash", "sh", "shell"}


@dataclass
class Block:
    lang: str
    attrs: dict[str, str]
    code: str
    line: int

    @property
    def where(self) -> str:
        return f"line {self.line}"


@dataclass
class PageRun:
    blocks_run: int = 0
    skipped: list[tuple[int, str]] = field(default_factory=list)


def blocks(text: str) -> list[Block]:
    found = []
    for match in FENCE.finditer(text):
        attrs: dict[str, str] = {}
        for token in shlex.split(match[2]):
            key, _, value = token.partition("=")
            attrs[key] = value
        found.append(Block(match[1], attrs, match[3], text.count("\n", 0, match.start()) + 1))
    return found


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _matches(expected: str, output: str) -> str | None:
    """None if every non-empty line of ``expected`` appears in ``output`` in order; else the
    first line that does not."""
    position = 0
    for line in expected.splitlines():
        if not line.strip():
            continue
        pieces = [re.escape(p.strip()) for p in line.split("...")]
        pattern = re.compile(r".*?".join(pieces))
        found = pattern.search(output, position)
        if found is None:
            return line
        position = found.end()
    return None


def run_page(page: Path, folder: Path, env: dict[str, str]) -> PageRun:
    """Run every runnable block of ``page``; raise AssertionError naming the failing block."""
    result = PageRun()
    port = _free_port()
    env = {**env, "FLASH_PORT": str(port), "PYTHONUNBUFFERED": "1"}
    servers: list[subprocess.Popen[str]] = []
    last_output: str | None = None
    last_block: Block | None = None
    page_blocks = blocks(page.read_text())
    try:
        for index, block in enumerate(page_blocks):
            if "cleanup" in block.attrs:
                continue
            if "skip" in block.attrs:
                if block.lang in RUNNABLE:
                    assert block.attrs["skip"], f"{page.name} {block.where}: skip needs a reason"
                    result.skipped.append((block.line, block.attrs["skip"]))
                continue
            missing = [t for t in block.attrs.get("needs", "").split() if not shutil.which(t)]
            if missing and block.lang in RUNNABLE:
                assert not os.environ.get("OPENFLASH_REQUIRE_PODMAN"), (
                    f"{page.name} {block.where}: {', '.join(missing)} missing "
                    "(OPENFLASH_REQUIRE_PODMAN is set)"
                )
                result.skipped.append((block.line, f"{', '.join(missing)} not installed"))
                last_output, last_block = None, block
                continue
            if block.lang == "text" and "output" in block.attrs:
                if last_output is None and last_block is not None and "needs" in last_block.attrs:
                    continue  # the output of a block skipped for want of its programs
                assert last_output is not None, f"{page.name} {block.where}: output of nothing"
                missing = _matches(block.code, last_output)
                assert missing is None, (
                    f"{page.name} {block.where}: the block at {last_block.where} "  # type: ignore[union-attr]
                    f"did not print {missing!r}; it printed:\n{last_output[-4000:]}"
                )
                continue
            if block.lang not in RUNNABLE:
                continue
            if block.lang == "python" and "file" in block.attrs:
                target = folder / block.attrs["file"]
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(block.code)
                continue
            code = block.code.replace("localhost:8888", f"localhost:{port}")
            if block.lang == "python":
                script = folder / f"_block_{index}.py"
                script.write_text(code)
                argv = [sys.executable, str(script)]
            else:
                argv = ["bash", "-eo", "pipefail", "-c", code]
            if "server" in block.attrs:
                servers.append(_start_server(argv, folder, env, port, page, block))
                result.blocks_run += 1
                continue
            done = subprocess.run(
                argv, cwd=folder, env=env, capture_output=True, text=True, timeout=900
            )
            last_output, last_block = done.stdout + done.stderr, block
            expect_fail = block.attrs.get("expect") == "fail"
            ok = (done.returncode != 0) if expect_fail else (done.returncode == 0)
            assert ok, (
                f"{page.name} {block.where}: exit code {done.returncode}"
                f"{' (it should fail)' if expect_fail else ''}:\n{last_output[-4000:]}"
            )
            result.blocks_run += 1
    finally:
        for block in page_blocks:
            if "cleanup" in block.attrs:
                subprocess.run(["bash", "-c", block.code], cwd=folder, env=env, timeout=120)
                result.blocks_run += 1
        for server in servers:
            if server.poll() is None:
                os.killpg(server.pid, signal.SIGTERM)
                try:
                    server.wait(20)
                except subprocess.TimeoutExpired:
                    os.killpg(server.pid, signal.SIGKILL)
                    server.wait()
    return result


def _start_server(
    argv: list[str], folder: Path, env: dict[str, str], port: int, page: Path, block: Block
) -> subprocess.Popen[str]:
    log = (folder / f"_server_{block.line}.log").open("w")
    proc = subprocess.Popen(
        argv, cwd=folder, env=env, stdout=log, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,
    )  # fmt: skip
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(
                f"{page.name} {block.where}: the server exited with {proc.returncode}:\n"
                + (folder / f"_server_{block.line}.log").read_text()[-4000:]
            )
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return proc
        except OSError:
            time.sleep(0.2)
    raise AssertionError(f"{page.name} {block.where}: nothing listened on port {port}")
