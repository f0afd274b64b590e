"""mi_widgets in marimo (``mo.ui.anywidget``): AttentionView and HeadScan in a real ``marimo run`` app in Chromium.

One app, one server, one page (one kernel): the model loads once. A readout cell prints what Python sees as
JSON; it depends on the wrapped widgets, so a change made in a view (a click) re-runs it, and on a button,
which re-reads state that Python changed itself (a re-run prompt, a scan's progress: marimo re-runs cells
only for changes that come from the page).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from .lab import OUTPUT, cell_point
from .marimo_host import marimo_page

pytestmark = pytest.mark.e2e

PROMPT = "The cat sat on the mat. The cat sat on the"
ATTN = "[data-testid=host-attention] [data-testid=attention-view]"
SCAN = "[data-testid=head-scan]"
SCAN_ATTN = "[data-testid=host-scan] [data-testid=attention-view]"
STATE = "[data-testid=py-state]"

APP = """
import marimo

app = marimo.App(width="full")


@app.cell
def _():
    import html
    import json

    import marimo as mo

    import mi_widgets as mw

    model = mw.zoo.load("induction-2l")
    return html, json, mo, model, mw


@app.cell
def _(mo, model, mw):
    attn = mo.ui.anywidget(mw.AttentionView(model, PROMPT, layer=1, head=0))
    mo.Html(f"<div data-testid='host-attention'>{attn}</div>")
    return (attn,)


@app.cell
def _(mo, model, mw):
    scan = mw.HeadScan(model, n_batches=400, batch_size=32, autostart=False)
    scan_ui = mo.ui.anywidget(scan)
    scan_attention = mo.ui.anywidget(scan.attention)
    mo.Html(f"<div data-testid='host-scan'>{scan_ui}{scan_attention}</div>")
    return scan, scan_ui


@app.cell
def _(mo):
    python_prompt = mo.ui.text(placeholder="prompt from python")
    read = mo.ui.button(value=0, on_click=lambda n: n + 1, label="read python state")
    mo.hstack([python_prompt, read])
    return python_prompt, read


@app.cell
def _(attn, python_prompt):
    if python_prompt.value:
        attn.widget.prompt = python_prompt.value  # re-runs the model from Python
    return


@app.cell
def _(attn, html, json, mo, read, scan, scan_ui):
    _view = attn.widget
    _state = {
        "reads": read.value,
        "attention": {
            "selected": _view.selected,
            "prompt": _view.prompt,
            "tokens": _view.tokens,
            "revision": _view.revision,
            "value_selected": attn.value["selected"],
        },
        "scan": {
            "status": scan.status,
            "progress": scan.progress,
            "selected": scan_ui.value["selected"],
            "induction_l1_min": float(scan.scores["induction"][1].min()),
            "attention_head": scan.attention.selected["head"],
        },
    }
    mo.Html(f"<pre data-testid='py-state'>{html.escape(json.dumps(_state))}</pre>")
    return
""".replace("PROMPT", repr(PROMPT))


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    app = tmp_path_factory.mktemp("marimo") / "miw_app.py"
    app.write_text(APP)
    with marimo_page(app) as page:
        page.locator(f"{ATTN}[data-painted='{_state(page)['attention']['revision']}:1:0']").wait_for(timeout=90_000)
        yield page
        page.screenshot(path=str(OUTPUT / "marimo_final.png"), full_page=True)


def _state(page: Any, timeout_ms: int = 90_000) -> dict[str, Any]:
    """What the readout cell last printed."""
    return json.loads(page.locator(STATE).inner_text(timeout=timeout_ms))


def _state_when(page: Any, check: Any, timeout_s: float = 15.0) -> dict[str, Any]:
    """Poll the readout until ``check(state)`` holds (cells re-run asynchronously); returns the last state."""
    deadline = time.monotonic() + timeout_s
    while True:
        state = _state(page)
        if check(state) or time.monotonic() > deadline:
            return state
        time.sleep(0.2)


def _read(page: Any) -> dict[str, Any]:
    """Click the read button: the readout re-runs and shows Python's state now."""
    before = _state(page)["reads"]
    page.get_by_role("button", name="read python state").click()
    state = _state_when(page, lambda s: s["reads"] > before)
    assert state["reads"] > before, "the readout cell did not re-run"
    return state


def _wait_js(page: Any, selector: str, predicate: str, timeout_s: float = 30.0) -> None:
    """Wait until ``predicate`` (JS, of the element ``e``) holds for ``selector`` (Playwright's CSS crosses the
    shadow roots marimo renders widgets in; ``document.querySelector`` in ``wait_for_function`` would not)."""
    el = page.locator(selector)
    deadline = time.monotonic() + timeout_s
    while not el.evaluate(f"e => !!({predicate})"):
        assert time.monotonic() < deadline, f"{selector}: {predicate} did not hold within {timeout_s}s"
        time.sleep(0.1)


def test_attention_renders_with_tokens(page: Any) -> None:
    state = _state(page)
    tokens = state["attention"]["tokens"]
    assert state["attention"]["prompt"] == PROMPT and len(tokens) > 5
    shown = page.locator(f"{ATTN} [data-testid=token-strip] [data-testid=token]").all_text_contents()
    assert len(shown) == len(tokens)
    assert "".join(shown).replace("\u21b5", "\n") == "".join(tokens)
    view = page.locator(ATTN)
    view.screenshot(path=str(OUTPUT / "marimo_attention.png"))
    assert (OUTPUT / "marimo_attention.png").stat().st_size > 5_000
    assert view.evaluate("e => e.getBoundingClientRect().width") > 600  # marimo gives the view the cell's width


def test_click_head_reruns_downstream_cell_with_selection(page: Any) -> None:
    revision = _state(page)["attention"]["revision"]
    x, y = cell_point(page, f"{ATTN} [data-testid=head-grid]", row=0, col=2)
    page.mouse.click(x, y)
    page.locator(f"{ATTN}[data-painted='{revision}:0:2']").wait_for(timeout=10_000)
    # No button pressed: the change came from the page, so marimo re-ran the readout cell by itself.
    state = _state_when(page, lambda s: s["attention"]["selected"]["head"] == 2)
    assert state["attention"]["selected"] == {"layer": 0, "head": 2, "query": None, "key": None}
    assert state["attention"]["value_selected"] == state["attention"]["selected"]  # mo.ui.anywidget's .value


def test_prompt_box_reruns_model(page: Any) -> None:
    new = "One two three four. One two three four."
    before = _state(page)["attention"]["revision"]
    page.locator(f"{ATTN} [data-testid=prompt-input]").fill(new)
    page.locator(f"{ATTN} [data-testid=run-button]").click()
    _wait_js(page, ATTN, f"+e.dataset.revision > {before}")
    state = _read(page)["attention"]
    assert state["prompt"] == new
    assert state["revision"] > before
    page.locator(f"{ATTN}[data-painted^='{state['revision']}:']").wait_for(timeout=10_000)
    shown = page.locator(f"{ATTN} [data-testid=token]").all_text_contents()
    assert "".join(shown).replace("\u21b5", "\n") == "".join(state["tokens"]) and shown[-1] != "the"


def test_prompt_set_from_python_cell_redraws_view(page: Any) -> None:
    new = "Alice met Bob. Alice met"
    before = _state(page)["attention"]["revision"]
    page.get_by_placeholder("prompt from python").fill(new)
    page.get_by_placeholder("prompt from python").press("Enter")
    _wait_js(page, ATTN, f"+e.dataset.revision > {before}")
    state = _read(page)["attention"]
    assert state["prompt"] == new
    page.locator(f"{ATTN}[data-painted^='{state['revision']}:']").wait_for(timeout=10_000)
    shown = page.locator(f"{ATTN} [data-testid=token]").all_text_contents()
    assert "".join(shown) == "".join(state["tokens"]) and "Bob" in "".join(shown)
    assert page.locator(f"{ATTN} [data-testid=prompt-input]").input_value() == new


def test_head_scan_streams_from_view_then_stops(page: Any) -> None:
    assert _state(page)["scan"]["status"] == "idle"
    page.locator(f"{SCAN} [data-testid=start-button]").click()
    page.locator(f"{SCAN}[data-status=running]").wait_for(timeout=10_000)
    # The scan runs on a worker thread: its progress reaches the page without any cell running.
    _wait_js(page, SCAN, "+e.dataset.done >= 2")
    filled = page.locator(f"{SCAN} [data-score=induction] [data-testid=score-cell]:not([data-value=''])")
    filled.nth(7).wait_for(timeout=10_000)  # the scores are fetched after `done` moves: wait for them
    assert filled.count() == 8  # every head of the 2 x 4 model has a partial score
    page.locator(f"{SCAN} [data-testid=stop-button]").click()
    page.locator(f"{SCAN}[data-status=stopped]").wait_for(timeout=30_000)
    assert "stopped" in page.locator(f"{SCAN} [data-testid=status]").inner_text()
    state = _read(page)["scan"]
    assert state["status"] == "stopped"
    assert 2 <= state["progress"]["done"] < state["progress"]["total"] == 400
    assert state["induction_l1_min"] > 0.9
    page.locator(SCAN).screenshot(path=str(OUTPUT / "marimo_head_scan.png"))


def test_head_scan_click_selects_and_drives_linked_view(page: Any) -> None:
    page.locator(f"{SCAN} [data-score=induction] [data-testid=score-cell][data-layer='1'][data-head='2']").click()
    _wait_js(page, SCAN_ATTN, "(e.dataset.painted || '').endsWith(':1:2')", timeout_s=15)
    state = _state_when(page, lambda s: s["scan"]["selected"].get("head") == 2)["scan"]
    assert state["selected"] == {"score": "induction", "layer": 1, "head": 2}
    assert state["attention_head"] == 2


def test_follows_marimo_dark_theme(page: Any) -> None:
    view = page.locator(ATTN)
    luminance = "e => { const m = getComputedStyle(e).backgroundColor.match(/[\\d.]+/g).map(Number);"
    luminance += " return (0.2126 * m[0] + 0.7152 * m[1] + 0.0722 * m[2]) / 255; }"
    assert view.evaluate(luminance) > 0.8
    before = page.evaluate("() => document.body.className")
    page.evaluate("() => document.body.classList.add('dark', 'dark-theme')")  # what marimo's theme switch does
    try:
        _wait_js(page, ATTN, "getComputedStyle(e).backgroundColor !== 'rgb(255, 255, 255)'", timeout_s=10)
        page.wait_for_timeout(300)
        view.screenshot(path=str(OUTPUT / "marimo_attention_dark.png"))
        assert view.evaluate(luminance) < 0.35
    finally:
        page.evaluate("(c) => { document.body.className = c; }", before)
