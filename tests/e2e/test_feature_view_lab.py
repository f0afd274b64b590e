"""FeatureView in a real JupyterLab: a token's features as chips, a chip opens the dashboard, prompts and features typed in."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator

import pytest

from .lab import OUTPUT, NotebookPage, notebook_in_lab

pytestmark = pytest.mark.e2e

VIEW = "[data-testid=feature-view]"
PROMPT = "def __init__(self, x):\n    self.x = x\n"
TOKEN = 3  # a token of PROMPT past BOS
D_SAE = 64
HEADER = re.compile(r"^Feature (\d+) · fires on ([\d.]+)% of ([\d,]+) tokens · max ([\d.]+)$")


@pytest.fixture(scope="module")
def notebook(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NotebookPage]:
    cells = [
        "import mi_widgets as mw\n"
        'model = mw.zoo.load("code-2l")\n'
        'texts = mw.zoo.stdlib_texts("heldout", max_files=2)\n'
        'sae = mw.train_sae(model, hook="blocks.0.hook_resid_post", tokens=texts, display=False,\n'
        f"                   d_sae={D_SAE}, steps=20, batch_size=128, buffer_size=2048)  # a tiny SAE, quickly",
        f"fv = mw.FeatureView(sae, model, [{PROMPT!r}], corpus=texts)\nfv",
    ]
    with notebook_in_lab(tmp_path_factory.mktemp("lab"), "feature_view.ipynb", cells) as nb:
        nb.page.wait_for_selector(f"{VIEW}[data-prompt='0']", timeout=60_000)
        yield nb


def _tokens(nb: NotebookPage) -> list[str]:
    """The token labels the prompt strip shows (from each span's title: `i: "label"`)."""
    titles = nb.page.locator(f"{VIEW} [data-testid=prompt-tokens] [data-testid=token]").evaluate_all(
        "spans => spans.map(s => s.title)"
    )
    return [json.loads(t.split(": ", 1)[1].split(" · ")[0]) for t in titles]


def _chips(nb: NotebookPage) -> list[list[object]]:
    texts = nb.page.locator(f"{VIEW} [data-testid=feature-chip]").evaluate_all(
        "chips => chips.map(c => [+c.dataset.feature, c.textContent])"
    )
    return [[f, t] for f, t in texts]


def _expected_chips(nb: NotebookPage, prompt: int, token: int) -> list[list[object]]:
    """Python's strongest features of one prompt token, as the chips should read: [id, "#id value"]."""
    return nb.python_value(
        f"[[int(i), f'#{{int(i)}} {{float(v):.2f}}'] for v, i in zip(*fv.feature_acts({prompt})[{token}].topk(8)) if v > 0]"
    )


def _wait_dashboard(nb: NotebookPage, feature: int) -> None:
    """The dashboard shows ``feature`` at the scan's final revision (examples and histogram complete)."""
    assert nb.python_eventually("fv.status", "done", timeout_s=60) == "done"
    revision = nb.python_value("fv.revision")
    nb.page.wait_for_selector(
        f"{VIEW} [data-testid=dashboard][data-feature='{feature}'][data-revision='{revision}']", timeout=30_000
    )


def test_prompt_tokens_render(notebook: NotebookPage) -> None:
    page = notebook.page
    labels = _tokens(notebook)
    assert len(labels) == notebook.python_value("fv.feature_acts(0).shape[0]")
    assert "".join(labels).endswith(PROMPT)
    assert notebook.python_value("fv.selected") == {"feature": None}
    assert page.locator(f"{VIEW} [data-testid=dashboard]").is_hidden()
    info = page.locator(f"{VIEW} [data-testid=info]").inner_text()
    assert info.startswith(f"blocks.0.hook_resid_post · {D_SAE} features")


def test_hover_and_click_a_token_show_its_features(notebook: NotebookPage) -> None:
    page = notebook.page
    tokens = page.locator(f"{VIEW} [data-testid=prompt-tokens] [data-testid=token]")
    tokens.nth(TOKEN).hover()
    page.wait_for_selector(f"{VIEW} [data-testid=token-features][data-position='{TOKEN}']", timeout=10_000)
    expected = _expected_chips(notebook, 0, TOKEN)
    assert len(expected) >= 1
    assert _chips(notebook) == expected
    caption = page.locator(f"{VIEW} [data-testid=token-caption]").inner_text()
    assert caption.startswith(f"token {TOKEN} ")
    tokens.nth(TOKEN + 1).click()  # clicking locks another token
    page.wait_for_selector(f"{VIEW} [data-testid=token-features][data-position='{TOKEN + 1}']", timeout=10_000)
    assert "miw-token-locked" in (tokens.nth(TOKEN + 1).get_attribute("class") or "")
    assert _chips(notebook) == _expected_chips(notebook, 0, TOKEN + 1)


def test_clicking_a_chip_selects_the_feature_and_draws_its_dashboard(notebook: NotebookPage) -> None:
    page = notebook.page
    chip = page.locator(f"{VIEW} [data-testid=feature-chip]").nth(1)
    feature = int(chip.get_attribute("data-feature") or -1)
    chip.click()
    assert notebook.python_eventually("fv.selected", {"feature": feature}) == {"feature": feature}
    _wait_dashboard(notebook, feature)
    assert chip.get_attribute("aria-pressed") == "true"
    assert page.locator(f"{VIEW} [data-testid=feature-input]").input_value() == str(feature)

    header = page.locator(f"{VIEW} [data-testid=feature-header]").inner_text()
    match = HEADER.match(header)
    assert match, header
    assert int(match.group(1)) == feature
    examples = notebook.python_value(f"[[e.tokens, f'{{e.value:.2f}}'] for e in fv.examples({feature})]")
    assert len(examples) >= 1
    assert match.group(4) == examples[0][1]  # the max is the best example's activation
    assert match.group(2) == notebook.python_value(f"f'{{100 * float(fv.density[{feature}]):.2f}}'")
    scanned = int(match.group(3).replace(",", ""))
    fires = notebook.python_value(f"round(float(fv.density[{feature}]) * {scanned})")

    histogram = page.locator(f"{VIEW} [data-testid=histogram]")
    assert histogram.get_attribute("data-bins") == "32"
    assert int(histogram.get_attribute("data-total") or -1) == fires  # every positive activation is in a bin
    box = histogram.bounding_box()
    assert box is not None and box["width"] > 100
    assert f"{fires:,} nonzero activations" in page.locator(f"{VIEW} [data-testid=histogram-caption]").inner_text()

    rows = page.locator(f"{VIEW} [data-testid=example]")
    assert rows.count() == len(examples)
    assert page.locator(f"{VIEW} [data-testid=example-value]").nth(0).inner_text() == examples[0][1]
    first = rows.nth(0).locator("[data-testid=token]")
    assert first.count() == len(examples[0][0])
    assert page.locator(f"{VIEW} [data-testid=promoted] [data-testid=logit]").count() == 10
    assert page.locator(f"{VIEW}[data-painted^='{feature}:']").count() == 1  # the prompt is coloured by the feature
    page.locator(VIEW).screenshot(path=str(OUTPUT / "feature_view.png"))


def test_python_selection_moves_the_dashboard(notebook: NotebookPage) -> None:
    page = notebook.page
    current = notebook.python_value("fv.selected['feature']")
    other = 7 if current != 7 else 11  # and not 3, which the feature box selects next
    notebook.execute(f'fv.selected = {{"feature": {other}}}')
    page.wait_for_selector(f"{VIEW}[data-selected='{other}']", timeout=10_000)
    _wait_dashboard(notebook, other)
    assert page.locator(f"{VIEW} [data-testid=feature-header]").inner_text().startswith(f"Feature {other} ")
    assert page.locator(f"{VIEW} [data-testid=feature-input]").input_value() == str(other)


def test_typing_a_prompt_adds_it(notebook: NotebookPage) -> None:
    page = notebook.page
    text = "return self.x + 1"
    box = page.locator(f"{VIEW} [data-testid=prompt-input]")
    box.fill(text)
    box.press("Enter")
    assert notebook.python_eventually("fv.prompts", [PROMPT, text]) == [PROMPT, text]
    assert notebook.python_value("fv.prompt_index") == 1
    assert box.input_value() == ""
    page.wait_for_selector(f"{VIEW}[data-prompt='1']", timeout=15_000)
    labels = _tokens(notebook)
    assert len(labels) == notebook.python_value("fv.feature_acts(1).shape[0]")
    assert "".join(labels).endswith(text)
    assert page.locator(f"{VIEW} [data-testid=prompt-select]").is_visible()  # two prompts: the picker shows
    page.locator(f"{VIEW} [data-testid=prompt-tokens] [data-testid=token]").nth(2).hover()
    page.wait_for_selector(f"{VIEW} [data-testid=token-features][data-position='2']", timeout=10_000)
    assert _chips(notebook) == _expected_chips(notebook, 1, 2)


def test_feature_box_selects_with_enter(notebook: NotebookPage) -> None:
    page = notebook.page
    box = page.locator(f"{VIEW} [data-testid=feature-input]")
    box.fill(str(D_SAE + 5))
    box.press("Enter")
    message = page.locator(f"{VIEW} [data-testid=feature-message]")
    assert message.inner_text() == f"feature {D_SAE + 5} is out of range: 0..{D_SAE - 1}"
    before = notebook.python_value("fv.selected")
    box.fill("3")
    box.press("Enter")
    assert before != {"feature": 3}
    assert notebook.python_eventually("fv.selected", {"feature": 3}) == {"feature": 3}
    assert message.inner_text() == ""
    _wait_dashboard(notebook, 3)
    assert page.locator(f"{VIEW} [data-testid=feature-header]").inner_text().startswith("Feature 3 ")
