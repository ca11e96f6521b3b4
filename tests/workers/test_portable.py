"""The portable table (workers/portable.py) through the pickler that applies it (pickling.py).

The host has numpy and pydantic; "the other side lacks a module" is the ``lacks`` predicate.
pandas rules run in real workers (tests/e2e/test_portable_values.py).
"""

from __future__ import annotations

import dataclasses
import pickle
import sys
import types

import numpy as np
import pydantic
import pytest

from openflash import register_portable
from openflash.workers import pickling, portable


def lacking(*modules: str):
    return lambda module: module in modules


def roundtrip(value, *modules: str, strict: bool = False):
    return pickle.loads(pickling.dumps(value, lacking(*modules), strict=strict))


def foreign_module(name: str, source: str) -> types.ModuleType:
    """A module importable here under ``name``, standing for a package the other side lacks."""
    module = types.ModuleType(name)
    sys.modules[name] = module
    exec(source, module.__dict__)
    return module


def test_numpy_values_become_python_values_for_a_side_without_numpy() -> None:
    out = roundtrip(
        {
            "mean": np.mean([1.0, 2.0]),
            "n": np.int64(3),
            "arr": np.arange(4).reshape(2, 2),
            "dtype": np.dtype("float32"),
            "text": np.str_("hi"),
        },
        "numpy",
    )
    assert out == {"mean": 1.5, "n": 3, "arr": [[0, 1], [2, 3]], "dtype": "float32", "text": "hi"}
    assert [type(v) for v in out.values()] == [float, int, list, str, str]


def test_a_side_that_has_numpy_gets_numpy_back() -> None:
    out = roundtrip({"mean": np.float64(1.5), "arr": np.arange(3)})
    assert type(out["mean"]) is np.float64 and isinstance(out["arr"], np.ndarray)


def test_builtin_subclasses_dataclasses_and_models_of_a_missing_package() -> None:
    fake = foreign_module(
        "i19torchlike",
        "import dataclasses\n"
        "class TorchVersion(str): pass\n"
        "class Size(tuple): pass\n"
        "@dataclasses.dataclass\n"
        "class Box:\n    w: object\n",
    )
    out = roundtrip(
        [fake.TorchVersion("2.13.0"), fake.Size((2, 3)), fake.Box(w=np.float32(2.0))],
        "i19torchlike",
        "numpy",
    )
    assert out == ["2.13.0", (2, 3), {"w": 2.0}]
    assert [type(v) for v in out] == [str, tuple, dict]
    assert type(out[2]["w"]) is float  # converted again inside the converted value


def test_pydantic_models_become_dicts() -> None:
    class Point(pydantic.BaseModel):
        x: int
        y: list[int]

    assert roundtrip(Point(x=1, y=[2]), "pydantic") == {"x": 1, "y": [2]}


def test_a_registered_rule_wins_and_may_name_a_class_without_importing_it() -> None:
    fake = foreign_module("i19geo", "class Point:\n    def __init__(self, x): self.x = x\n")
    register_portable("i19geo.Point", lambda p: {"x": p.x})
    assert roundtrip(fake.Point(5), "i19geo") == {"x": 5}
    with pytest.raises(TypeError, match="takes a class"):
        register_portable(42, str)  # type: ignore[arg-type]


def test_a_value_no_rule_converts_is_named_in_strict_mode_and_sent_as_is_otherwise() -> None:
    fake = foreign_module("i19opaque", "class Handle:\n    pass\n")
    with pytest.raises(pickling.NotPortableError) as caught:
        pickling.dumps({"h": fake.Handle()}, lacking("i19opaque"), strict=True)
    assert caught.value.type_name == "i19opaque.Handle"
    assert "module 'i19opaque'" in str(caught.value)
    assert isinstance(roundtrip(fake.Handle(), "i19opaque"), fake.Handle)


def test_importable_modules_lists_installed_and_standard_modules_without_importing() -> None:
    found = portable.importable_modules()
    assert {"json", "openflash", "numpy", "pydantic"} <= found
    assert "surely_not_a_module_i19" not in found


def test_dataclass_of_the_receivers_own_code_travels_as_it_is() -> None:
    @dataclasses.dataclass
    class Local:
        a: int

    assert roundtrip(Local(1), "numpy") == Local(1)
