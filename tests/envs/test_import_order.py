"""The guess of what a first worker imports, and in which order (envs/import_order.py), against
what a real interpreter in a real environment imports: two wheels installed by uv, one requiring
the other, with the import forms the guess has to read (relative, parenthesized with comments,
``import a.b.c as x``, ``try``/``except``, a namespace package) and those it must leave out (under ``if
TYPE_CHECKING``, in a function or method body, in a module ``__getattr__`` defined in a block
that runs, a docstring line that reads like an import)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from openflash.envs.environment import build_environment
from openflash.envs.import_order import predicted_sources
from openflash.envs.store import Store

from helpers import make_wheel

LIBRARY = {
    "alib/__init__.py": '''"""A library. Its docstring has a line that reads like an import:
from nowhere import nothing
"""
import os
from .core import (
    thing,  # a comment inside the parentheses
    other,
)
from . import util
try:
    from ._speedups import fast
except ImportError:
    fast = None
if fast is not None:
    from . import eager_in_block

    def __getattr__(name):  # PEP 562, as numpy's lazy submodules: imported when first used
        if name == "lazy_attr":
            import alib.lazy_attr
            return alib.lazy_attr
        raise AttributeError(name)
    from . import after_getattr
from typing import TYPE_CHECKING
if TYPE_CHECKING:
    from . import typing_only


def later():
    from . import lazy
    import alib.lazy_too


class Thing:
    def method(self):
        import alib.lazy_method


import alib.sub.deep as deep
''',
    "alib/core.py": "from .helpers import helper\nthing = other = 1\n",
    "alib/helpers.py": "helper = 1\n",
    "alib/util.py": "from alib.core import thing\n",
    "alib/_speedups.py": "fast = 1\n",
    "alib/typing_only.py": "X = 1\n",
    "alib/lazy.py": "X = 1\n",
    "alib/lazy_too.py": "X = 1\n",
    "alib/lazy_method.py": "X = 1\n",
    "alib/eager_in_block.py": "X = 1\n",
    "alib/after_getattr.py": "X = 1\n",
    "alib/lazy_attr.py": "X = 1\n",
    "alib/unused.py": "X = 1\n",
    "alib/sub/__init__.py": "from ..helpers import helper\n",
    "alib/sub/deep.py": "from . import leaf\nfrom .. import core\n",
    "alib/sub/leaf.py": "X = 1\n",
    # A namespace package (no __init__.py) of the library's wheel: a root after the application's.
    "nsp/part/__init__.py": "X = 1\n",
}
APP = {
    "zapp/__init__.py": (
        "import alib.util\nfrom alib.sub import deep\nimport nsp.part\nVALUE = 1\nfrom . import main\n"
    ),
    "zapp/main.py": "import json\n",
}
#: What importing the application, then the library, runs, in order.
EXPECTED = [
    "zapp/__init__.py",
    "alib/__init__.py",
    "alib/core.py",
    "alib/helpers.py",
    "alib/util.py",
    "alib/_speedups.py",
    "alib/eager_in_block.py",
    "alib/after_getattr.py",
    "alib/sub/__init__.py",
    "alib/sub/deep.py",
    "alib/sub/leaf.py",
    "nsp/part/__init__.py",
    "zapp/main.py",
]


def test_the_guess_is_the_order_a_real_import_loads_files_in(
    tmp_path: Path, uv_cache: Path
) -> None:
    wheels = tmp_path / "wheels"
    # An extra's requirement does not make the library's requirer a library too.
    library = make_wheel(wheels, "alib", "1.0", LIBRARY, requires=("zapp; extra == 'app'",))
    app = make_wheel(wheels, "zapp", "1.0", APP, requires=("alib>=1.0",))
    lock = f"alib @ {library.as_uri()}\nzapp @ {app.as_uri()}\n"
    env = build_environment(Store(tmp_path / "home"), lock, uv_cache=uv_cache)
    site = next((env.path / "lib").glob("python*/site-packages"))

    guessed = [str(p.relative_to(site)) for p in predicted_sources(site)]

    # What a real interpreter of the environment loads, in the order it starts loading each
    # module (when it looks for it: sys.modules keeps the order they finished in).
    probe = (
        "import importlib.util, json, sys\n"
        "started = []\n"
        "class Watch:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        started.append(name)\n"
        "sys.meta_path.insert(0, Watch())\n"
        "import zapp, alib\n"
        "files = [getattr(sys.modules[n], '__file__', None) or '' for n in started]\n"
        f"print(json.dumps([f for f in files if f.startswith({str(site)!r})]))\n"
    )
    done = subprocess.run(
        [str(env.python), "-c", probe], capture_output=True, text=True, timeout=120, check=True
    )
    real = [str(Path(f).relative_to(site)) for f in json.loads(done.stdout)]
    assert real == EXPECTED, real  # the fixture imports what it is meant to
    assert guessed == EXPECTED


def test_unreadable_metadata_and_sources_are_skipped(tmp_path: Path) -> None:
    """A site-packages folder with a broken distribution (no RECORD, a METADATA that is a
    folder) and a module that is not UTF-8: the guess names what it can read."""
    site = tmp_path / "site-packages"
    (site / "broken-1.0.dist-info" / "METADATA").mkdir(parents=True)
    (site / "good-1.0.dist-info").mkdir()
    (site / "good-1.0.dist-info" / "RECORD").write_text("good/__init__.py,,\ngood/b.py,,\n")
    (site / "good").mkdir()
    (site / "good" / "__init__.py").write_bytes(b"\xff\xfe import nothing\nfrom . import b\n")
    (site / "good" / "b.py").write_text("X = 1\n")
    assert predicted_sources(site) == [site / "good" / "__init__.py", site / "good" / "b.py"]
