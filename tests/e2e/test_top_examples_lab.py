"""TopExamples in a real JupyterLab: watch the overview fill, Stop, pick neurons by mouse, keyboard and Python."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .lab import OUTPUT, NotebookPage, notebook_in_lab

pytestmark = pytest.mark.e2e

VIEW = "[data-testid=top-examples]"
K = 8


@pytest.fixture(scope="module")
def notebook(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NotebookPage]:
    cells = [
        "import mi_widgets as mw\n"
        "model = mw.zoo.load('code-2l')  # the bundled model with MLPs, trained on the stdlib\n"
        "texts = mw.zoo.stdlib_texts('heldout')\n"
        f"ex = mw.TopExamples(model, texts * 2, hook='blocks.1.mlp.hook_post', neurons=range(64), k={K}, batch_size=4)"
        "  # long enough to stop\n"
        "ex",
    ]
    with notebook_in_lab(tmp_path_factory.mktemp("lab"), "top_examples.ipynb", cells) as nb:
        nb.page.wait_for_selector(VIEW, timeout=60_000)
        yield nb


def _wait_examples(nb: NotebookPage, neuron: int) -> None:
    nb.page.wait_for_function(
        f"() => (document.querySelector('{VIEW}').dataset.examples || '').startsWith('{neuron}:')", timeout=30_000
    )


def test_overview_fills_while_running_then_stop(notebook: NotebookPage) -> None:
    page = notebook.page
    page.wait_for_function(f"() => +document.querySelector('{VIEW}').dataset.done >= 2", timeout=60_000)
    first = int(page.locator(VIEW).get_attribute("data-painted") or -1)
    page.wait_for_function(f"() => +document.querySelector('{VIEW}').dataset.painted > {first}", timeout=30_000)
    assert notebook.python_value("int(ex.maxima.isfinite().sum())") == 64  # every neuron has a best context already
    page.locator(f"{VIEW} [data-testid=stop-button]").click()
    page.wait_for_selector(f"{VIEW}[data-status=stopped]", timeout=30_000)
    assert notebook.python_value("ex.status") == "stopped"
    done, total = notebook.python_value("[ex.progress['done'], ex.progress['total']]")
    assert 2 <= done < total  # stopped early, the partial top-k stays in Python
    assert "stopped" in page.locator(f"{VIEW} [data-testid=status]").inner_text()
    page.wait_for_function(f"() => document.querySelector('{VIEW}').dataset.painted === '{done}'", timeout=15_000)


def test_clicking_a_neuron_selects_it_and_shows_its_contexts(notebook: NotebookPage) -> None:
    page = notebook.page
    notebook.click_cell(f"{VIEW} [data-testid=overview]", row=1, col=1)  # 64 neurons in 16 columns: neuron 17
    assert notebook.python_eventually("ex.selected", {"neuron": 17}) == {"neuron": 17}
    _wait_examples(notebook, 17)
    strips = page.locator(f"{VIEW} [data-testid=example-strip]")
    assert strips.count() == K
    expected = notebook.python_value("[[e.tokens, f'{e.value:.3f}', e.max_index] for e in ex.examples[17]]")
    assert len(expected) == K
    tokens, value, max_index = expected[0]
    shown = strips.nth(0).locator("[data-testid=token]")
    assert shown.count() == len(tokens)
    assert page.locator(f"{VIEW} [data-testid=example-value]").nth(0).inner_text() == value
    marked = shown.nth(max_index)
    assert "miw-token-primary" in (marked.get_attribute("class") or "")
    assert marked.evaluate("e => e.style.backgroundColor") != ""  # coloured by activation
    page.locator(VIEW).screenshot(path=str(OUTPUT / "top_examples.png"))


def test_keyboard_selection_and_python_to_view(notebook: NotebookPage) -> None:
    page = notebook.page
    overview = page.locator(f"{VIEW} [data-testid=overview]")
    overview.focus()
    page.keyboard.press("ArrowRight")  # from the selected neuron 17 to 18
    page.keyboard.press("ArrowDown")  # one row down: 34
    assert "neuron 34" in page.locator(f"{VIEW} [data-testid=readout]").inner_text()
    page.keyboard.press("Enter")
    assert notebook.python_eventually("ex.selected", {"neuron": 34}) == {"neuron": 34}
    _wait_examples(notebook, 34)
    notebook.execute('ex.selected = {"neuron": 5}')
    page.wait_for_selector(f"{VIEW}[data-selected='5']", timeout=10_000)
    _wait_examples(notebook, 5)
    assert page.locator(f"{VIEW} [data-testid=examples-title]").inner_text().startswith("neuron 5: top 8 examples")
