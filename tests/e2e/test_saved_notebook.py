"""A notebook executed and saved, then read without a kernel: every view's cell carries a picture, the HTML
export (plain and sanitised) shows it, and Chromium draws it offline."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nbformat
import pytest
from nbclient import NotebookClient
from nbconvert import HTMLExporter

from .lab import chromium_browser

pytestmark = pytest.mark.e2e

WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
CELLS = {
    "setup": """import mi_widgets as mw
ioi = mw.zoo.load("ioi-4l")
prompt = "When Mary and John went to the store, John gave a drink to\"""",
    "AttentionView": "mw.AttentionView(ioi, prompt)",
    "LogitLens": 'mw.LogitLens(ioi, prompt, target=" Mary")',
    "LogitAttribution": 'mw.LogitAttribution(ioi, prompt, answer=" Mary", wrong=" John")',
    "ActivationView": 'mw.ActivationView(ioi, prompt, hook="resid_post")',
    "FourierView": 'mw.FourierView(mw.zoo.load("modadd-113"))',
    # background work, displayed once it is done: the picture shows the result
    "HeadScan": 'mw.HeadScan(mw.zoo.load("induction-2l"), n_batches=4, batch_size=8).wait(60)',
    "Grokking": 'run = mw.Grokking(p=23, d_model=32, n_heads=2, d_mlp=64, steps=100, device="cpu")\nrun.run()\nrun',
}
VIEWS = [name for name in CELLS if name != "setup"]
PNG_IMG = re.compile(r'<img[^>]* src="data:image/png;base64,[A-Za-z0-9+/=]+"')


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Any]]:
    """The notebook as JupyterLab saves it by default: outputs, no widget state."""
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(source) for source in CELLS.values()]
    folder = tmp_path_factory.mktemp("saved")
    NotebookClient(nb, timeout=300, kernel_name="python3", store_widget_state=False).execute()
    path = folder / "saved.ipynb"
    nbformat.write(nb, path)
    yield path, nbformat.read(path, as_version=4)


def test_every_view_cell_saves_its_picture_beside_the_live_view(saved: tuple[Path, Any]) -> None:
    _, nb = saved
    for name, cell in zip(CELLS, nb.cells):
        if name == "setup":
            continue
        (output,) = [o for o in cell.outputs if o.get("output_type") in ("execute_result", "display_data")]
        assert WIDGET_VIEW in output.data and "image/png" in output.data, (name, sorted(output.data))
    assert "widgets" not in nb.metadata  # no widget state: nothing to load from a CDN


@pytest.mark.parametrize("sanitize", [False, True], ids=["plain", "sanitised"])
def test_the_html_export_shows_every_picture_offline(saved: tuple[Path, Any], sanitize: bool) -> None:
    path, nb = saved
    html, _ = HTMLExporter(sanitize_html=sanitize).from_notebook_node(nb)
    assert len(PNG_IMG.findall(html)) == len(VIEWS)
    assert "Loading widget" not in html and "unpkg.com" not in html and "widget-view+json" not in html
    page_path = path.with_suffix(f".{'sanitised' if sanitize else 'plain'}.html")
    page_path.write_text(html, encoding="utf-8")
    with chromium_browser() as browser:
        page = browser.new_page()
        requests: list[str] = []
        page.on("request", lambda r: requests.append(r.url))
        # offline: nbconvert's own template asks cdnjs for require.js and MathJax; the pictures need neither
        page.route("http*://**", lambda route: route.abort())
        page.goto(page_path.as_uri())
        drawn = page.evaluate(
            """() => [...document.querySelectorAll('img')]
                 .filter((img) => img.src.startsWith('data:image/png') && img.complete && img.naturalWidth > 200)
                 .length"""
        )
        assert drawn == len(VIEWS)
        assert not [u for u in requests if "widget" in u or "unpkg" in u or "mi_widgets" in u], requests
