"""HeadScan in a real JupyterLab: watch the heatmaps fill, Stop, click a head, check Python."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .lab import OUTPUT, NotebookPage, notebook_in_lab

pytestmark = pytest.mark.e2e

SCAN = "[data-testid=head-scan]"


@pytest.fixture(scope="module")
def notebook(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NotebookPage]:
    cells = [
        "import mi_widgets as mw\n"
        'model = mw.zoo.load("induction-2l")\n'
        "scan = mw.HeadScan(model, n_batches=400, batch_size=32)  # long enough to watch and stop\n"
        "scan",
    ]
    with notebook_in_lab(tmp_path_factory.mktemp("lab"), "scan.ipynb", cells) as nb:
        nb.page.wait_for_selector(SCAN, timeout=60_000)
        yield nb


def test_heatmaps_fill_while_running_then_stop(notebook: NotebookPage) -> None:
    page = notebook.page
    page.wait_for_function(f"() => +document.querySelector('{SCAN}').dataset.done >= 2", timeout=30_000)
    page.wait_for_selector(f"{SCAN}[data-revision]", timeout=10_000)
    filled = page.locator(f"{SCAN} [data-score=induction] [data-testid=score-cell]:not([data-value=''])")
    assert filled.count() == 8  # every head of the 2 x 4 model has a partial score
    page.locator(f"{SCAN} [data-testid=stop-button]").click()
    page.wait_for_selector(f"{SCAN}[data-status=stopped]", timeout=30_000)
    assert notebook.python_value("scan.status") == "stopped"
    done = notebook.python_value("scan.progress['done']")
    assert 2 <= done < 400  # stopped early, partial result kept in Python
    assert notebook.python_value("float(scan.scores['induction'][1].min())") > 0.9
    assert "stopped" in page.locator(f"{SCAN} [data-testid=status]").inner_text()


def test_clicking_a_head_selects_it_and_opens_its_pattern(notebook: NotebookPage) -> None:
    page = notebook.page
    page.locator(f"{SCAN} [data-score=induction] [data-testid=score-cell][data-layer='1'][data-head='2']").click()
    page.wait_for_function(
        "() => { const v = document.querySelector('[data-testid=attention-view]');"
        " return v && (v.dataset.painted || '').endsWith(':1:2'); }",
        timeout=15_000,
    )
    assert notebook.python_value("scan.selected") == {"score": "induction", "layer": 1, "head": 2}
    assert notebook.python_value("scan.attention.selected['head']") == 2
    page.locator(SCAN).screenshot(path=str(OUTPUT / "head_scan.png"))


def test_start_restarts_from_zero_and_stop_works_again(notebook: NotebookPage) -> None:
    page = notebook.page
    before = notebook.python_value("scan.progress['done']")
    page.locator(f"{SCAN} [data-testid=start-button]").click()
    page.wait_for_selector(f"{SCAN}[data-status=running]", timeout=10_000)
    page.wait_for_function(f"() => +document.querySelector('{SCAN}').dataset.done >= 1", timeout=30_000)
    assert page.locator(f"{SCAN} [data-testid=start-button]").is_disabled()
    page.locator(f"{SCAN} [data-testid=stop-button]").click()
    page.wait_for_selector(f"{SCAN}[data-status=stopped]", timeout=30_000)
    progress = notebook.python_value("scan.progress")
    assert progress["total"] == 400 and 1 <= progress["done"] < 400
    assert before >= 2  # the first run's count was replaced by the new run's
