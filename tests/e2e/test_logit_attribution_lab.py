"""LogitAttribution in a real JupyterLab: click a head and a bar, keyboard, Python -> view, exact values."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .lab import OUTPUT, NotebookPage, notebook_in_lab

pytestmark = pytest.mark.e2e

VIEW = "[data-testid=logit-attribution]"
HEATMAP = f"{VIEW} [data-testid=heads-heatmap]"
MODEL, PROMPT, ANSWER, WRONG = (
    "code-2l",
    "def add(a, b):\n    return a + b\n\ndef sub(a, b):\n    return a",
    " -",
    " +",
)  # the bundled model with MLPs, trained on Python


@pytest.fixture(scope="module")
def notebook(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NotebookPage]:
    cells = [
        "import mi_widgets as mw\n"
        f"model = mw.zoo.load({MODEL!r})\n"
        f"attr = mw.LogitAttribution(model, {PROMPT!r}, answer={ANSWER!r}, wrong={WRONG!r})\n"
        "attr",
    ]
    with notebook_in_lab(tmp_path_factory.mktemp("lab"), "logit_attribution.ipynb", cells) as nb:
        nb.page.wait_for_selector(f"{VIEW}[data-revision]:not([data-loading])", timeout=60_000)
        yield nb


def _signed(v: float, digits: int) -> str:
    """The view's number format (``signed`` in logit_attribution.ts): a real minus sign."""
    return f"{'−' if v < 0 else '+'}{abs(v):.{digits}f}"


def test_renders_the_total_and_clicking_a_head_selects_it(notebook: NotebookPage) -> None:
    page = notebook.page
    total = notebook.python_value("attr.total")
    assert abs(total - notebook.python_value("sum(attr.parts.values())")) < 1e-4
    summary = page.locator(f"{VIEW} [data-testid=summary]").inner_text()
    assert summary.startswith(f'logit("{ANSWER}") − logit("{WRONG}") at position') and summary.endswith(
        _signed(total, 4)
    )
    n_cells = notebook.python_value("attr.n_layers * attr.n_heads")
    assert int(page.locator(HEATMAP).get_attribute("data-cell-text") or 0) == n_cells  # values drawn in the cells
    notebook.click_cell(HEATMAP, 1, 2)
    expected = {"layer": 1, "head": 2, "component": "head"}
    assert notebook.python_eventually("attr.selected", expected) == expected
    page.wait_for_selector(f"{VIEW}[data-selected=L1H2]")
    page.mouse.move(0, 0)
    value = notebook.python_value("float(attr.heads[1, 2])")
    assert page.locator(f"{VIEW} [data-testid=readout]").inner_text().startswith(f"L1H2: {_signed(value, 6)}")
    view = page.locator(VIEW)
    view.scroll_into_view_if_needed()
    view.screenshot(path=str(OUTPUT / "logit_attribution.png"))
    assert (OUTPUT / "logit_attribution.png").stat().st_size > 5_000


def test_keyboard_on_heads_and_bars(notebook: NotebookPage) -> None:
    page = notebook.page
    page.locator(HEATMAP).focus()
    page.keyboard.press("Escape")
    cleared = {"layer": None, "head": None, "component": None}
    assert notebook.python_eventually("attr.selected", cleared) == cleared
    for key in ["ArrowDown", "ArrowRight", "ArrowDown"]:  # cursor from (0, 0) to (1, 1)
        page.keyboard.press(key)
    page.keyboard.press("Enter")
    expected = {"layer": 1, "head": 1, "component": "head"}
    assert notebook.python_eventually("attr.selected", expected) == expected

    page.locator(f"{VIEW} [data-testid=bar-attn-0]").focus()
    page.keyboard.press("ArrowDown")  # next bar: layer 0's MLP if the model has MLPs, else layer 1's attention
    has_mlp = notebook.python_value("attr.has_mlp")
    page.keyboard.press("Enter")
    expected = (
        {"layer": 0, "head": None, "component": "mlp"} if has_mlp else {"layer": 1, "head": None, "component": "attn"}
    )
    assert notebook.python_eventually("attr.selected", expected) == expected
    name = "mlps[0]" if has_mlp else "attn[1]"
    value = notebook.python_value(f"float(attr.{name})")
    assert _signed(value, 6) in page.locator(f"{VIEW} [data-testid=readout]").inner_text()


def test_click_a_bar_and_python_drives_the_view(notebook: NotebookPage) -> None:
    page = notebook.page
    notebook.execute("attr.selected = {}")  # from Python: nothing selected (a click on a selected bar unselects it)
    page.wait_for_selector(f"{VIEW}[data-selected='']", timeout=10_000)
    page.locator(f"{VIEW} [data-testid=bar-attn-1]").click()
    expected = {"layer": 1, "head": None, "component": "attn"}
    assert notebook.python_eventually("attr.selected", expected) == expected
    assert page.locator(f"{VIEW} [data-testid=bar-attn-1]").get_attribute("aria-pressed") == "true"
    notebook.execute('attr.selected = {"layer": 0, "head": 3}')
    page.wait_for_selector(f"{VIEW}[data-selected=L0H3]", timeout=10_000)
    assert page.locator(f"{VIEW} [data-testid=bar-attn-1]").get_attribute("aria-pressed") == "false"
    terms = page.locator(f"{VIEW} [data-testid=terms]").inner_text()
    embed = notebook.python_value('attr.parts["embed"]')
    assert f"embed {_signed(embed, 4)}" in terms and "ln_final bias" in terms
