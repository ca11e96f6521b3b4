"""openflash's worker runtime, copied into the store once per version.

Workers run in the user's environment, which has neither openflash nor its dependencies. What a
worker needs of ours (``openflash.workers.child``, ``openflash.workers.protocol`` and cloudpickle)
is copied into ``FLASH_HOME/runtime/<key>/``, bytecode compiled, and put on the worker's path
behind the environment's own packages.

It also holds the light client, for project modules a worker imports that decorate functions:
its ``openflash`` and ``runpod_flash`` packages resolve the public names on first use, the
decorators and configs to ``openflash.workers.client``, the enums and errors to copies of
openflash's own (standard-library-only) modules. Importing the worker's main loads none of it.

Programs written for Runpod's worker SDK report progress with
``runpod.serverless.progress_update(job, value)``: a small ``runpod`` package here offers that
(as ``openflash.progress``) and says clearly that it offers nothing else. It is last on the
worker's path, so an environment that declares the real ``runpod`` package gets that one, never
this shim; the caller's interpreter never sees it.

The public names are openflash's ``__all__``, read from the source of ``openflash/__init__.py``
(the top-level package is above this layer: it is not imported); each is resolved to the first
light module whose ``__all__`` lists it.
"""

from __future__ import annotations

import ast
import hashlib
import importlib
import importlib.util
import py_compile
import sys
import threading
from concurrent.futures import Future
from pathlib import Path

import cloudpickle

from openflash._version import __version__
from openflash.envs.environment import python_tag
from openflash.envs.store import Store, content_key
from openflash.errors import EnvironmentBuildError

__all__ = [
    "LIGHT_MODULES",
    "light_init",
    "light_names",
    "public_names",
    "worker_runtime",
    "worker_runtime_soon",
]

_PACKAGE_FILES = {
    "openflash/__init__.py": None,
    "openflash/workers/__init__.py": None,
    "openflash/workers/child.py": "openflash.workers.child",
    "openflash/workers/connection.py": "openflash.workers.connection",
    "openflash/workers/call_threads.py": "openflash.workers.call_threads",
    "openflash/workers/wire.py": "openflash.workers.wire",
    "openflash/workers/socket_reads.py": "openflash.workers.socket_reads",
    "openflash/workers/shared_memory.py": "openflash.workers.shared_memory",
    "openflash/workers/error_frames.py": "openflash.workers.error_frames",
    "openflash/workers/protocol.py": "openflash.workers.protocol",
    "openflash/workers/payloads.py": "openflash.workers.payloads",
    "openflash/workers/forkserver.py": "openflash.workers.forkserver",
    "openflash/workers/namespace.py": "openflash.workers.namespace",
    "openflash/workers/library_shim.py": "openflash.workers.library_shim",
    "openflash/workers/channel.py": "openflash.workers.channel",
    "openflash/workers/client.py": "openflash.workers.client",
    "openflash/workers/portable.py": "openflash.workers.portable",
    "openflash/workers/pickling.py": "openflash.workers.pickling",
    "openflash/workers/streaming.py": "openflash.workers.streaming",
    "openflash/workers/interrupts.py": "openflash.workers.interrupts",
    "openflash/workers/fanning.py": "openflash.workers.fanning",
    "openflash/workers/serverless_client.py": "openflash.workers.serverless_client",
    "openflash/workers/flash_apps.py": "openflash.workers.flash_apps",
    "openflash/workers/learning.py": "openflash.workers.learning",
    "openflash/workers/lifeline.py": "openflash.workers.lifeline",
    "openflash/errors.py": "openflash.errors",
    "openflash/config/__init__.py": None,
    "openflash/config/hardware.py": "openflash.config.hardware",
}

#: The modules of the light client that offer openflash's public names, in the order a name is
#: looked for (each offers those its ``__all__`` lists).
LIGHT_MODULES = (
    "openflash.workers.client",
    "openflash.workers.portable",
    "openflash.workers.streaming",
    "openflash.workers.serverless_client",
    "openflash.workers.flash_apps",
    "openflash.config.hardware",
    "openflash.errors",
)

_TOP_INIT = Path(__file__).resolve().parents[1] / "__init__.py"


def public_names() -> list[str]:
    """openflash's ``__all__``, read from its ``__init__.py`` without importing it."""
    tree = ast.parse(_TOP_INIT.read_text(encoding="utf-8"), str(_TOP_INIT))
    for node in tree.body:
        if (
            isinstance(node, ast.Assign)
            and len(node.targets) == 1
            and isinstance(node.targets[0], ast.Name)
            and node.targets[0].id == "__all__"
        ):
            names = ast.literal_eval(node.value)
            return [str(name) for name in names]
    raise RuntimeError(f"{_TOP_INIT} does not assign __all__")


def light_names() -> dict[str, str]:
    """Each public name (but ``__version__``) and the light module that offers it inside a worker.

    A name no light module lists is left out (tests/test_exported_members.py keeps none out).
    """
    offered: dict[str, str] = {}
    for module in reversed(LIGHT_MODULES):  # the first module to list a name wins
        offered.update(dict.fromkeys(importlib.import_module(module).__all__, module))
    return {name: offered[name] for name in sorted(public_names()) if name in offered}


_LIGHT_INIT = """\
\"\"\"openflash inside a worker: the light client, its names resolved on first use.\"\"\"

import importlib

__version__ = {version!r}
__all__ = {public!r}
_NAMES = {names!r}


def __getattr__(name):
    module = _NAMES.get(name)
    if module is None:
        raise AttributeError(f"module 'openflash' has no attribute {{name!r}}")
    return getattr(importlib.import_module(module), name)
"""

_COMPAT_INIT = b'''"""runpod_flash inside a worker: openflash's light client."""

import openflash

__version__ = openflash.__version__
__all__ = list(openflash.__all__)


def __getattr__(name):
    return getattr(openflash, name)
'''


_RUNPOD_INIT = b'''"""runpod inside an openflash worker: only runpod.serverless.progress_update.

This shim is last on the worker's path: an environment that declares runpod gets the real one.
"""

from runpod import serverless

__all__ = ["serverless"]


def __getattr__(name):
    raise AttributeError(
        f"runpod.{name} is not offered inside openflash workers (only "
        "runpod.serverless.progress_update is). Hint: add 'runpod' to the endpoint's "
        "dependencies to use Runpod's SDK itself"
    )
'''

_RUNPOD_SERVERLESS = b'''"""runpod.serverless inside an openflash worker: progress_update only."""

from openflash.workers.streaming import progress_update

__all__ = ["progress_update"]


def __getattr__(name):
    raise AttributeError(
        f"runpod.serverless.{name} is not offered inside openflash workers (only "
        "progress_update is). Hint: add 'runpod' to the endpoint's dependencies to use "
        "Runpod's SDK itself"
    )
'''


def _module_file(name: str) -> Path:
    # Located, not imported: the child's module adjusts sys.path when it runs.
    spec = importlib.util.find_spec(name)
    assert spec is not None and spec.origin is not None
    return Path(spec.origin)


def light_init() -> str:
    """The source of the light ``openflash/__init__.py``."""
    names = light_names()
    public = [name for name in public_names() if name in names or name == "__version__"]
    return _LIGHT_INIT.format(version=__version__, public=public, names=names)


def _sources() -> dict[str, bytes]:
    files = {
        name: (
            _module_file(module).read_bytes() if module else b'"""openflash worker runtime."""\n'
        )
        for name, module in _PACKAGE_FILES.items()
    }
    files["openflash/__init__.py"] = light_init().encode()
    files["runpod_flash/__init__.py"] = _COMPAT_INIT
    files["runpod/__init__.py"] = _RUNPOD_INIT
    files["runpod/serverless/__init__.py"] = _RUNPOD_SERVERLESS
    cp_root = Path(cloudpickle.__file__).parent
    for path in sorted(cp_root.rglob("*.py")):
        files[f"cloudpickle/{path.relative_to(cp_root).as_posix()}"] = path.read_bytes()
    return files


def worker_runtime(store: Store) -> Path:
    """The runtime directory to put on a worker's path, built once per content."""
    files = _sources()
    digest = hashlib.sha256()
    for name in sorted(files):
        digest.update(name.encode() + b"\0" + files[name] + b"\0")
    key = content_key("runtime", digest.hexdigest(), python_tag())

    def build(tmp: Path) -> dict[str, object]:
        for name, data in files.items():
            target = tmp / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        # py_compile raises what writing raises (ENOSPC: StoreFullError from build_once), where
        # compileall only prints it.
        for name in files:
            if name.endswith(".py"):
                try:
                    py_compile.compile(str(tmp / name), doraise=True)
                except py_compile.PyCompileError as e:
                    raise EnvironmentBuildError(
                        f"could not compile the worker runtime's {name}: {e.msg}",
                        hint="openflash's own files may be damaged: reinstall openflash",
                    ) from e
        return {"python": sys.version.split()[0], "files": len(files)}

    path = store.build_once("runtime", key, build)
    return path


def worker_runtime_soon(store: Store) -> Future[Path]:
    """:func:`worker_runtime`, built by a thread of its own from now on; its future (the folder,
    or what building it raised). The preparer starts it before resolving and installing an
    environment, so that a first environment on a machine (an empty store) does not build the
    runtime after its packages, on the way to the first result (issue 25, item 5)."""
    soon: Future[Path] = Future()

    def build() -> None:
        try:
            soon.set_result(worker_runtime(store))
        except BaseException as e:  # given to whoever waits for it
            soon.set_exception(e)

    threading.Thread(target=build, name="openflash-runtime", daemon=True).start()
    return soon
