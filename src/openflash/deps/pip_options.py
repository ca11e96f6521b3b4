"""pip options written into a dependency list, and uv's own variables that change a resolution.

``"--extra-index-url URL"`` in ``dependencies=[...]`` is a pip option, not a PEP 508 requirement;
``option_hint`` says what gives the same effect with openflash: uv's environment variables
(``UV_INDEX_URL``, ``UV_EXTRA_INDEX_URL``, ``UV_FIND_LINKS``, ``UV_PRERELEASE``,
``UV_NO_BUILD_ISOLATION``), which uv reads when openflash runs it, or a local version such as
``torch==2.1.0+cu121``. ``resolution_environ`` is the part of the environment that changes what uv
resolves, so that it is part of a resolution's key (only hashed: a password in an index URL is
never written anywhere).
"""

from __future__ import annotations

import os
import re

from openflash.envs.uv_options import redact_url

__all__ = ["RESOLUTION_VARIABLES", "option_hint", "redact_url", "resolution_environ"]

#: uv's variables that change which versions a resolution picks or how packages are built.
RESOLUTION_VARIABLES = (
    "UV_INDEX",
    "UV_INDEX_URL",
    "UV_DEFAULT_INDEX",
    "UV_EXTRA_INDEX_URL",
    "UV_FIND_LINKS",
    "UV_NO_INDEX",
    "UV_PRERELEASE",
    "UV_INDEX_STRATEGY",
    "UV_TORCH_BACKEND",
    "UV_NO_BUILD_ISOLATION",
    "UV_NO_BINARY",
    "UV_ONLY_BINARY",
    "UV_CONSTRAINT",
    "UV_OVERRIDE",
    "UV_EXCLUDE_NEWER",
)
_OPTION = re.compile(r"^(-[A-Za-z]|--[A-Za-z-]+)(?:[ =]\s*(\S.*))?$")
_ARGUMENT_FOR = {
    "--index-url": "index_url={shown!r}",
    "-i": "index_url={shown!r}",
    "--extra-index-url": "extra_index_urls=[{shown!r}]",
    "--find-links": "find_links=[{shown!r}]",
    "-f": "find_links=[{shown!r}]",
}
_ENV_FOR = {
    "--index-url": "UV_INDEX_URL",
    "-i": "UV_INDEX_URL",
    "--extra-index-url": "UV_EXTRA_INDEX_URL",
    "--find-links": "UV_FIND_LINKS",
    "-f": "UV_FIND_LINKS",
}


def resolution_environ(environ: dict[str, str] | None = None) -> dict[str, str]:
    """The values of ``RESOLUTION_VARIABLES`` that are set (uv reads them; they key resolutions)."""
    env = os.environ if environ is None else environ
    return {name: env[name] for name in RESOLUTION_VARIABLES if env.get(name)}


def option_hint(text: str) -> str | None:
    """What to do instead of the pip option ``text`` in a dependency list; None if not one."""
    match = _OPTION.match(text.strip())
    if not match:
        return None
    option, value = match[1], (match[2] or "").strip()
    shown = redact_url(value) if value else "URL"
    if option in _ENV_FOR:
        variable = _ENV_FOR[option]
        torch = ""
        if "download.pytorch.org" in value:
            torch = (
                "; for PyTorch builds, pinning the build is enough: 'torch==2.4.1+cpu' or "
                "'torch==2.4.1+cu121'"
            )
        argument = _ARGUMENT_FOR[option].format(shown=shown)
        return (
            f"{option} is a pip option, not a dependency: pass {argument} to remote() or "
            f"Endpoint() (or [tool.openflash] in pyproject.toml), or set {variable}={shown} in "
            f"the environment that runs openflash (uv reads it for every resolution){torch}"
        )
    if option in ("-r", "--requirement"):
        return (
            "a requirements file is not a dependency: write "
            f"dependencies=openflash.requirements({value or 'requirements.txt'!r})"
        )
    if option in ("-c", "--constraint"):
        return f"constraints are not dependencies: set UV_CONSTRAINT={value or 'FILE'}"
    if option == "--pre":
        return (
            "--pre is not a dependency: pass prerelease='allow' to remote() or Endpoint(), set "
            "UV_PRERELEASE=allow, or pin a pre-release (pkg>=2.0b1)"
        )
    if option == "--no-build-isolation":
        return (
            "--no-build-isolation is not a dependency: pass no_build_isolation=True (or "
            "package names) to remote() or Endpoint(), or set UV_NO_BUILD_ISOLATION=1 in the "
            "environment that runs openflash"
        )
    return "pip options are not dependencies; list package requirements only"
