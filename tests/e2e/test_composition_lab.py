"""CompositionView in a real JupyterLab: switch modes, click a pair, check Python, Python -> view."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .lab import OUTPUT, NotebookPage, notebook_in_lab

pytestmark = pytest.mark.e2e

VIEW = "[data-testid=composition]"


@pytest.fixture(scope="module")
def notebook(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NotebookPage]:
    cells = [
        "import mi_widgets as mw\n"
        'model = mw.zoo.load("induction-2l")\n'
        'comp = mw.CompositionView(model, mode="K")\n'
        "comp",
    ]
    with notebook_in_lab(tmp_path_factory.mktemp("lab"), "composition.ipynb", cells) as nb:
        nb.page.wait_for_selector(f"{VIEW}[data-mode=K][data-revision]:not([data-loading])", timeout=60_000)
        yield nb


def test_click_a_pair_selects_it_in_python(notebook: NotebookPage) -> None:
    page = notebook.page
    notebook.click_cell(
        f"{VIEW} [data-testid=composition-heatmap]", row=2, col=4 + 3
    )  # writer L0H2 (the previous-token head), reader L1H3
    assert notebook.python_eventually("comp.selected", {"writer": [0, 2], "reader": [1, 3]}) == {
        "writer": [0, 2],
        "reader": [1, 3],
    }
    readout = page.locator(f"{VIEW} [data-testid=readout]").inner_text()
    # the view shows the float16 it was sent, to three places
    expected = notebook.python_value("f'{float(comp.scores(\"K\")[0, 2, 1, 3].half()):.3f}'")
    assert f"L0H2 → L1H3: K-composition {expected}" in readout
    page.locator(VIEW).screenshot(path=str(OUTPUT / "composition.png"))


def test_mode_buttons_reach_python_and_python_reaches_the_view(notebook: NotebookPage) -> None:
    page = notebook.page
    page.locator(f"{VIEW} [data-testid=mode-V]").click()
    page.wait_for_selector(f"{VIEW}[data-mode=V]:not([data-loading])", timeout=15_000)
    assert notebook.python_eventually("comp.mode", "V") == "V"
    notebook.execute('comp.mode = "Q"; comp.selected = {"writer": [0, 1], "reader": [1, 0]}')
    page.wait_for_selector(f"{VIEW}[data-mode=Q][data-selected='L0H1>L1H0']:not([data-loading])", timeout=15_000)
    assert "L0H1 → L1H0: Q-composition" in page.locator(f"{VIEW} [data-testid=readout]").inner_text()


def test_keyboard_and_a_pair_that_cannot_compose(notebook: NotebookPage) -> None:
    page = notebook.page
    heatmap = page.locator(f"{VIEW} [data-testid=composition-heatmap]")
    heatmap.focus()
    page.keyboard.press("Escape")
    assert notebook.python_eventually("comp.selected", {"writer": None, "reader": None}) == {
        "writer": None,
        "reader": None,
    }
    for key in ["ArrowDown"] * 6 + ["ArrowRight"]:  # cursor from (0, 0) to row 5 = L1H1, col 1 = L0H1
        page.keyboard.press(key)
    page.keyboard.press("Enter")
    assert "no composition" in page.locator(f"{VIEW} [data-testid=readout]").inner_text()
    assert notebook.python_value("comp.selected") == {"writer": None, "reader": None}
