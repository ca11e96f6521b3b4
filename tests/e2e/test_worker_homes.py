"""Each (environment, layer) pair has its own HOME and XDG folders: matplotlib's font cache,
written by the endpoint without a font package, never hides the font another endpoint's layer
brings, whichever runs first (real apt, real namespaces, real workers)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from openflash import CpuLiveServerless, remote
from openflash.deps.namespace_mode import layer_mode

pytestmark = pytest.mark.skipif(
    not layer_mode().namespaces, reason="this kernel refuses unprivileged namespaces"
)
FONT = "WenQuanYi Zen Hei"


def _fonts() -> dict:
    import os

    from matplotlib import font_manager

    names = {f.name for f in font_manager.fontManager.ttflist}
    return {"has_font": "WenQuanYi Zen Hei" in names, "home": os.environ["HOME"]}


plain = remote(CpuLiveServerless(name="fonts-plain"), dependencies=["matplotlib"])(_fonts)
with_font = remote(
    CpuLiveServerless(name="fonts-wqy"),
    dependencies=["matplotlib"],
    system_dependencies=["fonts-wqy-zenhei"],
)(_fonts)


@pytest.mark.parametrize("first", ["plain", "with_font"])
def test_a_font_package_is_seen_whichever_endpoint_ran_first(fresh_home: Path, first: str) -> None:
    order = [plain, with_font] if first == "plain" else [with_font, plain]
    seen = {}
    for endpoint in order:
        seen[endpoint] = asyncio.run(endpoint())
    assert seen[plain]["has_font"] is False
    assert seen[with_font]["has_font"] is True
    assert seen[plain]["home"] != seen[with_font]["home"]
    assert all(s["home"].startswith(str(fresh_home)) for s in seen.values())
    # matplotlib wrote its font list into each pair's own cache
    for s in seen.values():
        assert list(Path(s["home"], ".cache", "matplotlib").glob("fontlist-*.json"))
