"""The front-end build: every view in js/src/views is bundled and served by exactly one widget."""

from __future__ import annotations

import re

from .conftest import ROOT

VIEWS = ROOT / "js" / "src" / "views"
STATIC = ROOT / "mi_widgets" / "static"
WIDGETS = ROOT / "mi_widgets" / "widgets"


def _assets_used() -> list[str]:
    names: list[str] = []
    for module in sorted(WIDGETS.glob("*.py")):
        names += re.findall(r'static_asset\("([\w.]+)"\)', module.read_text(encoding="utf-8"))
    return names


def test_every_view_is_built_and_used_by_one_widget() -> None:
    views = sorted(p.stem for p in VIEWS.glob("*.ts"))
    assert views, "no views found"
    used = _assets_used()
    for view in views:
        assert (STATIC / f"{view}.js").is_file(), f"{view}.ts is not built: run npm run build"
        assert used.count(f"{view}.js") == 1, f"{view}.js is used by {used.count(f'{view}.js')} widgets, expected 1"
        if (VIEWS / f"{view}.css").exists():
            assert (STATIC / f"{view}.css").is_file() and f"{view}.css" in used, f"{view}.css is not built or not used"
    stray = sorted({name.rsplit(".", 1)[0] for name in used} - set(views))
    assert not stray, f"widgets use assets with no view in js/src/views: {stray}"
