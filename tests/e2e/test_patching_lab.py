"""Patching in a real JupyterLab: the sweep fills in, Stop keeps a partial result, a click selects in Python
and opens the head's pattern, attribution mode shows its estimate and its agreement with the exact sweep."""

from __future__ import annotations

import math
from collections.abc import Iterator

import pytest

from .lab import OUTPUT, NotebookPage, notebook_in_lab

pytestmark = pytest.mark.e2e

N_PROMPTS = 8
SLOW_STEPS = 808  # every default component of induction-2l on 64-token prompts, one patch per forward pass

# Each widget gets a CSS class on its element (ipywidgets' _dom_classes), so selectors pick the right one of three.
MAIN = ".e2e-main [data-testid=patching]"
MAIN_ATTENTION = ".e2e-main-attention [data-testid=attention-view]"
SLOW = ".e2e-slow [data-testid=patching]"
ATTR = ".e2e-attr [data-testid=patching]"

DATA_CELL = """\
import torch
import mi_widgets as mw
model = mw.zoo.load("induction-2l")

def induction_pair(n, k, seed):
    # clean: BOS, k random tokens, their first k-1 again (induction predicts the k-th);
    # corrupted: the same with the first copy replaced by other random tokens (nothing to copy)
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(1, model.cfg.d_vocab, (n, k), generator=g)
    y = torch.randint(1, model.cfg.d_vocab, (n, k), generator=g)
    bos = torch.full((n, 1), model.tokenizer.bos_token_id)
    clean = torch.cat([bos, x, x[:, :-1]], 1)
    corrupted = torch.cat([bos, y, x[:, :-1]], 1)
    return clean, corrupted, mw.logit_diff(x[:, -1], y[:, -1])
"""
MAIN_CELL = f"""\
clean, corrupted, metric = induction_pair({N_PROMPTS}, 6, seed=0)
patch = mw.Patching(model, clean, corrupted, metric, batch_size=2)
patch.add_class("e2e-main"); patch.attention.add_class("e2e-main-attention")
patch"""
SLOW_CELL = f"""\
slow_clean, slow_corrupted, slow_metric = induction_pair({N_PROMPTS}, 32, seed=1)
slow = mw.Patching(model, slow_clean, slow_corrupted, slow_metric, batch_size=1, autostart=False)
slow.add_class("e2e-slow")
slow"""
ATTR_CELL = """\
attr = mw.Patching(model, clean, corrupted, metric, method="attribution")
attr.add_class("e2e-attr")
attr"""

FINITE = "int(sum(int(v.isfinite().sum()) for v in {w}.results.values()))"
CELLS = "sum(c['n_rows'] * c['n_cols'] for c in {w}.components)"


@pytest.fixture(scope="module")
def notebook(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NotebookPage]:
    cells = [DATA_CELL, MAIN_CELL, SLOW_CELL, ATTR_CELL]
    # tall enough for a whole view in one screenshot (the attribution view is about 2800 px)
    with notebook_in_lab(tmp_path_factory.mktemp("lab"), "patching.ipynb", cells, height=3000) as nb:
        for view in (MAIN, SLOW, ATTR):
            nb.page.wait_for_selector(f"{view}[data-revision]", state="attached", timeout=60_000)
        yield nb
        nb.execute("slow.stop(); slow.wait()")


def _data(nb: NotebookPage, selector: str, name: str) -> str | None:
    return nb.page.locator(selector).first.get_attribute(f"data-{name}")


def _wait_view_current(nb: NotebookPage, view: str, widget: str) -> int:
    """Wait until the view has drawn the kernel's latest results (the task has ended); returns that revision."""
    nb.execute(f"{widget}.wait(60)")
    revision = nb.python_value(f"{widget}.revision")
    nb.page.wait_for_selector(f"{view}[data-revision='{revision}']", state="attached", timeout=15_000)
    return int(revision)


def test_the_sweep_fills_in_and_ends_done(notebook: NotebookPage) -> None:
    page = notebook.page
    metrics = notebook.python_value("[patch.clean_metric, patch.corrupted_metric]")
    assert metrics[0] - metrics[1] > 2, metrics  # induction tells clean from corrupted clearly
    total = notebook.python_value(CELLS.format(w="patch"))
    steps = notebook.python_value("patch.progress['total']")
    assert total == 184 and steps == total // 2
    page.wait_for_selector(f"{MAIN}[data-status=done]", timeout=60_000)
    _wait_view_current(notebook, MAIN, "patch")
    assert _data(notebook, MAIN, "done") == str(steps)
    assert _data(notebook, MAIN, "filled") == str(total)
    assert notebook.python_value("patch.status") == "done"
    assert notebook.python_value(FINITE.format(w="patch")) == total
    assert notebook.python_value("[list(v.shape) for v in patch.results.values()]") == [
        [2, 12], [2, 4], [2, 12], [2, 4], [2, 4], [2, 4], [2, 4], [2, 12, 4]
    ]  # fmt: skip
    # L1's attention output at the last position carries the induction answer: patching it restores the clean run
    assert notebook.python_value("round(float(patch.results['attn_out'][1, -1]), 2)") == 1.0

    # Start again from the view and watch data-filled: it drops to the first batch and grows back to every cell
    page.locator(MAIN).evaluate(
        """v => { window.__filled = [];
                  new MutationObserver(() => window.__filled.push(+v.dataset.filled))
                    .observe(v, { attributes: true, attributeFilter: ['data-filled'] }); }"""
    )
    page.locator(f"{MAIN} [data-testid=start-button]").click()
    page.wait_for_function(f"() => window.__filled.some(n => n < {total})", timeout=15_000)
    page.wait_for_selector(f"{MAIN}[data-status=done]", timeout=60_000)
    _wait_view_current(notebook, MAIN, "patch")
    seen: list[int] = page.evaluate("() => window.__filled")
    rerun = seen[next(i for i, n in enumerate(seen) if n < total) :]
    assert rerun == sorted(rerun) and rerun[-1] == total, seen  # it only grows, up to every cell
    assert any(0 < n < total for n in rerun), seen  # partial results were drawn on the way
    assert notebook.python_value(FINITE.format(w="patch")) == total


def test_stop_keeps_a_partial_result(notebook: NotebookPage) -> None:
    page = notebook.page
    view = page.locator(SLOW)
    assert _data(notebook, SLOW, "status") == "idle"
    assert notebook.python_value("[slow.status, slow.progress['total']]") == ["idle", SLOW_STEPS]
    assert notebook.python_value(CELLS.format(w="slow")) == SLOW_STEPS
    view.locator("[data-testid=start-button]").click()
    page.wait_for_selector(f"{SLOW}[data-status=running]", state="attached", timeout=15_000)
    page.wait_for_function(f"() => +document.querySelector('{SLOW}').dataset.filled >= 3", timeout=30_000)
    view.locator("[data-testid=stop-button]").click()
    page.wait_for_selector(f"{SLOW}[data-status=stopped]", state="attached", timeout=30_000)
    assert notebook.python_eventually("slow.status", "stopped") == "stopped"
    revision = _wait_view_current(notebook, SLOW, "slow")
    done = notebook.python_value("slow.progress['done']")
    assert 3 <= done < SLOW_STEPS
    finite = notebook.python_value(FINITE.format(w="slow"))
    assert finite == done  # one cell per batch, and the rest still NaN
    assert notebook.python_value("int(sum(int(v.isnan().sum()) for v in slow.results.values()))") == SLOW_STEPS - done
    assert _data(notebook, SLOW, "filled") == str(done)
    assert view.locator("[data-testid=status]").inner_text() == f"stopped after {done}/{SLOW_STEPS} batches"
    # the partial result stays: nothing moves once stopped
    assert notebook.python_value("[slow.status, slow.progress['done'], slow.revision]") == ["stopped", done, revision]
    assert notebook.python_value(FINITE.format(w="slow")) == done
    assert view.locator("[data-testid=start-button]").is_enabled()
    view.screenshot(path=str(OUTPUT / "patching_stopped.png"))


def test_clicking_a_head_selects_it_shows_each_prompt_and_opens_its_pattern(notebook: NotebookPage) -> None:
    page = notebook.page
    page.wait_for_selector(f"{MAIN}[data-status=done]", state="attached", timeout=60_000)
    _wait_view_current(notebook, MAIN, "patch")
    head = notebook.python_value("int(patch.results['head_out'][1].abs().argmax())")  # L1's strongest head
    notebook.click_cell(f"{MAIN} [data-testid=patching-heatmap][data-component=head_out]", 1, head)
    expected = {"component": "head_out", "layer": 1, "head": head, "position": None}
    assert notebook.python_eventually("patch.selected", expected) == expected
    key = f"head_out:1:{head}:"
    page.wait_for_selector(f"{MAIN}[data-selected='{key}']", state="attached", timeout=10_000)

    per_prompt = page.locator(f"{MAIN} [data-testid=per-prompt]")
    page.wait_for_selector(
        f"{MAIN} [data-testid=per-prompt][data-selected='{key}'][data-count='{N_PROMPTS}']", timeout=15_000
    )
    rows = per_prompt.locator("[data-testid=per-prompt-row]")
    assert rows.count() == N_PROMPTS
    shown = [float(rows.nth(i).get_attribute("data-value") or "nan") for i in range(N_PROMPTS)]
    want = notebook.python_value(f"patch.per_prompt('head_out', 1, {head})['exact'].tolist()")
    assert len(want) == N_PROMPTS
    for s, w in zip(shown, want, strict=True):
        assert math.isfinite(s) and abs(s - w) <= 1e-5 * max(1.0, abs(w)), (shown, want)
    # the mean over prompts is the normalised result of the cell
    mean = notebook.python_value(f"float(patch.results['head_out'][1, {head}])")
    assert abs(sum(want) / N_PROMPTS - mean) < 1e-4

    # the linked AttentionView opens that head
    attention = {"layer": 1, "head": head, "query": None, "key": None}
    assert notebook.python_eventually("patch.attention.selected", attention) == attention
    page.wait_for_function(
        f"() => {{ const v = document.querySelector('{MAIN_ATTENTION}');"
        f" return v && (v.dataset.painted || '').endsWith(':1:{head}'); }}",
        timeout=15_000,
    )
    page.mouse.move(0, 0)
    view = page.locator(MAIN)
    view.scroll_into_view_if_needed()
    view.screenshot(path=str(OUTPUT / "patching.png"))
    assert (OUTPUT / "patching.png").stat().st_size > 5_000


def test_attribution_shows_its_estimate_and_agreement(notebook: NotebookPage) -> None:
    page = notebook.page
    page.wait_for_selector(f"{ATTR}[data-method=attribution][data-status=done]", state="attached", timeout=60_000)
    _wait_view_current(notebook, ATTR, "attr")
    panel = page.locator(f"{ATTR} [data-testid=patching-panel][data-component=head_out]")
    estimate = panel.locator("[data-testid=attribution-heatmap][data-component=head_out]")
    panel.scroll_into_view_if_needed()
    assert estimate.is_visible()
    assert panel.locator("[data-testid=patching-heatmap][data-component=head_out]").is_visible()
    assert notebook.python_value("bool(attr.attribution['head_out'].isfinite().all())") is True
    assert notebook.python_value(FINITE.format(w="attr")) == notebook.python_value(CELLS.format(w="attr"))

    agreement = panel.locator("[data-testid=agreement]")
    shown = float(agreement.get_attribute("data-correlation") or "nan")
    assert math.isfinite(shown)
    correlation = notebook.python_value("attr.agreement('head_out')['correlation']")
    assert correlation is not None and round(shown, 2) == round(correlation, 2)
    text = f"{abs(correlation):.2f}"
    assert agreement.inner_text() == f"attribution vs exact: r = {'−' if correlation < 0 else ''}{text}"
    assert panel.locator("[data-testid=disagree] li").count() == 5  # the five heads where they differ most

    view = page.locator(ATTR)
    view.scroll_into_view_if_needed()
    view.screenshot(path=str(OUTPUT / "patching_attribution.png"))
    assert (OUTPUT / "patching_attribution.png").stat().st_size > 5_000
