"""Whom the store trusts: its owner, and nobody else.

Everything openflash reads from FLASH_HOME decides what gets installed or run: a resolution names
the wheels to install, a bytecode blob is linked into environments and runs at import, a system
resolution and its .debs become binaries on a worker's path. So each of them, and every directory
above it up to FLASH_HOME, must belong to the user who runs openflash (root's store: to root) and
must not be writable by its group or by others; a file another user could have planted or changed
is refused with StorePermissionError naming it and the fix, never used.

Directories are checked once per level and process (a level that passed cannot be changed by
anyone else afterwards: its parent is not theirs to write). Files are opened with ``O_NOFOLLOW``
and judged by ``fstat`` of what was opened, so a symbolic link planted in place of one is refused
rather than followed. A new store is created 0700 whatever the umask, and a FLASH_HOME in a
directory every user can write (``/tmp``) is never used silently: it is announced, and refused
when another user made it first.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import stat
import threading
from pathlib import Path

from openflash.errors import StorePermissionError

__all__ = [
    "check_entry",
    "check_levels",
    "check_owner",
    "drop_shared_write",
    "ensure_root",
    "make_dirs",
    "open_trusted",
    "read_bytes",
    "read_text",
    "umask",
]

logger = logging.getLogger("openflash")

#: Directories (by path) that passed, once per process; roots checked and announced.
_CHECKED: set[str] = set()
_ROOTS: set[str] = set()
_LOCK = threading.Lock()


def _user(uid: int) -> str:
    import pwd

    try:
        return f"user {pwd.getpwuid(uid).pw_name!r} (uid {uid})"
    except KeyError:
        return f"uid {uid}"


def _refuse(path: Path | str, why: str, fix: str) -> StorePermissionError:
    return StorePermissionError(
        f"{path} {why}; openflash does not use store files another user could have changed",
        hint=fix,
    )


def judge(path: Path | str, st: os.stat_result) -> None:
    """Refuse ``path`` (described by ``st``) unless it is this user's and only this user's to
    write; a symbolic link is refused (``st`` must come from ``lstat`` or ``fstat``)."""
    me = os.geteuid()
    if stat.S_ISLNK(st.st_mode):
        raise _refuse(
            path,
            "is a symbolic link where the store keeps a file of its own",
            f"remove {path} (openflash rebuilds what it needs on the next call)",
        )
    if st.st_uid != me:
        raise _refuse(
            path,
            f"belongs to {_user(st.st_uid)}, not to {_user(me)} who runs this",
            f"remove it ({path}; openflash rebuilds what it needs on the next call), or give "
            "this user a FLASH_HOME of its own",
        )
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise _refuse(
            path,
            f"is writable by other users (mode {stat.S_IMODE(st.st_mode):04o})",
            f"run `chmod go-w {path}` if nobody else changed it, else remove it",
        )


def check_owner(*paths: Path) -> None:
    """Refuse any of ``paths`` that exists and is not this user's alone (``lstat``)."""
    for path in paths:
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            continue
        judge(path, st)


def ensure_root(root: Path) -> None:
    """Make the store's root (0700, whatever the umask) or check the one there, once per
    process: this user's, not writable by others, in no directory another user can rename it
    out of; one in a directory every user can write (/tmp) is announced."""
    key = str(root)
    if key in _ROOTS:
        return
    with _LOCK:
        if key in _ROOTS:
            return
        _check_ancestors(root)
        if not os.path.lexists(root):
            make_dirs(root.parent)
            with contextlib.suppress(FileExistsError):
                os.mkdir(root, 0o700)
                os.chmod(root, 0o700)
        try:
            st = os.stat(root)  # FLASH_HOME itself may be a link the user made
        except FileNotFoundError:
            return
        judge(root, st)
        _ROOTS.add(key)
        _CHECKED.add(key)


def _check_ancestors(root: Path) -> None:
    me = os.geteuid()
    for parent in root.absolute().parents:
        try:
            st = os.stat(parent)
        except OSError:
            continue
        if st.st_uid not in (0, me) or (
            st.st_mode & stat.S_IWOTH and not st.st_mode & stat.S_ISVTX
        ):
            raise StorePermissionError(
                f"FLASH_HOME {root} lies in {parent}, which {_user(st.st_uid)} owns or other "
                f"users can write (mode {stat.S_IMODE(st.st_mode):04o}): they could replace the "
                "store with their own",
                hint="set FLASH_HOME to a folder under your home directory (the default, "
                "~/.cache/openflash, is one)",
            )
    parent_st = os.stat(root.absolute().parent) if root.absolute().parent.exists() else None
    if parent_st is not None and parent_st.st_mode & stat.S_IWOTH:
        logger.warning(
            "openflash: FLASH_HOME %s lies in %s, which every user can write: its name is "
            "predictable, and it is refused whenever another user made it first; set FLASH_HOME "
            "to a folder under your home directory (the default, ~/.cache/openflash)",
            root,
            root.absolute().parent,
        )


def make_dirs(path: Path) -> None:
    """``mkdir -p`` where every directory made is 0755 whatever the umask (``Path.mkdir`` gives
    the parents it makes the umask's permissions)."""
    missing = []
    while not path.is_dir():
        missing.append(path)
        if path.parent == path:
            break
        path = path.parent
    for directory in reversed(missing):
        with contextlib.suppress(FileExistsError):
            os.mkdir(directory, 0o755)


def check_levels(directory: Path, root: Path) -> None:
    """Every directory from ``root`` down to ``directory`` (the existing ones) is this user's
    alone; each level is checked once per process."""
    ensure_root(root)
    try:
        rel = directory.relative_to(root)
    except ValueError:
        rel = None
    levels = [root / Path(*rel.parts[: i + 1]) for i in range(len(rel.parts))] if rel else []
    for level in levels:
        key = str(level)
        if key in _CHECKED:
            continue
        try:
            st = os.lstat(level)
        except FileNotFoundError:
            return  # not made yet: whoever makes it is this user
        judge(level, st)
        _CHECKED.add(key)


def check_entry(path: Path, root: Path) -> None:
    """``path`` (if it exists) and the directories above it up to ``root`` are this user's."""
    check_levels(path.parent, root)
    check_owner(path)


def open_trusted(path: Path, root: Path, flags: int = os.O_RDONLY, mode: int = 0o600) -> int:
    """A descriptor of ``path`` opened without following a symbolic link, refused (closed)
    unless what was opened is this user's alone. Raises FileNotFoundError as ``os.open``."""
    check_levels(path.parent, root)
    try:
        fd = os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise _refuse(
                path,
                "is a symbolic link where the store keeps a file of its own",
                f"remove {path} (openflash rebuilds what it needs on the next call)",
            ) from None
        raise
    try:
        judge(path, os.fstat(fd))
    except BaseException:
        os.close(fd)
        raise
    return fd


def read_bytes(path: Path, root: Path) -> bytes:
    """``path``'s bytes, if it is this user's alone (see :func:`open_trusted`)."""
    fd = open_trusted(path, root)
    with os.fdopen(fd, "rb") as f:
        return f.read()


def read_text(path: Path, root: Path) -> str:
    return read_bytes(path, root).decode()


def umask() -> int:
    """This process's umask, read without changing it (Linux); 0o022 where it cannot be read."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    return 0o022


def drop_shared_write(root: Path) -> None:
    """Clear group and world write on everything under ``root`` (a build under a lax umask)."""
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [".", *dirnames, *filenames]:
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            if st.st_mode & 0o022 and not stat.S_ISLNK(st.st_mode):
                os.chmod(path, stat.S_IMODE(st.st_mode) & ~0o022)
