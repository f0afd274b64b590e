"""LogitLens in a real JupyterLab: click and keyboard select cells in Python, Python -> view, the target box."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .lab import OUTPUT, NotebookPage, notebook_in_lab

pytestmark = pytest.mark.e2e

VIEW = "[data-testid=logit-lens]"
HEATMAP = f"{VIEW} [data-testid=lens-heatmap]"
MODEL, PROMPT, TARGET, OTHER = (
    "code-2l",
    "def add(a, b):\n    return a + b\n\ndef sub(a, b):\n    return a",
    " -",
    " b",
)  # the bundled model with MLPs, trained on Python


@pytest.fixture(scope="module")
def notebook(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NotebookPage]:
    cells = [
        "import mi_widgets as mw\n"
        f"model = mw.zoo.load({MODEL!r})\n"
        f"lens = mw.LogitLens(model, {PROMPT!r}, target={TARGET!r}, k=5)\n"
        "lens",
    ]
    with notebook_in_lab(tmp_path_factory.mktemp("lab"), "logit_lens.ipynb", cells) as nb:
        nb.page.wait_for_selector(f"{VIEW}[data-revision]:not([data-loading])", timeout=60_000)
        yield nb


def _percent(p: float) -> str:
    """The view's percent format (``percent`` in logit_lens.ts)."""
    v = p * 100
    return f"{v:.1f}%" if v >= 1 else f"{v:#.2g}%" if v >= 0.01 else ("<0.01%" if v > 0 else "0%")


def _display(token: str) -> str:
    """The view's printable token (``displayToken`` in tokens.ts) for the characters these models produce."""
    return token.replace("\n", "\u21b5").replace("\t", "\u21e5") or "\u2205"


def test_click_selects_the_cell_in_python_and_reads_out_its_top_k(notebook: NotebookPage) -> None:
    page = notebook.page
    seq = len(notebook.python_value("lens.tokens"))
    rows = notebook.python_value("lens.rows")
    assert rows[0] == "embed" and len(rows) == notebook.python_value("model.cfg.n_layers") + 1
    assert int(page.locator(HEATMAP).get_attribute("data-cell-text") or 0) == len(rows) * seq  # every top-1 token drawn
    col = seq - 1
    notebook.click_cell(HEATMAP, len(rows) - 1, col)
    expected = {"layer": len(rows) - 1, "position": col}
    assert notebook.python_eventually("lens.selected", expected) == expected
    page.wait_for_selector(f"{VIEW}[data-selected='{len(rows) - 1}:{col}']")
    page.mouse.move(0, 0)  # leave the heatmap: the readout shows the selected cell
    # probabilities travel as float16: round the same way before formatting
    top = notebook.python_value(
        f"[(t, float(__import__('numpy').float16(p))) for t, p in lens.top({len(rows) - 1}, {col})]"
    )
    shown_tokens = page.locator(f"{VIEW} [data-testid=readout-top] .miw-lens-token").all_text_contents()
    shown_probs = page.locator(f"{VIEW} [data-testid=readout-top] .miw-lens-prob").all_text_contents()
    assert shown_tokens == [_display(t) for t, _ in top]
    assert shown_probs == [_percent(p) for _, p in top]
    target = page.locator(f"{VIEW} [data-testid=readout-target]").inner_text()
    rank = notebook.python_value(f"int(lens.target_ranks[{len(rows) - 1}, {col}])")
    assert f"target {TARGET!r}".replace("'", '"') in target and f"(rank {rank})" in target
    view = page.locator(VIEW)
    view.scroll_into_view_if_needed()
    view.screenshot(path=str(OUTPUT / "logit_lens.png"))
    assert (OUTPUT / "logit_lens.png").stat().st_size > 5_000


def test_keyboard_moves_and_selects(notebook: NotebookPage) -> None:
    page = notebook.page
    page.locator(HEATMAP).focus()
    page.keyboard.press("Escape")
    assert notebook.python_eventually("lens.selected", {"layer": None, "position": None}) == {
        "layer": None,
        "position": None,
    }
    for key in ["ArrowDown", "ArrowDown", "ArrowRight", "ArrowRight", "ArrowRight"]:  # cursor from (0, 0) to (1, 3)
        page.keyboard.press(key)
    head = page.locator(f"{VIEW} [data-testid=readout-head]").inner_text()
    assert head.startswith("L0 out · position 3")
    page.keyboard.press("Enter")
    assert notebook.python_eventually("lens.selected", {"layer": 1, "position": 3}) == {"layer": 1, "position": 3}


def test_python_drives_the_view_and_the_target_box_reaches_python(notebook: NotebookPage) -> None:
    page = notebook.page
    notebook.execute('lens.selected = {"layer": 0, "position": 2}')
    page.wait_for_selector(f"{VIEW}[data-selected='0:2']", timeout=10_000)
    revision = notebook.python_value("lens.revision")
    notebook.execute(f"lens.target = {OTHER!r}")
    page.wait_for_selector(f"{VIEW}[data-revision='{revision + 1}']:not([data-loading])", timeout=15_000)
    assert page.locator(f"{VIEW} [data-testid=target-input]").input_value() == OTHER

    box = page.locator(f"{VIEW} [data-testid=target-input]")
    box.fill(" Mary Mary")
    box.press("Enter")
    error = page.locator(f"{VIEW} [data-testid=error]")
    error.wait_for(state="visible", timeout=15_000)
    assert "tokenizes to" in error.inner_text()
    assert notebook.python_value("lens.target") == OTHER  # nothing changed
    box.fill(TARGET)
    box.press("Enter")
    page.wait_for_selector(f"{VIEW}[data-target={TARGET!r}]:not([data-loading])".replace("'", '"'), timeout=15_000)
    assert notebook.python_eventually("lens.target", TARGET) == TARGET
    assert notebook.python_value("1 + 1") == 2
