"""Values across the environment boundary, from a caller whose interpreter lacks the packages.

The caller is a uv venv made here holding only openflash's own dependencies (no numpy, pandas or
the "torchlike" wheel); the endpoints' environments have them. Real uv, real workers.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers import make_wheel, run_python, write

ROOT = Path(__file__).resolve().parents[2]


def _caller_packages() -> list[str]:
    """openflash's own dependencies (from pyproject.toml: the list never drifts), and httpx."""
    try:
        import tomllib
    except ImportError:  # Python 3.10
        import tomli as tomllib  # type: ignore[no-redef]
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return [*project["dependencies"], "httpx"]


CALLER_PACKAGES = _caller_packages()


@pytest.fixture(scope="module")
def bare_caller(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Python with openflash's dependencies and nothing else (from the test uv cache)."""
    venv = tmp_path_factory.mktemp("caller") / "venv"
    cache = os.environ.get("OPENFLASH_TEST_UV_CACHE", "")
    env = {**os.environ, **({"UV_CACHE_DIR": cache} if cache else {})}
    subprocess.run(["uv", "venv", "-q", "-p", sys.executable, str(venv)], check=True, env=env)
    python = venv / "bin" / "python"
    subprocess.run(
        ["uv", "pip", "install", "-q", "--python", str(python), *CALLER_PACKAGES],
        check=True,
        env=env,
    )
    lacks = subprocess.run([str(python), "-c", "import numpy"], capture_output=True)
    assert lacks.returncode != 0, "the caller venv must not have numpy"
    return python


def run_caller(python: Path, script: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    return subprocess.run(
        [str(python), str(script)],
        cwd=script.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.mark.usefixtures("flash_home")
def test_numpy_pandas_and_version_strings_reach_a_caller_without_them(
    tmp_path: Path, bare_caller: Path
) -> None:
    # A stand-in for torch: its __version__ is a str subclass of its own (as torch's is).
    make_wheel(
        tmp_path,
        "torchlike",
        "2.13.0",
        {
            "torchlike/__init__.py": "class TorchVersion(str):\n    pass\n\n"
            "__version__ = TorchVersion('2.13.0')\n"
        },
    )
    script = write(
        tmp_path / "app.py",
        """
        import asyncio
        from openflash import CpuLiveServerless, remote

        @remote(CpuLiveServerless(name="portable-np"),
                dependencies=["numpy==1.26.2", "pandas==2.1.3",
                              "./torchlike-2.13.0-py3-none-any.whl"])
        def stats(values):
            import numpy as np, pandas as pd, torchlike
            frame = pd.DataFrame({"a": [1, 2]}, index=["x", "y"])
            return {
                "mean": np.mean(values),
                "array": np.array(values).reshape(2, 2),
                "frame": frame,
                "series": frame["a"],
                "version": torchlike.__version__,
            }

        result = asyncio.run(stats([1.0, 2.0, 3.0, 4.0]))
        print(sorted((k, type(v).__name__) for k, v in result.items()))
        print(result)
        """,
    )
    done = run_caller(bare_caller, script)
    assert done.returncode == 0, done.stderr
    types_line, values_line = done.stdout.strip().splitlines()
    assert types_line == (
        "[('array', 'list'), ('frame', 'dict'), ('mean', 'float'), ('series', 'dict'), "
        "('version', 'str')]"
    )
    assert values_line == (
        "{'mean': 2.5, 'array': [[1.0, 2.0], [3.0, 4.0]], "
        "'frame': {'index': ['x', 'y'], 'columns': ['a'], 'data': [[1], [2]]}, "
        "'series': {'index': ['x', 'y'], 'data': [1, 2], 'name': 'a'}, 'version': '2.13.0'}"
    )


@pytest.mark.usefixtures("flash_home")
def test_images_and_tensors_reach_a_caller_without_pillow_or_torch(
    tmp_path: Path, bare_caller: Path
) -> None:
    # Real Pillow; a stand-in for torch (the PyPI build is gigabytes): a package named torch
    # whose Tensor has the methods the portable rule calls (detach, cpu, tolist).
    make_wheel(
        tmp_path,
        "torch",
        "0.0.1",
        {
            "torch/__init__.py": "class Tensor:\n"
            "    def __init__(self, data):\n        self.data = data\n"
            "    def detach(self):\n        return self\n"
            "    def cpu(self):\n        return self\n"
            "    def tolist(self):\n        return self.data\n"
        },
    )
    script = write(
        tmp_path / "media.py",
        """
        import asyncio
        from openflash import CpuLiveServerless, remote

        @remote(CpuLiveServerless(name="portable-media"),
                dependencies=["pillow==11.3.0", "./torch-0.0.1-py3-none-any.whl"])
        def media():
            import torch
            from PIL import Image
            return {"image": Image.new("RGB", (3, 2), (255, 0, 0)),
                    "tensor": torch.Tensor([[1, 2], [3, 4]])}

        result = asyncio.run(media())
        print(type(result["image"]).__name__, result["image"][:8], result["tensor"])
        """,
    )
    lacks = subprocess.run([str(bare_caller), "-c", "import PIL"], capture_output=True)
    assert lacks.returncode != 0, "the caller venv must not have Pillow"
    done = run_caller(bare_caller, script)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "bytes b'\\x89PNG\\r\\n\\x1a\\n' [[1, 2], [3, 4]]"


@pytest.mark.usefixtures("flash_home")
def test_arguments_go_portable_to_a_worker_lacking_their_package(tmp_path: Path) -> None:
    # The caller (this interpreter) has pydantic and packaging; the endpoint has neither.
    script = write(
        tmp_path / "args_app.py",
        """
        import asyncio
        import pydantic
        from packaging.version import Version
        from openflash import CpuLiveServerless, FlashError, remote

        class Order(pydantic.BaseModel):
            item: str
            qty: int

        @remote(CpuLiveServerless(name="portable-args"))
        def describe(order, note="-"):
            return type(order).__name__, order, note

        async def main():
            print(await describe(Order(item="tea", qty=2)))
            print(await describe({"plain": 1}))  # learned once: still fine
            try:
                await describe({"a": 1}, note=Version("1.0"))
            except FlashError as e:
                print("error:", e.message)

        asyncio.run(main())
        """,
    )
    done = run_python(script)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert lines[0] == "('dict', {'item': 'tea', 'qty': 2}, '-')"
    assert lines[1] == "('dict', {'plain': 1}, '-')"
    assert lines[2] == (
        "error: argument 'note' of describe() is a packaging.version.Version, from module "
        "'packaging', which endpoint 'portable-args''s environment lacks, and it has no "
        "portable form"
    )


@pytest.mark.usefixtures("flash_home")
def test_flash_run_without_numpy_answers_json_in_every_route_kind(
    tmp_path: Path, bare_caller: Path, session_home: Path, uv_cache: Path, apt_dir: Path
) -> None:
    import httpx

    from helpers import FlashServer

    project = tmp_path / "proj"
    write(
        project / "stats.py",
        """
        import dataclasses, datetime, decimal, uuid
        from openflash import CpuLiveServerless, Endpoint, remote

        @remote(CpuLiveServerless(name="json-np"), dependencies=["numpy==1.26.2"])
        def stats(values: list[float]):
            import numpy as np
            return {"mean": np.mean(values), "array": np.array(values), "when":
                    datetime.date(2024, 5, 1), "id": uuid.UUID(int=7), "price":
                    decimal.Decimal("2.5"), "raw": b"hi", "tags": {"a"}, "odd": object()}

        api = Endpoint(name="json-lb", dependencies=["numpy==1.26.2"])

        @api.post("/mean")
        def mean(values: list[float]):
            import numpy as np
            return {"mean": np.mean(values), "n": np.int64(len(values))}
        """,
    )
    env = {
        "FLASH_HOME": str(session_home),
        "FLASH_UV_CACHE_DIR": str(uv_cache),
        "FLASH_APT_DIR": str(apt_dir),
        "PYTHONPATH": str(ROOT / "src"),
    }
    with FlashServer(project, "--no-reload", env=env, python=str(bare_caller)) as server:
        body = {"input": {"values": [1.0, 3.0]}}
        expected = {
            "mean": 2.0,
            "array": [1.0, 3.0],
            "when": "2024-05-01",
            "id": "00000000-0000-0000-0000-000000000007",
            "price": 2.5,
            "raw": "aGk=",
            "tags": ["a"],
            "odd": "<builtins.object cannot be encoded as JSON; return plain data or "
            "register_portable it>",
        }
        r = httpx.post(f"{server.url}/stats/stats/runsync", json=body, timeout=120)
        assert (r.status_code, r.json()["status"]) == (200, "COMPLETED"), r.text
        assert r.json()["output"] == expected
        job = httpx.post(f"{server.url}/stats/stats/run", json=body, timeout=60).json()
        for _ in range(600):
            status = httpx.get(f"{server.url}/stats/stats/status/{job['id']}", timeout=10).json()
            if status["status"] not in ("IN_QUEUE", "IN_PROGRESS"):
                break

            time.sleep(0.1)
        assert status["status"] == "COMPLETED" and status["output"] == expected
        r = httpx.post(f"{server.url}/stats/mean", json={"values": [1.0, 2.0]}, timeout=120)
        assert (r.status_code, r.json()) == (200, {"mean": 1.5, "n": 2})


@pytest.mark.usefixtures("flash_home")
def test_a_nested_result_is_portable_for_the_calling_worker(tmp_path: Path) -> None:
    # This caller has numpy (the test's own Python), so the inner worker's result is numpy for
    # it; the outer endpoint's environment lacks numpy, so its nested calls must get it portable.
    has_numpy = subprocess.run([sys.executable, "-c", "import numpy"], capture_output=True)
    assert has_numpy.returncode == 0, "the caller must have numpy here"
    script = write(
        tmp_path / "nested_np.py",
        """
        import asyncio
        from openflash import CpuLiveServerless, remote

        @remote(CpuLiveServerless(name="nested-np-inner"), dependencies=["numpy==1.26.2"])
        def stats(values: list[float]):
            import numpy as np
            return {"mean": np.mean(values), "array": np.array(values)}

        @remote(CpuLiveServerless(name="nested-np-outer"))
        async def report(values: list[float]):
            import importlib.util
            first = await stats(values)
            again = await stats(values[:1])  # the parent remembers this worker's modules
            return (importlib.util.find_spec("numpy") is None, type(first["mean"]).__name__,
                    first["mean"], first["array"], again["array"])

        async def main():
            print(await report([1.0, 3.0]))
            direct = await stats([1.0, 3.0])  # this caller has numpy: numpy, as before
            print(type(direct["mean"]).__module__, type(direct["array"]).__name__)

        asyncio.run(main())
        """,
    )
    done = run_python(script)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert lines == ["(True, 'float', 2.0, [1.0, 3.0], [1.0])", "numpy ndarray"]
