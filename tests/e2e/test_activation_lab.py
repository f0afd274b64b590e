"""ActivationView in a real JupyterLab: pick a neuron by typing and from the top-neurons list, click
and key through tokens, check ``view.selected`` in Python, and drive the view from Python."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from typing import Any

import pytest

from .lab import OUTPUT, NotebookPage, notebook_in_lab

pytestmark = pytest.mark.e2e

VIEW = "[data-testid=activation-view]"
PROMPTS = [
    'def add(a, b):\n    """Return the sum of a and b."""\n    return a + b  # no overflow check\n',
    'for i in range(10):\n    print("item", i)\n',
]

MODEL_CELL = (
    'import mi_widgets as mw\nmodel = mw.zoo.load("code-2l")  # the bundled model with MLPs, trained on stdlib sources'
)


@pytest.fixture(scope="module")
def notebook(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NotebookPage]:
    cells = [MODEL_CELL, f'view = mw.ActivationView(model, {PROMPTS!r}, hook="mlp.post")\nview']
    with notebook_in_lab(tmp_path_factory.mktemp("lab"), "activation.ipynb", cells, height=1000) as nb:
        nb.page.wait_for_selector(f"{VIEW}[data-painted='0:0:0']", timeout=90_000)
        yield nb


def _eventually(nb: NotebookPage, expression: str, expected: Any, timeout_s: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = nb.python_value(expression)
        if value == expected or time.monotonic() > deadline:
            return value
        time.sleep(0.2)


def _tokens(nb: NotebookPage, prompt: int) -> Any:
    return nb.page.locator(f"{VIEW} [data-testid=token-strip][data-prompt='{prompt}'] [data-testid=token]")


def _shown_values(nb: NotebookPage, prompt: int) -> list[float]:
    """The value each token's tooltip shows (``i: "tok" · +1.234``)."""
    titles = _tokens(nb, prompt).evaluate_all("spans => spans.map(s => s.title)")
    return [float(t.rsplit("· ", 1)[1].replace("−", "-")) for t in titles]


def _assert_values_match(nb: NotebookPage, prompt: int) -> None:
    expected = nb.python_value(f"[float(v) for v in view.values()[{prompt}]]")
    shown = _shown_values(nb, prompt)
    assert len(shown) == len(expected)
    assert all(abs(s - e) <= 2e-3 + 2e-3 * abs(e) for s, e in zip(shown, expected)), (shown, expected)


def test_renders_one_strip_per_prompt(notebook: NotebookPage) -> None:
    page = notebook.page
    assert page.locator(f"{VIEW} [data-testid=token-strip]").count() == len(PROMPTS)
    tokens = notebook.python_value("view.tokens")
    for p in range(len(PROMPTS)):
        assert _tokens(notebook, p).count() == len(tokens[p])
    _assert_values_match(notebook, 0)
    scale = page.locator(f"{VIEW} [data-testid=scale]").inner_text()
    extent = notebook.python_value("max(float(v.abs().max()) for v in view.values())")
    low, high = re.findall(r"[−+]\d+\.\d+", scale)[:2]
    assert float(high.replace("+", "")) == pytest.approx(extent, abs=1e-3) and low == high.replace("+", "−")


def test_neuron_box_by_keyboard(notebook: NotebookPage) -> None:
    page = notebook.page
    box = page.locator(f"{VIEW} [data-testid=neuron-input]")
    box.click()
    box.fill("17")
    page.keyboard.press("Enter")
    assert _eventually(notebook, "view.selected['neuron']", 17) == 17
    page.wait_for_selector(f"{VIEW}[data-painted='0:0:17']", timeout=15_000)
    _assert_values_match(notebook, 1)
    page.keyboard.press("ArrowUp")
    assert _eventually(notebook, "view.selected['neuron']", 18) == 18
    d = notebook.python_value("view.d")
    box.fill(str(d + 5))
    page.keyboard.press("Enter")
    message = page.locator(f"{VIEW} [data-testid=neuron-message]")
    assert message.inner_text() == f"neuron {d + 5} is out of range: 0..{d - 1}"
    assert notebook.python_value("view.selected['neuron']") == 18
    page.keyboard.press("Escape")
    assert box.input_value() == "18" and message.inner_text() == ""


def test_hover_a_token_and_pick_from_its_top_neurons(notebook: NotebookPage) -> None:
    page = notebook.page
    _tokens(notebook, 0).nth(3).hover()
    top = page.locator(f"{VIEW} [data-testid=top-list][data-state=ready] [data-testid=top-neuron]")
    top.first.wait_for(timeout=15_000)
    expected = notebook.python_value("[n for n, _ in view.top_neurons(0, 3)]")
    assert [int(n) for n in top.evaluate_all("bs => bs.map(b => b.dataset.neuron)")] == expected
    assert "prompt 0, token 3" in page.locator(f"{VIEW} [data-testid=readout-text]").inner_text()
    top.nth(1).click()
    assert _eventually(notebook, "view.selected['neuron']", expected[1]) == expected[1]
    page.wait_for_selector(f"{VIEW}[data-painted='0:0:{expected[1]}']", timeout=15_000)
    _assert_values_match(notebook, 0)


def test_click_and_key_through_tokens_then_pick_a_layer(notebook: NotebookPage) -> None:
    page = notebook.page
    _tokens(notebook, 1).nth(2).click()
    sel = _eventually(notebook, "(view.selected['prompt_index'], view.selected['position'])", [1, 2])
    assert sel == [1, 2]
    page.keyboard.press("ArrowRight")
    page.keyboard.press("Enter")
    assert _eventually(notebook, "(view.selected['prompt_index'], view.selected['position'])", [1, 3]) == [1, 3]
    # Tab from the strip's token to the top-neurons list, Enter picks the first one
    page.wait_for_selector(f"{VIEW} [data-testid=top-list][data-state=ready] [data-testid=top-neuron]", timeout=15_000)
    first = notebook.python_value("view.top_neurons(1, 3)[0][0]")
    page.keyboard.press("Tab")
    page.keyboard.press("Enter")
    assert _eventually(notebook, "view.selected['neuron']", first) == first
    page.locator(f"{VIEW} [data-testid=layer-select]").select_option("1")
    assert _eventually(notebook, "view.selected['layer']", 1) == 1
    page.wait_for_selector(f"{VIEW}[data-painted='0:1:{first}']", timeout=15_000)
    _assert_values_match(notebook, 1)


def test_python_drives_the_view(notebook: NotebookPage) -> None:
    page = notebook.page
    before = _tokens(notebook, 0).evaluate_all("spans => spans.map(s => s.style.backgroundColor)")
    neuron = notebook.python_value("view.top_neurons(0, 12, layer=0)[0][0]")  # " s", inside the docstring
    notebook.execute(f'view.selected = {{"layer": 0, "neuron": {neuron}, "prompt_index": 0, "position": 12}}')
    page.wait_for_selector(f"{VIEW}[data-painted='0:0:{neuron}'][data-selected='0:12']", timeout=15_000)
    after = _tokens(notebook, 0).evaluate_all("spans => spans.map(s => s.style.backgroundColor)")
    assert after != before, "the strip colours follow the selection made in Python"
    _assert_values_match(notebook, 0)
    assert _tokens(notebook, 0).nth(12).get_attribute("aria-selected") == "true"
    assert page.locator(f"{VIEW} [data-testid=neuron-input]").input_value() == str(neuron)
    page.mouse.move(0, 0)
    page.locator(VIEW).screenshot(path=str(OUTPUT / "activation_view.png"))
