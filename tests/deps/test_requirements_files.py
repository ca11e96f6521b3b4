"""pip requirements files, parsed by the real uv."""

from __future__ import annotations

from pathlib import Path

import pytest

from index_server import serve_index
from openflash import remote
from openflash.deps.requirements_files import read_requirements
from openflash.deps.specs import normalize_dependencies
from openflash.errors import ConfigError, DependencyError

from helpers import make_wheel, run_python, write

EVERY_CONSTRUCT = """\
# a comment line, then a blank one

requests >= 2.31, < 3  # an inline comment and spaces in the range
six==1.17.0 \\
    --hash=sha256:ff70335d468e7eb6ec65b95b99d3a2836546063f63acc5171de367e834932a81
attrs[tests] ; python_version >= "3.8"
-r more/base.txt
"""


def test_every_pip_construct_becomes_a_pep_508_string(tmp_path: Path) -> None:
    write(tmp_path / "requirements.txt", EVERY_CONSTRUCT)
    write(tmp_path / "more" / "base.txt", "idna<4 # included with -r, relative to its file\n")
    found = read_requirements(tmp_path / "requirements.txt")
    assert found == [
        "attrs[tests] ; python_full_version >= '3.8'",
        "idna<4",
        "requests>=2.31,<3",
        "six==1.17.0",
    ]
    # ... each valid as a dependency:
    assert normalize_dependencies(found) == (
        'attrs[tests]; python_full_version >= "3.8"',
        "idna<4",
        "requests<3,>=2.31",
        "six==1.17.0",
    )


def test_a_missing_file_is_named_with_where_relative_paths_start(tmp_path: Path) -> None:
    with pytest.raises(DependencyError) as info:
        read_requirements(tmp_path / "nope.txt")
    assert f"requirements file '{tmp_path / 'nope.txt'}' does not exist" in info.value.message
    assert "directory of the file that calls" in info.value.hint


def test_a_bad_line_gets_uvs_message_naming_it(tmp_path: Path) -> None:
    write(tmp_path / "requirements.txt", "six\nrequests >>= 2\n")
    with pytest.raises(DependencyError) as info:
        read_requirements(tmp_path / "requirements.txt")
    assert "could not be read" in info.value.message
    assert "requests >>= 2" in info.value.message
    assert "pip install -r" in info.value.hint


def test_requirements_are_relative_to_the_calling_file_and_install(
    tmp_path: Path, flash_home: Path
) -> None:
    project = tmp_path / "project"
    write(project / "requirements.txt", "six==1.17.0  # pinned\n")
    app = write(
        project / "app.py",
        """
        import asyncio
        import openflash
        from openflash import CpuLiveServerless, remote

        @remote(CpuLiveServerless(name="req"), dependencies=openflash.requirements("requirements.txt"))
        def version() -> str:
            import six
            return six.__version__

        if __name__ == "__main__":
            print(asyncio.run(version()))
        """,
    )
    done = run_python(app, cwd=tmp_path)  # another working directory than the file's
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "1.17.0"


@pytest.mark.parametrize(
    ("line", "hint"),
    [
        (
            "--index-url https://me:pw-1234@pkgs.example.com/simple",
            "pass index_url='https://***@pkgs.example.com/simple' to remote() or Endpoint()",
        ),
        ("--extra-index-url=https://pkgs.example.com/simple", "extra_index_urls=["),
        ("-f ./wheels", "find_links=['./wheels']"),
        ("--pre", "prerelease='allow'"),
        ("--no-build-isolation", "no_build_isolation=True"),
        ("--only-binary :all:", "pip options are not dependencies"),
    ],
)
def test_an_installer_option_is_refused_naming_the_file_and_line(
    tmp_path: Path, line: str, hint: str
) -> None:
    write(tmp_path / "requirements.txt", f"# options\nsix\n{line}  # set here\n")
    with pytest.raises(DependencyError) as info:
        read_requirements(tmp_path / "requirements.txt")
    said = str(info.value)
    assert f"requirements file '{tmp_path / 'requirements.txt'}', line 3:" in said, said
    assert "is an installer option, which openflash.requirements() does not apply" in said
    assert hint in said
    assert "pw-1234" not in said


def test_a_constraints_file_in_an_include_is_refused_with_uv_constraint(tmp_path: Path) -> None:
    write(tmp_path / "requirements.txt", "six\n-r more/base.txt\n")
    write(tmp_path / "more" / "base.txt", "idna \\\n  <4\n\n-c ../constraints.txt\n")
    write(tmp_path / "constraints.txt", "urllib3<3\n")
    with pytest.raises(DependencyError) as info:
        read_requirements(tmp_path / "requirements.txt")
    said = str(info.value)
    base = (tmp_path / "more" / "base.txt").resolve()
    assert f"requirements file '{base}', line 4: '-c ../constraints.txt'" in said, said
    assert f"set UV_CONSTRAINT={(tmp_path / 'constraints.txt').resolve()}" in said


def test_the_requirements_keyword_adds_a_file_to_dependencies_of_both_decorators(
    tmp_path: Path, flash_home: Path
) -> None:
    project = tmp_path / "project"
    write(project / "requirements.txt", "six==1.17.0  # pinned\n-r base.txt\n")
    write(project / "base.txt", "idna==3.10\n")
    app = write(
        project / "app.py",
        """
        import asyncio
        from openflash import CpuLiveServerless, Endpoint, remote

        @remote(CpuLiveServerless(name="req-kw"), requirements="requirements.txt")
        def versions() -> str:
            import idna, six
            return six.__version__ + " " + idna.__version__

        @Endpoint(name="req-ep", dependencies=["six==1.17.0"], requirements="base.txt")
        def idna_version() -> str:
            import idna
            return idna.__version__

        if __name__ == "__main__":
            print(asyncio.run(versions()), asyncio.run(idna_version()))
            print(sorted(versions.endpoint.dependencies), idna_version.endpoint.dependencies)
        """,
    )
    done = run_python(app, cwd=tmp_path)  # the file's folder is the base, not the working one
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "1.17.0 3.10 3.10",
        "['idna==3.10', 'six==1.17.0'] ('idna==3.10', 'six==1.17.0')",
    ]


def test_the_requirements_keyword_names_a_bad_value() -> None:
    with pytest.raises(ConfigError, match=r"remote\(\): requirements must be the path of"):
        remote(requirements=["requirements.txt"])(lambda: None)  # type: ignore[arg-type]
    with pytest.raises(DependencyError, match=r"no-such-file\.txt"):
        remote(requirements="no-such-file.txt")(lambda: None)


def test_requirements_keyword_applies_the_files_installer_options_and_constraints(
    tmp_path: Path, flash_home: Path
) -> None:
    """pip's -r semantics, options included: a private index with basic auth (a loopback index,
    tests/index_server.py; its password never printed), find-links relative to the file, a -c
    constraints file, and an include, for requirements=."""
    project = tmp_path / "project"
    for version in ("1.0", "2.0"):
        make_wheel(tmp_path / "index", "acme_req", version, {"acme_req.py": f"V = {version!r}\n"})
    make_wheel(tmp_path / "index", "acme_more", "1.5", {"acme_more.py": "V = '1.5'\n"})
    make_wheel(project / "wheels", "acme_linked", "3.0", {"acme_linked.py": "V = '3.0'\n"})
    write(project / "constraints.txt", "acme-req<2\n")
    write(project / "more.txt", 'acme-more ; python_version >= "3"\n')
    app = write(
        project / "app.py",
        """
        import asyncio
        from openflash import CpuLiveServerless, remote

        @remote(CpuLiveServerless(name="req-options"), requirements="requirements.txt")
        def versions() -> str:
            import acme_linked, acme_more, acme_req
            return " ".join((acme_req.V, acme_more.V, acme_linked.V))

        if __name__ == "__main__":
            print(asyncio.run(versions()))
        """,
    )
    secret = "pw-req-7781"
    with serve_index(tmp_path / "index", auth=f"alice:{secret}") as (url, requests):
        private = url.replace("http://", f"http://alice:{secret}@")
        write(
            project / "requirements.txt",
            f"# the index, with its credentials\n--index-url {private}\n"
            "--find-links ./wheels\n-c constraints.txt\nacme-req  # bounded by the constraint\n"
            "acme-linked>=3\n-r more.txt\n",
        )
        done = run_python(app, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == "1.0 1.5 3.0"
    assert any(r.startswith("/simple/acme-req") for r in requests)
    assert secret not in done.stdout + done.stderr
    # An option requirements= does not apply is refused, naming the file and the line.
    write(project / "binary.txt", "acme-req\n--only-binary :all:\n")
    with pytest.raises(DependencyError, match=r"binary\.txt', line 2: '--only-binary :all:'"):
        remote(requirements=str(project / "binary.txt"))(lambda: None)
