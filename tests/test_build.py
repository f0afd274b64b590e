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


_INTERFACE = re.compile(r"export interface (\w+Traits) extends (\w+) \{(.*?)\n\}", re.S)
_FIELD = re.compile(r"^\s+(\w+)\??:", re.M)
_INHERITED = {"BaseTraits": {"revision", "error"}, "ScanTraits": {"revision", "error", "status", "progress"}}


def _ts_traits(view: str) -> set[str]:
    """The fields of the view's ``export interface XTraits extends BaseTraits|ScanTraits`` (with the inherited ones)."""
    found = _INTERFACE.findall((VIEWS / f"{view}.ts").read_text(encoding="utf-8"))
    assert len(found) == 1, f"{view}.ts must declare one `export interface <Name>Traits extends BaseTraits|ScanTraits`"
    _, parent, body = found[0]
    assert parent in _INHERITED, f"{view}.ts: {parent} is not a known trait interface"
    return set(_FIELD.findall(body)) | _INHERITED[parent]


def test_every_view_declares_its_widgets_traits() -> None:
    """A view's trait interface names exactly the widget's synced traits, so a typo in a view is a compile error
    and a trait added in Python without the view knowing it fails here."""
    import importlib

    from mi_widgets.widgets.base import ProtocolWidget

    framework = {n for n in ProtocolWidget.class_trait_names(sync=True) if n != "revision"}
    for module_path in sorted(WIDGETS.glob("*.py")):
        views = re.findall(r'static_asset\("(\w+)\.js"\)', module_path.read_text(encoding="utf-8"))
        if not views:
            continue
        module = importlib.import_module(f"mi_widgets.widgets.{module_path.stem}")
        widgets = [
            c
            for c in vars(module).values()
            if isinstance(c, type) and issubclass(c, ProtocolWidget) and c.__module__ == module.__name__
        ]
        # One class declares the view (``_esm``); its subclasses in the module (PathPatching) share it and its traits.
        owners = [c for c in widgets if "_esm" in vars(c)]
        assert len(owners) == 1, f"{module_path.name}: expected one widget class with _esm, found {owners}"
        for other in widgets:
            assert other.class_trait_names(sync=True) == owners[0].class_trait_names(sync=True), other
        widgets = owners
        python = {n for n in widgets[0].class_trait_names(sync=True) if not n.startswith("_")} - framework
        python |= {"error"} & set(widgets[0].class_trait_names())
        ts = _ts_traits(views[0])
        if "error" not in python:
            ts.discard("error")  # BaseTraits.error is optional: only widgets that report errors have it
        assert ts == python, (
            f"{views[0]}.ts traits differ from {widgets[0].__name__}'s: "
            f"only in TS {sorted(ts - python)}, only in Python {sorted(python - ts)}"
        )
