"""A worker's private namespace: its system layer at the packages' real paths.

Run as ``python -m openflash.workers.namespace MODULE ARG...`` (or ``--exec PROGRAM ARG...``)
with ``OPENFLASH_NAMESPACE`` set to ``{"layer": "/path/to/layer" or null}`` (JSON). It enters a
new user and mount namespace (``unshare(2)`` through ctypes: Python 3.11's ``os`` has none),
overlays each of the layer's top-level folders read-only over the host's (``usr`` over ``/usr``,
``etc`` over ``/etc``, ...: lower dirs only, the layer first), then replaces itself with
``python -m MODULE ARG...`` (the worker's main, or a template's). Inherited descriptors travel
through the ``exec``. The host and every other process see nothing of these mounts.

The user id inside stays the caller's (``uid_map`` maps it to itself, and the same for the group):
a fake root would change what programs do (tools that refuse root or drop privileges, files
written into volumes and the project owned by uid 0 as far as the worker can tell). Because the
id is not 0, ``exec`` drops the namespace's capabilities: user code cannot mount or unmount.
Supplementary groups appear as ``nogroup`` inside (the kernel's rule for unmapped ids).

Mounts below an overlaid folder (``/etc/resolv.conf`` bound in by a container engine, say) are
mounted again over the overlay, so they keep showing through.

With ``"pid": true`` it also enters a new PID namespace with its own ``/proc``: the worker sees
only its namespace's processes, so ``/proc/<caller pid>/environ`` (the caller's variables) and
the caller's other processes are out of its reach. The launcher then stays, outside, as the
process its starter waits for; inside, a small init (pid 1) mounts ``/proc``, starts the program
(pid 2), reaps whatever is orphaned, passes SIGTERM, SIGINT and SIGHUP on, and ends with the
program, telling the launcher its exact exit status, which the launcher takes as its own (a
program killed by SIGSEGV leaves a launcher killed by SIGSEGV). A program could not be pid 1
itself: pid 1 ignores the signals it has no handler for, even ones it sends itself. When the init
ends, the kernel kills every process left in the namespace. A template started this way forks
its workers into its namespace (one namespace per template, shared by its workers: the same
endpoint's code); they report their pids to the pool as descriptors (pidfds), which the pool
reads in its own namespace.

Standard library only: it runs in the worker's interpreter, before anything else. Exit status 121
and one line on stderr when the namespace cannot be set up (the local backend probes once,
``deps.namespace_mode``, so that this is not the common way to learn it).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import functools
import json
import os
import signal
import sys

__all__ = [
    "NAMESPACE_VARIABLE",
    "SETUP_FAILED",
    "enter",
    "lingering",
    "overlay_targets",
    "run_as_init",
]

#: The exit status of a launcher that could not set the namespace up.
SETUP_FAILED = 121
#: The variable holding what to mount.
NAMESPACE_VARIABLE = "OPENFLASH_NAMESPACE"

CLONE_NEWNS = 0x00020000
CLONE_NEWPID = 0x20000000
CLONE_NEWUSER = 0x10000000
MS_RDONLY = 1
MS_BIND = 4096
MS_REC = 16384
MS_PRIVATE = 1 << 18
MS_REMOUNT = 32
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
PR_SET_PDEATHSIG = 1
#: The signals the init passes on to the program (SIGKILL needs no help).
_PASSED_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
#: The volume's entry in the worker's root (Runpod's path).
VOLUME_NAME = "runpod-volume"
O_PATH = getattr(os, "O_PATH", 0o10000000)

#: Layer entries that are openflash's own files, never overlaid.
_OWN = frozenset({"openflash", "openflash-layer.json"})


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def _check(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _write(path: str, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)


def _escape(path: str) -> str:
    """A path as overlayfs's option parser wants it (``:`` and ``,`` and ``\\`` escaped)."""
    return path.replace("\\", "\\\\").replace(":", "\\:").replace(",", "\\,")


def overlay_targets(layer: str) -> list[tuple[str, str]]:
    """``(layer folder, host folder)`` pairs to overlay: the layer's top-level folders whose host
    counterpart (symlinks followed: ``/lib`` is ``/usr/lib`` on a merged-/usr system) is a folder,
    each host folder once, shortest first."""
    pairs: dict[str, str] = {}
    for name in sorted(os.listdir(layer)):
        source = os.path.join(layer, name)
        if name in _OWN or os.path.islink(source) or not os.path.isdir(source):
            continue
        host = os.path.realpath("/" + name)
        if os.path.isdir(host) and host not in pairs.values():
            pairs[source] = host
    return sorted(pairs.items(), key=lambda item: (item[1].count("/"), item[1]))


def _submounts(target: str) -> list[str]:
    """Mount points strictly below ``target``, outermost first (from /proc/self/mountinfo)."""
    found = []
    prefix = target.rstrip("/") + "/"
    with open("/proc/self/mountinfo") as f:
        for line in f:
            point = line.split()[4].encode().decode("unicode_escape")
            if point.startswith(prefix):
                found.append(point)
    return sorted(set(found), key=lambda p: p.count("/"))


def enter(
    layer: str | None, volume: str | None = None, root: str | None = None, pid: bool = False
) -> None:
    """Enter a private user and mount namespace with ``layer`` overlaid at its real paths and
    ``volume`` (if any) at /runpod-volume, in a new root built on the empty folder ``root``;
    with ``pid``, the next child forked starts a new PID namespace (``run_as_init``).

    Raises OSError (with the failing step) where the kernel refuses: no unprivileged user
    namespaces, no overlayfs in them (Linux < 5.11), a seccomp or AppArmor rule.
    """
    libc = _libc()
    uid, gid = os.getuid(), os.getgid()
    flags = CLONE_NEWUSER | CLONE_NEWNS | (CLONE_NEWPID if pid else 0)
    _check(
        libc.unshare(flags),
        "unshare(CLONE_NEWUSER|CLONE_NEWNS" + ("|CLONE_NEWPID)" if pid else ")"),
    )
    _write("/proc/self/setgroups", "deny")
    _write("/proc/self/uid_map", f"{uid} {uid} 1\n")
    _write("/proc/self/gid_map", f"{gid} {gid} 1\n")
    _check(libc.mount(None, b"/", None, MS_REC | MS_PRIVATE, None), "making / private")
    if layer:
        _overlay_layer(libc, layer)
    if volume and root:
        _new_root(libc, root, volume)


def _new_root(libc: ctypes.CDLL, root: str, volume: str) -> None:
    """Change root to a tmpfs on ``root`` holding every entry of ``/`` (bound recursively, so
    the layer's overlays and every mount below come along) plus ``runpod-volume``: a non-root
    user cannot create ``/runpod-volume`` on the host's root, and the host must not change."""
    _check(libc.mount(b"tmpfs", root.encode(), b"tmpfs", 0, b"mode=0755"), f"a tmpfs on {root}")
    mount_point = os.path.join(root, VOLUME_NAME)
    for name in sorted(os.listdir("/")):
        source, target = "/" + name, os.path.join(root, name)
        if name == VOLUME_NAME:
            continue
        if os.path.islink(source):
            os.symlink(os.readlink(source), target)
            continue
        if os.path.isdir(source):
            os.mkdir(target)
        else:
            open(target, "x").close()
        _check(
            libc.mount(source.encode(), target.encode(), None, MS_BIND | MS_REC, None),
            f"binding {source}",
        )
    os.mkdir(mount_point)
    _check(
        libc.mount(volume.encode(), mount_point.encode(), None, MS_BIND | MS_REC, None),
        f"mounting the volume {volume} at /{VOLUME_NAME}",
    )
    flags = MS_REMOUNT | MS_RDONLY
    _check(libc.mount(None, root.encode(), None, flags, None), "making the new root read-only")
    cwd = os.getcwd()
    os.chroot(root)
    os.chdir(cwd)


def _overlay_layer(libc: ctypes.CDLL, layer: str) -> None:
    """Overlay ``layer``'s folders read-only at their real paths, keeping the mounts below."""
    for source, target in overlay_targets(layer):
        _overlay(libc, source, target, _DESCENT)


#: How many folder levels an overlay may move down when the kernel refuses one (see _overlay).
_DESCENT = 3


def _overlay(libc: ctypes.CDLL, source: str, target: str, descent: int) -> None:
    """Overlay ``source`` read-only over ``target``, keeping the mounts below ``target``.

    The kernel refuses some folders as an overlay's lower dir (EINVAL), e.g. a ``/var`` that
    holds a container engine's overlay storage (``/var/lib/containers``). Then each of the
    layer's subfolders is overlaid on its host twin instead, down to ``descent`` levels; a
    subfolder the host lacks cannot get a mount point (the host is never changed) and is left
    out. Other refusals raise OSError naming the step.
    """
    below = _submounts(target)
    kept = [(point, os.open(point, O_PATH)) for point in below]
    try:
        options = f"lowerdir={_escape(source)}:{_escape(target)}".encode()
        result = libc.mount(b"overlay", target.encode(), b"overlay", MS_RDONLY, options)
        if result != 0 and ctypes.get_errno() == errno.EINVAL and descent > 0:
            for name in sorted(os.listdir(source)):
                inner, host = os.path.join(source, name), os.path.join(target, name)
                if os.path.isdir(inner) and not os.path.islink(inner) and os.path.isdir(host):
                    _overlay(libc, inner, os.path.realpath(host), descent - 1)
            return
        _check(result, f"overlaying {source} on {target}")
        for point, fd in kept:
            from_fd = f"/proc/self/fd/{fd}".encode()
            _check(
                libc.mount(from_fd, point.encode(), None, MS_BIND | MS_REC, None),
                f"keeping the mount at {point}",
            )
    finally:
        for _, fd in kept:
            os.close(fd)


def _exec(argv: list[str]) -> None:
    if argv[:1] == ["--exec"]:
        os.execvp(argv[1], argv[1:])
    os.execv(sys.executable, [sys.executable, "-m", *argv])


def _end_like(status: int) -> None:
    """End this process as one with wait status ``status`` ended: same code, or same signal."""
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        if sig not in (signal.SIGKILL, signal.SIGSTOP):  # those have no handler to reset
            signal.signal(sig, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, [sig])
        os.kill(os.getpid(), sig)
        os._exit(128 + sig)  # a signal that does not end a process by default
    os._exit(os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else 1)


def run_as_init(argv: list[str], linger: bool = False) -> None:
    """After ``enter(..., pid=True)``: run ``argv`` as pid 2 of the new PID namespace under an
    init (pid 1), this process waiting outside and ending as the program ends. Never returns.

    Without ``linger`` the namespace ends with the program (the kernel kills what is left), or
    with the launcher. With it (a template: its forked workers outlive it, as they do outside a
    namespace), the init leaves the launcher's process group and stays until every process in
    the namespace has ended, even if the launcher and the program are killed."""
    status_r, status_w = os.pipe()
    init = os.fork()
    if init == 0:
        os.close(status_r)
        try:
            flags = MS_NOSUID | MS_NODEV | MS_NOEXEC
            _check(_libc().mount(b"proc", b"/proc", b"proc", flags, None), "mounting /proc")
        except OSError as e:
            print(f"openflash: cannot set up the worker's namespace: {e}", file=sys.stderr)
            os._exit(SETUP_FAILED)
        _init(argv, status_w, linger)
    os.close(status_w)
    for sig in _PASSED_SIGNALS:
        signal.signal(sig, functools.partial(_pass_on, init))
    told = os.read(status_r, 64)  # the program's status, once it ends (nothing: the init died)
    _end_like(int(told) if told else _wait(init))


def _pass_on(pid: int, sig: int, _frame: object) -> None:
    """A signal handler passing ``sig`` on to the process ``pid`` (a positive pid, fixed when
    the handler is set: never a group or every process)."""
    if pid > 0:
        with contextlib.suppress(OSError):
            os.kill(pid, sig)


def _wait(pid: int) -> int:
    while True:
        try:
            return os.waitpid(pid, 0)[1]
        except InterruptedError:
            continue


def _close_all_but(keep: int) -> None:
    """Close every descriptor of this process above 2 but ``keep`` (as ``/proc`` lists them:
    the init has mounted its namespace's own by now)."""
    try:
        names = os.listdir("/proc/self/fd")
    except OSError:
        return
    for name in names:
        if name.isdigit() and int(name) > 2 and int(name) != keep:
            with contextlib.suppress(OSError):  # the listing's own, closed already
                os.close(int(name))


def _init(argv: list[str], status_w: int, linger: bool) -> None:
    """Pid 1: start the program, reap every process, tell the program's status; then end, or
    with ``linger`` end once no process is left."""
    if not linger:
        _libc().prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)  # ends if the launcher is killed
    program = os.fork()
    if program == 0:
        os.close(status_w)
        _exec(argv)
    # The program has its descriptors; the init keeps none of them but its status pipe (and
    # 0-2): a lingering init holding, say, a template's socket to its pool would hide the
    # template's end from the pool for as long as the template's workers live.
    _close_all_but(status_w)
    if linger:  # a kill of the launcher's group (the template's stop) leaves the init and the
        os.setpgid(0, 0)  # workers forked into its namespace, which outlive their template
    for sig in _PASSED_SIGNALS:
        signal.signal(sig, functools.partial(_pass_on, program))
    ended = False
    while True:
        try:
            pid, status = os.wait()
        except InterruptedError:
            continue
        except ChildProcessError:
            os._exit(0 if ended else 1)
        if pid == program and not ended:
            ended = True
            for sig in _PASSED_SIGNALS:  # nothing to pass them on to now
                signal.signal(sig, signal.SIG_IGN)
            if linger:  # the launcher leaves now; this stays, holding none of its pipes
                null = os.open(os.devnull, os.O_RDWR)
                for fd in (0, 1, 2):
                    os.dup2(null, fd)
            with contextlib.suppress(OSError):  # a launcher killed already reads nothing
                os.write(status_w, str(status).encode())
            os.close(status_w)
            if not linger:
                os._exit(0)  # the kernel kills whatever is left in the namespace


def main(argv: list[str]) -> None:
    """Enter the namespace ``OPENFLASH_NAMESPACE`` describes, then exec ``python -m argv...``
    (with a PID namespace: run it under an init there)."""
    config = json.loads(os.environ.pop(NAMESPACE_VARIABLE, "{}") or "{}")
    pid = bool(config.get("pid"))
    if pid:
        _hand_guardian_in()
    try:
        enter(config.get("layer"), config.get("volume"), config.get("root"), pid)
    except OSError as e:
        print(f"openflash: cannot set up the worker's namespace: {e}", file=sys.stderr)
        sys.exit(SETUP_FAILED)
    if pid:
        run_as_init(argv, bool(config.get("linger")))
    _exec(argv)


#: workers.lifeline's variables (this module runs as a bare file too: no import of it).
_PARENT_VARIABLE = "OPENFLASH_PARENT_PID"
_PIDFD_VARIABLE = "OPENFLASH_PARENT_PIDFD"


def _hand_guardian_in() -> None:
    """The process a worker dies with (``OPENFLASH_PARENT_PID``, workers.lifeline) is out of
    sight inside a new PID namespace: open a pidfd of it here, outside, and pass it in
    (``OPENFLASH_PARENT_PIDFD``, inherited), so the worker's lifeline watches that."""
    named = os.environ.pop(_PARENT_VARIABLE, "")
    if not named.isdigit():
        return
    try:
        fd = os.pidfd_open(int(named))
    except ProcessLookupError:
        sys.exit(SETUP_FAILED)  # gone already: nothing to start a worker for
    except (OSError, AttributeError):  # no pidfd here: the worker cannot watch it; say so
        print("openflash: no pidfd_open: the worker cannot watch its owner", file=sys.stderr)
        return
    os.set_inheritable(fd, True)
    os.environ[_PIDFD_VARIABLE] = str(fd)


def lingering(config: str) -> str:
    """``OPENFLASH_NAMESPACE``'s value ``config`` for a template: its PID namespace stays until
    the workers forked into it have ended (``run_as_init``'s ``linger``)."""
    return json.dumps({**json.loads(config or "{}"), "linger": True})


if __name__ == "__main__":
    main(sys.argv[1:])
