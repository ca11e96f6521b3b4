"""The floor of a first system layer: the CPU seconds of decompressing its .debs' data tarballs
(xz), compared across the decoders within reach, on the same files in the same run, rounds
interleaved (CPU seconds are what two cores divide; wall times are noisy on a shared machine).

Run: APT_DIR=<apt's private folder> python -m bench.decoders [ROUNDS] (ffmpeg's closure; its
.debs must be in the folder's cache, as bench.layers leaves them). Optional decoders, each
measured only where present:
  SEVENZIP=<7zz>[:<7zz>..] 7-Zip's xz decoder (`7zz e -si -so -txz`), e.g. from Debian's 7zip
                           .deb unpacked anywhere (`apt-get download 7zip; dpkg-deb -x ...`);
  DECODER_PYTHON=<python>  an interpreter with cramjam installed (its ``xz`` module, a static
                           liblzma newer than Debian 12's 5.4).
Prints one line per decoder and round: CPU s (this process and its children), wall s. Then,
per decoder, the whole unpacking as a first layer does it: every data tarball decoded and its
files written by ``tar -x`` (decoder | tar), two at a time (this machine's cores), the largest
first: the wall time a layer cannot beat with that decoder."""

import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from openflash.deps.apt import Apt
from openflash.deps.system import resolve_system
from openflash.envs.store import Store


def cpu() -> float:
    return sum(
        r.ru_utime + r.ru_stime
        for r in map(resource.getrusage, (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
    )


def data_member(deb: Path) -> bytes:
    """The ``data.tar.*`` member of a .deb (an ar archive: 8-byte magic, 60-byte headers)."""
    raw = deb.read_bytes()
    at = 8
    while at < len(raw):
        name = raw[at : at + 16].decode().strip().rstrip("/")
        size = int(raw[at + 48 : at + 58])
        if name.startswith("data.tar"):
            return raw[at + 60 : at + 60 + size]
        at += 60 + size + (size & 1)
    raise ValueError(f"{deb}: no data.tar member")


CRAMJAM = """
import sys, resource, cramjam
paths = sys.argv[1:]
n = 0
for p in paths:
    with open(p, "rb") as f:
        n += len(cramjam.xz.decompress(f.read()))
print(n)
"""


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    apt = Apt(Path(os.environ["APT_DIR"]), Path("/var/lib/dpkg/status"), index_ttl=86400)
    with tempfile.TemporaryDirectory(dir="/tmp") as t:
        lock = resolve_system(("ffmpeg",), store=Store(Path(t)), apt=apt, ttl=3600)
    with apt.locked():
        debs = apt.download(lock.packages)
    with tempfile.TemporaryDirectory(dir="/tmp") as t:
        files = []
        for i, deb in enumerate(debs):
            data = data_member(deb)
            assert data[:6] == b"\xfd7zXZ\x00", f"{deb.name}: data tarball is not xz"
            files.append(Path(t, f"{i}.tar.xz"))
            files[-1].write_bytes(data)
        packed = sum(f.stat().st_size for f in files) / 2**20
        print(f"{len(debs)} .debs, {packed:.1f} MiB of xz; load {os.getloadavg()[0]:.1f}")

        def python_lzma() -> None:
            import lzma

            for f in files:
                lzma.decompress(f.read_bytes())

        def tool(*argv: str) -> Callable[[], None]:
            def run() -> None:
                for f in files:
                    with f.open("rb") as stdin:
                        subprocess.run(argv, stdin=stdin, stdout=subprocess.DEVNULL, check=True)

            return run

        def dpkg_deb() -> None:
            for deb in debs:
                subprocess.run(
                    ["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.DEVNULL, check=True
                )

        decoders: dict[str, Callable[[], None]] = {
            "python lzma (liblzma 5.4)": python_lzma,
            "xz -dc (xz-utils 5.4)": tool("xz", "-dc"),
            "dpkg-deb --fsys-tarfile": dpkg_deb,
        }
        sevens = {}
        for seven in filter(None, os.environ.get("SEVENZIP", "").split(":")):
            banner = subprocess.run([seven], capture_output=True, text=True).stdout.split()
            # "7-Zip (z) 26.03 (x64) : ... ASM": its version, and whether its decoder is asm
            name = f"7zz {banner[2]}{' ASM' if 'ASM' in banner else ''}"
            sevens[name] = [seven, "e", "-si", "-so", "-txz", "-bd"]
            decoders[f"{name} e -si -so -txz"] = tool(*sevens[name])
        if py := os.environ.get("DECODER_PYTHON"):
            version = subprocess.run(
                [py, "-c", "import cramjam; print(cramjam.__version__)"],
                capture_output=True,
                text=True,
                check=True,
            ).stdout.strip()
            decoders[f"cramjam {version} xz (one process)"] = lambda: (
                subprocess.run(
                    [py, "-c", CRAMJAM, *map(str, files)], stdout=subprocess.DEVNULL, check=True
                )
                and None
            )
        pipes: dict[str, list[str]] = {"xz -dc | tar -x": ["xz", "-dc"]}
        pipes.update({f"{name} | tar -x": argv for name, argv in sevens.items()})

        def unpack_all(decoder: list[str]) -> Callable[[], None]:
            def one(f: Path, out: Path) -> None:
                out.mkdir()
                with f.open("rb") as stdin:
                    dec = subprocess.Popen(decoder, stdin=stdin, stdout=subprocess.PIPE)
                    assert dec.stdout is not None
                    subprocess.run(["tar", "-x", "-C", str(out)], stdin=dec.stdout, check=True)
                    dec.stdout.close()
                    assert dec.wait() == 0

            def run() -> None:
                with tempfile.TemporaryDirectory(dir=t) as out:
                    largest = sorted(files, key=lambda f: -f.stat().st_size)
                    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
                        list(pool.map(lambda f: one(f, Path(out, f.stem)), largest))

            return run

        for label, decoder in pipes.items():
            decoders[f"unpack all, 2 at a time: {label}"] = unpack_all(decoder)
        for r in range(rounds):
            for label, run in decoders.items():
                c, w = cpu(), time.monotonic()
                run()
                print(
                    f"round {r + 1}  {label:44} CPU {cpu() - c:5.2f} s  "
                    f"wall {time.monotonic() - w:5.2f} s  load {os.getloadavg()[0]:.1f}",
                    flush=True,
                )


if __name__ == "__main__":
    main()
