from __future__ import annotations

from pathlib import Path

import pytest

from openflash.deps.specs import normalize_dependencies, normalize_system_dependencies
from openflash.errors import DependencyError, SystemDependencyError


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("torch==2.1.0", "torch==2.1.0"),
        ("Pillow>=10.0.0", "pillow>=10.0.0"),
        ("numpy<2.0.0", "numpy<2.0.0"),
        ("requests~=2.31.0", "requests~=2.31.0"),
        ("pandas", "pandas"),
        ("  requests  ", "requests"),
        ("python_dateutil<3.0.0", "python-dateutil<3.0.0"),
        ("Typing.Extensions", "typing-extensions"),
        ("numpy==1.26.*", "numpy==1.26.*"),
        ("numpy>=1.20,<2", "numpy<2,>=1.20"),
        ("torchvision==0.16.0+cu121", "torchvision==0.16.0+cu121"),
        ("requests[SOCKS, Security]>=2", "requests[security,socks]>=2"),
        ("pywin32; sys_platform == 'win32'", 'pywin32; sys_platform == "win32"'),
        (
            "pkg @ https://example.com/pkg-1.0-py3-none-any.whl",
            "pkg @ https://example.com/pkg-1.0-py3-none-any.whl",
        ),
    ],
)
def test_every_form_of_the_user_guide_is_accepted_and_normalised(spec: str, expected: str) -> None:
    assert normalize_dependencies([spec]) == (expected,)


def test_none_and_empty_lists_mean_no_dependencies() -> None:
    assert normalize_dependencies(None) == ()
    assert normalize_dependencies([]) == ()


def test_result_is_sorted_so_equal_sets_compare_equal() -> None:
    a = normalize_dependencies(["requests", "Pillow>=10", "numpy<2"])
    b = normalize_dependencies(["numpy<2", "pillow>=10", "Requests"])
    assert a == b == ("numpy<2", "pillow>=10", "requests")


def test_duplicates_and_case_variants_are_merged() -> None:
    assert normalize_dependencies(["Pillow>=10", "pillow<12", "PILLOW>=10"]) == ("pillow<12,>=10",)
    assert normalize_dependencies(["six", "six"]) == ("six",)
    assert normalize_dependencies(["Foo_Bar[x]", "foo-bar[y]==1"]) == ("foo-bar[x,y]==1",)


def test_same_name_with_different_markers_stays_separate() -> None:
    result = normalize_dependencies(
        ["numpy<2; python_version < '3.12'", "numpy; python_version >= '3.12'"]
    )
    assert len(result) == 2


def test_two_different_sources_for_one_package_are_an_error() -> None:
    with pytest.raises(DependencyError, match=r"names 'pkg' again with a different source"):
        normalize_dependencies(["pkg @ https://a/pkg-1-py3-none-any.whl", "pkg==1"])


@pytest.mark.parametrize(
    ("spec", "hint"),
    [
        ("numpy>>1", "PEP 508"),
        ("torch=2.1", "did you mean 'torch==2.1'?"),
        ("a b", "one requirement per string: ['a', 'b']"),
        ("requests~=2", "'~=' needs at least two version parts"),
        ("-r requirements.txt", "openflash.requirements"),
        ("numpy>=1 <2", "PEP 508"),
        ("numpy;;", "PEP 508"),
    ],
)
def test_invalid_strings_name_the_string_its_index_and_why(spec: str, hint: str) -> None:
    with pytest.raises(DependencyError) as info:
        normalize_dependencies(["requests", spec])
    message = str(info.value)
    assert f"dependencies[1] {spec!r} is not a valid requirement" in message
    assert "^" in message  # packaging's caret under the bad part
    assert hint in info.value.hint


def test_empty_string_is_named() -> None:
    with pytest.raises(DependencyError, match=r"dependencies\[0\] is an empty string"):
        normalize_dependencies([""])
    with pytest.raises(DependencyError, match=r"dependencies\[1\] is an empty string"):
        normalize_dependencies(["six", "   "])


def test_non_strings_and_a_bare_string_are_rejected() -> None:
    with pytest.raises(DependencyError, match=r"dependencies\[0\] is 3 \(int\), not a string"):
        normalize_dependencies([3])  # type: ignore[list-item]
    with pytest.raises(
        DependencyError, match=r"must be a list of strings, got the string 'numpy'"
    ) as info:
        normalize_dependencies("numpy")  # type: ignore[arg-type]
    assert "dependencies=['numpy']" in info.value.hint
    with pytest.raises(DependencyError, match="got int"):
        normalize_dependencies(5)  # type: ignore[arg-type]


def test_local_wheel_paths_become_file_urls(tmp_path: Path) -> None:
    wheel = tmp_path / "wheels" / "Demo_Pkg-1.0-py3-none-any.whl"
    wheel.parent.mkdir()
    wheel.write_bytes(b"")
    url = wheel.resolve().as_uri()
    assert normalize_dependencies([str(wheel)]) == (f"demo-pkg @ {url}",)
    assert normalize_dependencies(["wheels/Demo_Pkg-1.0-py3-none-any.whl"], base_dir=tmp_path) == (
        f"demo-pkg @ {url}",
    )
    assert normalize_dependencies([f"demo-pkg @ {url}"]) == (f"demo-pkg @ {url}",)
    assert normalize_dependencies(
        ["demo-pkg @ ./wheels/Demo_Pkg-1.0-py3-none-any.whl"], base_dir=tmp_path
    ) == (f"demo-pkg @ {url}",)


def test_missing_local_wheel_is_named(tmp_path: Path) -> None:
    with pytest.raises(DependencyError, match="names a local path that does not exist") as info:
        normalize_dependencies(["./nope-1.0-py3-none-any.whl"], base_dir=tmp_path)
    assert str(tmp_path / "nope-1.0-py3-none-any.whl") in str(info.value)


def test_badly_named_wheel_is_rejected(tmp_path: Path) -> None:
    bad = tmp_path / "notawheel.whl"
    bad.write_bytes(b"")
    with pytest.raises(DependencyError, match="is not a wheel file name"):
        normalize_dependencies([str(bad)])


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("ffmpeg", "ffmpeg"),
        ("libgl1", "libgl1"),
        ("libglib2.0-0", "libglib2.0-0"),
        ("g++", "g++"),
        ("libsndfile1", "libsndfile1"),
        ("git", "git"),
        ("wget", "wget"),
        ("graphviz", "graphviz"),
        ("libc6:amd64", "libc6:amd64"),
        ("ffmpeg=7:5.1.6-0+deb12u1", "ffmpeg=7:5.1.6-0+deb12u1"),
        ("curl:amd64=7.88.1-10+deb12u8", "curl:amd64=7.88.1-10+deb12u8"),
        (" wget ", "wget"),
    ],
)
def test_debian_names_are_accepted(name: str, expected: str) -> None:
    assert normalize_system_dependencies([name]) == (expected,)


def test_system_dependencies_are_sorted_and_deduplicated() -> None:
    assert normalize_system_dependencies(["wget", "ffmpeg", "wget"]) == ("ffmpeg", "wget")
    assert normalize_system_dependencies(None) == ()


@pytest.mark.parametrize(
    "bad",
    [
        "ffmpeg; rm -rf /",
        "$(reboot)",
        "`id`",
        "-o",
        "--allow-unauthenticated",
        "a b",
        "f",
        "lib gl",
        "ffmpeg && ls",
        "../etc",
        "Ffmpeg",
        "ffmpeg=",
        "ffmpeg:",
        "",
        "x|y",
        "pkg\nother",
    ],
)
def test_anything_else_is_rejected_naming_the_entry(bad: str) -> None:
    with pytest.raises(SystemDependencyError) as info:
        normalize_system_dependencies(["wget", bad])
    reason = "contains the control" if "\n" in bad else "is not a Debian package name"
    assert f"system_dependencies[1] {bad!r} {reason}" in str(info.value)


def test_system_dependency_hints() -> None:
    with pytest.raises(SystemDependencyError) as info:
        normalize_system_dependencies(["FFmpeg"])
    assert "did you mean 'ffmpeg'?" in info.value.hint
    with pytest.raises(SystemDependencyError) as info:
        normalize_system_dependencies(["-y"])
    assert "apt options are not allowed" in info.value.hint
    with pytest.raises(SystemDependencyError, match="got the string 'ffmpeg'"):
        normalize_system_dependencies("ffmpeg")  # type: ignore[arg-type]
