"""Very long tokens in a real JupyterLab (issue 10, item 7): hovering a 10,000-character token must
not make a view flicker. Readouts keep one line, what is hovered never moves, and the readout keeps
naming the hovered token for as long as the pointer stays still on it."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest

from .lab import OUTPUT, NotebookPage, notebook_in_lab

pytestmark = pytest.mark.e2e

LONG = 10_000
ATTENTION = "[data-testid=attention-view]"
ACTIVATION = "[data-testid=activation-view]"
HOLD_MS = 3_000
SAMPLE_MS = 50
# Whatever a view shows of a token stays short; the whole token is in a title.
MAX_SHOWN = 300

ATTENTION_CELL = (
    "import numpy as np\n"
    "import mi_widgets as mw\n"
    "p = np.tril(np.ones((3, 8, 8)))\n"
    "p /= p.sum(-1, keepdims=True)\n"
    'tokens = ["a"] * 8\n'
    f'tokens[3] = "x" * {LONG}\n'
    "attn = mw.attention_heads(p, tokens)\n"
    "attn"
)
ACTIVATION_CELL = (
    'model = mw.zoo.load("code-2l")\n'
    'act = mw.ActivationView(model, ["def add(a, b):\\n    return a + b\\n"], hook="mlp.post")\n'
    "act"
)
# The bundled BPE never makes a 10,000-character token: put one in the synced labels instead.
LONG_ACTIVATION_TOKEN = (
    f'_toks = [list(t) for t in act.tokens]\n_toks[0][3] = "y" * {LONG}\nact.set_trait("tokens", _toks)'
)

# Samples, every SAMPLE_MS for HOLD_MS, what a still pointer must never see change.
SAMPLER = """async ([selectors, holdMs, everyMs]) => {
  const box = (sel) => {
    const r = document.querySelector(sel).getBoundingClientRect();
    return [r.x, r.y, r.width, r.height].map((v) => Math.round(v * 10) / 10).join(",");
  };
  const samples = [];
  const end = performance.now() + holdMs;
  while (performance.now() < end) {
    const readout = document.querySelector(selectors.readout);
    const sample = { text: readout.textContent, title: readout.title, height: readout.getBoundingClientRect().height, boxes: {} };
    for (const [name, sel] of Object.entries(selectors.boxes)) sample.boxes[name] = box(sel);
    sample.focus = selectors.focus ? document.querySelector(selectors.focus.sel).dataset[selectors.focus.key] ?? null : null;
    samples.push(sample);
    await new Promise((r) => setTimeout(r, everyMs));
  }
  const r = document.querySelector(selectors.readout);
  const lineHeight = parseFloat(getComputedStyle(r).lineHeight) || 1.4 * parseFloat(getComputedStyle(r).fontSize);
  return { samples, lineHeight };
}"""


@pytest.fixture(scope="module")
def notebook(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NotebookPage]:
    cells = [ATTENTION_CELL, ACTIVATION_CELL]
    with notebook_in_lab(tmp_path_factory.mktemp("lab"), "long_tokens.ipynb", cells, height=1000) as nb:
        nb.page.wait_for_selector(f"{ATTENTION}[data-painted]", timeout=60_000)
        nb.page.wait_for_selector(f"{ACTIVATION}[data-painted]", timeout=90_000)
        yield nb
        nb.page.screenshot(path=str(OUTPUT / "long_tokens_final.png"))


def _hover_still(nb: NotebookPage, token: str) -> None:
    """Put the pointer on ``token`` and leave it there: on its top edge, right below the token before
    it, so that anything pushing the strip down by a line puts that other token under the pointer."""
    page = nb.page
    span = page.locator(token)
    span.scroll_into_view_if_needed()
    at: dict[str, float] = span.evaluate(
        """e => {
          const r = e.getBoundingClientRect();
          const strip = e.parentElement.getBoundingClientRect();
          const prev = e.previousElementSibling?.getBoundingClientRect();
          const left = Math.max(r.left, strip.left), right = Math.min(r.right, strip.right);
          const x = prev && prev.left + prev.width / 2 > left && prev.left + prev.width / 2 < right
            ? prev.left + prev.width / 2 : left + Math.min(20, (right - left) / 2);
          return { x, y: r.top + 3, visible: right - left };
        }"""
    )
    assert at["visible"] > 10, f"{token} has no visible part to hover: {at}"
    page.mouse.move(1, 1)
    page.mouse.move(at["x"], at["y"])


def _sample(nb: NotebookPage, selectors: dict[str, Any]) -> dict[str, Any]:
    try:
        return nb.page.evaluate(SAMPLER, [selectors, HOLD_MS, SAMPLE_MS])
    finally:
        nb.page.mouse.move(1, 1)  # a flickering view must not keep shaking the page for the next test


def _switches(values: list[Any]) -> int:
    return sum(1 for a, b in zip(values, values[1:]) if a != b)


def _assert_still(result: dict[str, Any], hovered: list[Any], full: str) -> None:
    samples = result["samples"]
    assert len(samples) >= 20, f"only {len(samples)} samples in {HOLD_MS} ms"
    assert set(hovered) == {hovered[0]} and hovered[0] is not None, (
        f"the readout switched tokens {_switches(hovered)} times under a still pointer: {sorted(set(map(str, hovered)))}"
    )
    for name in samples[0]["boxes"]:
        boxes = [s["boxes"][name] for s in samples]
        assert set(boxes) == {boxes[0]}, (
            f"{name} moved {_switches(boxes)} times under a still pointer: {sorted(set(boxes))}"
        )
    heights = sorted({s["height"] for s in samples})
    assert heights[-1] < 1.6 * result["lineHeight"], (
        f"readout is more than one line: heights {heights}, line {result['lineHeight']}"
    )
    longest = max(len(s["text"]) for s in samples)
    assert longest <= MAX_SHOWN, f"the readout shows {longest} characters"
    assert full in samples[-1]["title"], "the readout's title lacks the full token"


def _assert_token_shortened(nb: NotebookPage, token: str, full: str) -> None:
    """The strip shows a short form of the token, with all of it in the title."""
    span = nb.page.locator(token)
    shown = span.text_content() or ""
    assert len(shown) <= MAX_SHOWN, f"the token strip shows {len(shown)} characters of one token"
    assert shown.endswith("\u2026"), f"a shortened token ends with an ellipsis: {shown[-20:]!r}"
    assert full in (span.get_attribute("title") or "")


def test_attention_readout_holds_still_on_a_long_token(notebook: NotebookPage) -> None:
    page = notebook.page
    long_token = f"{ATTENTION} [data-testid=token-strip] [data-testid=token][data-index='3']"
    _hover_still(notebook, long_token)
    result = _sample(
        notebook,
        {
            "readout": f"{ATTENTION} [data-testid=readout]",
            "boxes": {
                "token strip": f"{ATTENTION} [data-testid=token-strip]",
                "hovered token": long_token,
                "mode button": f"{ATTENTION} [data-testid=strip-mode]",
                "toolbar": f"{ATTENTION} .miw-attn-strip-bar",
            },
        },
    )
    hovered = [m.group(1) if (m := re.search(r"query (\d+)", s["text"])) else None for s in result["samples"]]
    _assert_still(result, hovered, "x" * LONG)
    assert hovered[0] == "3"
    _assert_token_shortened(notebook, long_token, "x" * LONG)
    page.locator(ATTENTION).screenshot(path=str(OUTPUT / "long_tokens_attention.png"))


def test_activation_readout_holds_still_on_a_long_token(notebook: NotebookPage) -> None:
    page = notebook.page
    notebook.execute(LONG_ACTIVATION_TOKEN)
    long_token = f"{ACTIVATION} [data-testid=token-strip] [data-testid=token][data-index='3']"
    page.wait_for_function(
        f"() => (document.querySelector(\"{long_token}\")?.title ?? '').includes('y'.repeat({LONG}))", timeout=10_000
    )
    page.wait_for_selector(f"{ACTIVATION}[data-painted]", timeout=10_000)
    _hover_still(notebook, long_token)
    page.wait_for_selector(f"{ACTIVATION} [data-testid=top-list][data-state=ready]", timeout=10_000)
    result = _sample(
        notebook,
        {
            "readout": f"{ACTIVATION} [data-testid=readout-text]",
            "boxes": {
                "token strip": f"{ACTIVATION} [data-testid=token-strip]",
                "hovered token": long_token,
                "readout": f"{ACTIVATION} [data-testid=readout-text]",
            },
            "focus": {"sel": ACTIVATION, "key": "focus"},
        },
    )
    _assert_still(result, [s["focus"] for s in result["samples"]], "y" * LONG)
    _assert_token_shortened(notebook, long_token, "y" * LONG)
    page.locator(ACTIVATION).screenshot(path=str(OUTPUT / "long_tokens_activation.png"))
