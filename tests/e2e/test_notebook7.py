"""The views in Jupyter Notebook 7 (not JupyterLab): AttentionView (render, click a head, Python sees it, a new
prompt re-runs the model) and a streaming widget (HeadScan fills in, Stop from the view)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from .lab import OUTPUT, NotebookPage, cell_point, notebook_in_lab

pytestmark = pytest.mark.e2e

VIEW = "[data-testid=attention-view]"
SCAN = "[data-testid=head-scan]"
FIRST = f"document.querySelectorAll('{VIEW}')[0]"  # the AttentionView cell's (HeadScan shows one of its own)
CELLS = [
    'import mi_widgets as mw\nmodel = mw.zoo.load("induction-2l")',
    'view = mw.AttentionView(model, "The cat sat on the mat. The cat sat on the", layer=1, head=0)\nview',
    "scan = mw.HeadScan(model, n_batches=400, batch_size=32)\nscan",
]


@pytest.fixture(scope="module")
def notebook(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NotebookPage]:
    with notebook_in_lab(tmp_path_factory.mktemp("nb7"), "nb7.ipynb", CELLS, app="notebook") as nb:
        revision = int(nb.python_value("view.revision"))
        nb.page.wait_for_function(f"() => {FIRST}?.dataset.painted === '{revision}:1:0'", timeout=60_000)
        yield nb
        nb.execute("scan.stop(); scan.wait()")


def test_it_is_notebook_7(notebook: NotebookPage) -> None:
    assert "/notebooks/nb7.ipynb" in notebook.page.url
    assert notebook.page.locator("#main-panel").count() == 1  # Notebook 7's shell, not JupyterLab's dock panel
    assert notebook.page.locator("#jp-main-dock-panel").count() == 0


def test_attention_view_click_a_head_and_rerun_a_prompt(notebook: NotebookPage) -> None:
    page = notebook.page
    view = page.locator(VIEW).first
    page.mouse.click(*cell_point(page, f"{VIEW} >> nth=0 >> [data-testid=head-grid]", row=0, col=2))  # layer 0, head 2
    assert notebook.python_eventually("[view.selected['layer'], view.selected['head']]", [0, 2]) == [0, 2]
    revision = int(notebook.python_value("view.revision"))
    page.wait_for_function(f"() => {FIRST}.dataset.painted === '{revision}:0:2'", timeout=10_000)

    view.locator("[data-testid=prompt-input]").fill("One two three four. One two three four.")
    view.locator("[data-testid=run-button]").click()
    page.wait_for_function(f"() => +{FIRST}.dataset.revision > {revision}", timeout=30_000)
    assert notebook.python_value("view.prompt") == "One two three four. One two three four."
    tokens = notebook.python_value("view.tokens")
    assert view.locator("[data-testid=token-strip] [data-testid=token]").count() == len(tokens)
    view.screenshot(path=str(OUTPUT / "notebook7_attention.png"))


def test_head_scan_fills_in_and_stops_from_the_view(notebook: NotebookPage) -> None:
    page = notebook.page
    scan = page.locator(SCAN)
    scan.scroll_into_view_if_needed()
    page.wait_for_function(f"() => +document.querySelector('{SCAN}').dataset.done >= 2", timeout=30_000)
    filled = page.locator(f"{SCAN} [data-score=induction] [data-testid=score-cell]:not([data-value=''])")
    deadline = time.monotonic() + 10
    while filled.count() < 8 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert filled.count() == 8
    page.locator(f"{SCAN} [data-testid=stop-button]").click()
    page.wait_for_selector(f"{SCAN}[data-status=stopped]", timeout=30_000)
    assert notebook.python_value("scan.status") == "stopped"
    assert 2 <= notebook.python_value("scan.progress['done']") < 400
