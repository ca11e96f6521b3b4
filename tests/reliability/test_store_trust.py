"""The store trusts its owner only: what another local user planted in a FLASH_HOME is refused,
named, and never run.

Two real users are created for each test (``useradd``): an attacker, who makes the planted
files, and a victim, who runs openflash (``setpriv``) on a store of its own. The test, as root,
moves each planted file into the victim's store, as a shared or once-writable folder would have
let the attacker do. Whatever the attacker's code would run writes a file into ``evidence/``;
each test checks that it stays empty.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import shutil
import stat
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from local_users import (
    NEEDS_LOCAL_USERS,
    ROOT,
    LocalUser,
    create_user,
    network_environ,
    readable_venv,
    remove_user,
)

from openflash.deps.apt import Apt
from openflash.deps.system import LAYER_FORMAT, distribution_release
from openflash.envs.store import Store, content_key
from openflash.errors import StorePermissionError

from helpers import make_wheel, write

Report = Callable[[str, str, str], None]

pytestmark = NEEDS_LOCAL_USERS

VICTIM_PROGRAM = """
import asyncio
from openflash import CpuLiveServerless, remote

@remote(CpuLiveServerless(name="victim"), dependencies=["six==1.16.0"])
def version():
    import six
    return six.__version__

print(asyncio.run(version()))
"""

SYSTEM_PROGRAM = """
import asyncio
from openflash import CpuLiveServerless, remote

@remote(CpuLiveServerless(name="victim-system"), system_dependencies=["evilpkg"])
def tool():
    import subprocess
    return subprocess.run(["evil"], capture_output=True, text=True).stdout

print(asyncio.run(tool()))
"""


@pytest.fixture(scope="module")
def workspace() -> Iterator[Path]:
    """A folder both users can enter (pytest's are root's only), with a Python they can run."""
    folder = Path(tempfile.mkdtemp(prefix="openflash-trust-", dir="/tmp"))
    folder.chmod(0o755)
    readable_venv(folder)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@dataclass(frozen=True)
class Scene:
    attacker: LocalUser
    victim: LocalUser
    #: the attacker's folder, the victim's (its FLASH_HOME inside), where evil code would write
    lair: Path
    den: Path
    evidence: Path
    venv: Path

    @property
    def home(self) -> Path:
        return self.den / "flash-home"

    def victim_runs(self, source: str) -> subprocess.CompletedProcess[str]:
        program = write(self.den / "program.py", source)
        shutil.chown(program, self.victim.name, self.victim.name)
        env = {
            **network_environ(),
            "HOME": str(self.den),
            "PATH": f"{self.venv}/bin:/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin",
            "LANG": "C.UTF-8",
            "PYTHONPATH": str(ROOT / "src"),
            "PYTHONDONTWRITEBYTECODE": "1",
            "FLASH_HOME": str(self.home),
            # Bytecode compiled before the program ends (the default compiles it afterwards, in
            # a detached process): the planted-blob case needs the blob there to replace, and
            # no process of the victim's may outlive the case (userdel refuses while one runs).
            "FLASH_BYTECODE": "eager",
        }
        return self.victim.run([str(self.venv / "bin/python"), str(program)], env=env, cwd=self.den)

    def attacker_makes(self, name: str, data: bytes, mode: int = 0o666) -> Path:
        """A file the attacker owns, in its folder."""
        path = self.lair / name
        path.write_bytes(data)
        shutil.chown(path, self.attacker.name, self.attacker.name)
        path.chmod(mode)
        return path

    def plant(self, made: Path, target: Path) -> None:
        """Move the attacker's ``made`` into the victim's store at ``target`` (a rename: the
        attacker stays its owner)."""
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(made, target)

    def nothing_ran(self) -> None:
        assert sorted(os.listdir(self.evidence)) == [], "the attacker's code ran"


@pytest.fixture
def scene(workspace: Path, tmp_path: Path) -> Iterator[Scene]:
    attacker = create_user("ofatk")
    victim = create_user("ofvic")
    case = Path(tempfile.mkdtemp(prefix="case-", dir=workspace))
    case.chmod(0o755)
    lair, den, evidence = case / "lair", case / "den", case / "evidence"
    for folder, owner, mode in ((lair, attacker, 0o755), (den, victim, 0o700), (evidence, None, 0)):
        folder.mkdir()
        if owner is not None:
            shutil.chown(folder, owner.name, owner.name)
            folder.chmod(mode)
    evidence.chmod(0o1777)
    try:
        yield Scene(attacker, victim, lair, den, evidence, workspace / "venv")
    finally:
        shutil.rmtree(case, ignore_errors=True)
        remove_user(attacker)
        remove_user(victim)


def _evil_code(evidence: Path) -> str:
    return f"import os; open(os.path.join({str(evidence)!r}, 'ran-as-%d' % os.getuid()), 'w')"


def _refused(done: subprocess.CompletedProcess[str], path: Path, attacker: LocalUser) -> None:
    assert done.returncode != 0, done.stdout
    assert "StorePermissionError" in done.stderr, done.stderr[-3000:]
    assert str(path) in done.stderr, done.stderr[-3000:]
    assert f"user {attacker.name!r}" in done.stderr or "symbolic link" in done.stderr
    assert "Traceback" in done.stderr and done.stderr.count("File ") < 40  # no deep trace


def test_a_planted_resolution_is_refused(scene: Scene, report: Report) -> None:
    first = scene.victim_runs(VICTIM_PROGRAM)
    assert first.returncode == 0 and first.stdout.strip() == "1.16.0", first.stderr[-3000:]
    [resolution] = (scene.home / "resolutions").glob("*.json")
    wheel = make_wheel(scene.lair, "evil", "1.0", {"evil.pth": _evil_code(scene.evidence)})
    shutil.chown(wheel, scene.attacker.name, scene.attacker.name)
    planted = json.loads(resolution.read_text())
    planted["lock"] = f"evil @ {wheel.as_uri()}\n"
    scene.plant(scene.attacker_makes("resolution.json", json.dumps(planted).encode()), resolution)
    envs_before = sorted(p.name for p in (scene.home / "envs").iterdir())

    again = scene.victim_runs(VICTIM_PROGRAM)
    _refused(again, resolution, scene.attacker)
    assert "remove it" in again.stderr
    assert sorted(p.name for p in (scene.home / "envs").iterdir()) == envs_before
    scene.nothing_ran()
    report(
        "store trust",
        "another local user's resolution file planted in the victim's store (its lock names "
        "the attacker's wheel, whose .pth writes a file)",
        "StorePermissionError naming the file and its owner, before anything is installed; no "
        "new environment, the wheel never ran",
    )


def test_a_planted_bytecode_blob_is_refused(scene: Scene, report: Report) -> None:
    first = scene.victim_runs(VICTIM_PROGRAM)
    assert first.returncode == 0, first.stderr[-3000:]
    [env] = (scene.home / "envs").iterdir()
    [source] = env.glob("lib/python3.*/site-packages/six.py")
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    [blob] = (scene.home / "bytecode").glob(f"*/{digest[:2]}/{digest}.pyc")
    # Checked-hash bytecode of the attacker's code, carrying six.py's hash: Python would load it.
    code = compile(_evil_code(scene.evidence), str(source), "exec")
    evil = importlib._bootstrap_external._code_to_hash_pyc(  # type: ignore[attr-defined]
        code, importlib.util.source_hash(source.read_bytes()), True
    )
    shutil.rmtree(env)  # so that the next call builds it again, linking from the store
    scene.plant(scene.attacker_makes("six.pyc", bytes(evil), 0o666), blob)

    again = scene.victim_runs(VICTIM_PROGRAM)
    _refused(again, blob, scene.attacker)
    scene.nothing_ran()
    report(
        "store trust",
        "another local user's bytecode blob (mode 0666) planted in the victim's store for six.py",
        "StorePermissionError naming the blob and its owner while the environment builds; it "
        "was never linked nor imported",
    )


def _evil_deb(scene: Scene) -> bytes:
    tree = scene.lair / "deb"
    (tree / "DEBIAN").mkdir(parents=True)
    (tree / "usr/bin").mkdir(parents=True)
    (tree / "DEBIAN/control").write_text(
        "Package: evilpkg\nVersion: 1.0\nArchitecture: all\nMaintainer: x <x@example.com>\n"
        "Description: planted\n"
    )
    script = tree / "usr/bin/evil"
    script.write_text(f'#!/bin/sh\ntouch "{scene.evidence}/ran-as-$(id -u)"\n')
    script.chmod(0o755)
    deb = scene.lair / "evil.deb"
    subprocess.run(
        ["dpkg-deb", "-b", "--root-owner-group", str(tree), str(deb)],
        check=True,
        capture_output=True,
    )
    data = deb.read_bytes()
    deb.unlink()
    return data


def test_a_planted_system_resolution_and_deb_are_refused(scene: Scene, report: Report) -> None:
    apt = Apt(scene.home / "apt", Path("/var/lib/dpkg/status"), 3600.0)
    key = content_key(
        "system", ("evilpkg",), distribution_release(), apt.base_fingerprint(), LAYER_FORMAT
    )
    resolution = scene.home / "resolutions" / f"system-{key}.json"
    deb = apt.archives / "evilpkg_1.0_all.deb"
    payload = {
        "names": ["evilpkg"],
        "packages": [["evilpkg", "1.0", "all"]],
        "release": distribution_release(),
        "resolved_at": time.time(),
    }
    scene.home.mkdir(mode=0o700)
    shutil.chown(scene.home, scene.victim.name, scene.victim.name)
    scene.plant(scene.attacker_makes("system.json", json.dumps(payload).encode()), resolution)
    scene.plant(scene.attacker_makes("evilpkg.deb", _evil_deb(scene)), deb)
    for folder in (resolution.parent, apt.root, apt.archives):
        shutil.chown(folder, scene.victim.name, scene.victim.name)

    planted = scene.victim_runs(SYSTEM_PROGRAM)
    _refused(planted, resolution, scene.attacker)
    scene.nothing_ran()

    # The resolution given to the victim (as if the victim had written it): the .deb still is not.
    shutil.chown(resolution, scene.victim.name, scene.victim.name)
    resolution.chmod(0o600)
    deb_planted = scene.victim_runs(SYSTEM_PROGRAM)
    _refused(deb_planted, deb, scene.attacker)
    scene.nothing_ran()

    # The .deb given to the victim too: apt's index has no such file, so it is removed before
    # anything of it is extracted (and the set resolved again: apt knows no such package).
    shutil.chown(deb, scene.victim.name, scene.victim.name)
    deb.chmod(0o644)
    unverified = scene.victim_runs(SYSTEM_PROGRAM)
    assert unverified.returncode != 0
    assert "SystemDependencyError" in unverified.stderr, unverified.stderr[-3000:]
    assert not deb.exists(), "a .deb that does not match the index is removed"
    assert not any((scene.home / "debs").glob("*/tree")), "nothing of it was extracted"
    assert not any((scene.home / "layers").glob("*")), "no layer"
    scene.nothing_ran()
    report(
        "store trust",
        "another local user's system resolution and .deb planted in the victim's store (the "
        ".deb's binary writes a file); then the resolution alone, then both, given to the victim",
        "StorePermissionError naming the resolution, then the .deb; then SystemDependencyError: "
        "the .deb matches no hash of apt's index, removed before extraction; nothing ran",
    )


def test_a_symlinked_store_log_is_refused(scene: Scene, report: Report) -> None:
    precious = scene.den / "precious.txt"
    precious.write_text("the victim's own file\n")
    shutil.chown(precious, scene.victim.name, scene.victim.name)
    scene.home.mkdir(mode=0o700)
    shutil.chown(scene.home, scene.victim.name, scene.victim.name)
    link = scene.lair / "store.log"
    os.symlink(precious, link)
    os.lchown(link, scene.attacker.uid, scene.attacker.gid)
    scene.plant(link, scene.home / "store.log")

    done = scene.victim_runs(VICTIM_PROGRAM)
    _refused(done, scene.home / "store.log", scene.attacker)
    assert precious.read_text() == "the victim's own file\n"
    report(
        "store trust",
        "the victim's store.log replaced by another user's symbolic link to a file of the victim",
        "StorePermissionError naming store.log (opened with O_NOFOLLOW); the file it pointed "
        "at is unchanged",
    )


def test_a_new_store_is_0700_and_a_shared_tmp_home_is_never_used_silently(
    scene: Scene, tmp_path: Path, caplog: pytest.LogCaptureFixture, report: Report
) -> None:
    old = os.umask(0)
    try:
        fresh = Store(tmp_path / "fresh")
        fresh.record({"event": "test"})
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(fresh.root).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(fresh.root / "store.log").st_mode) & 0o022 == 0

    # A predictable FLASH_HOME in /tmp that another user made first: refused, named.
    taken = Path("/tmp") / f"openflash-{scene.attacker.name}"
    made = scene.attacker.run(["mkdir", "-m", "0777", str(taken)])
    assert made.returncode == 0, made.stderr
    try:
        with pytest.raises(StorePermissionError) as info:
            Store(taken).record({"event": "test"})
        assert str(taken) in str(info.value) and scene.attacker.name in str(info.value)
        assert "FLASH_HOME of its own" in info.value.hint
        # One this user makes there: used, but announced.
        mine = Path("/tmp") / f"openflash-{scene.victim.name}-root"
        with caplog.at_level(logging.WARNING, logger="openflash"):
            Store(mine).record({"event": "test"})
        assert f"FLASH_HOME {mine} lies in /tmp, which every user can write" in caplog.text
        assert stat.S_IMODE(os.stat(mine).st_mode) == 0o700
        shutil.rmtree(mine)
    finally:
        shutil.rmtree(taken, ignore_errors=True)
    report(
        "store trust",
        "a new store made under umask 0; a FLASH_HOME in /tmp made first by another user; one "
        "in /tmp made by this user",
        "the new store is 0700; the other user's is refused with StorePermissionError naming "
        "it and its owner; this user's own is used with a warning naming the risk",
    )
