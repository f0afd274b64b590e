"""Grokking in a real JupyterLab: Start from the view, the curves move while Python trains on its worker thread,
Stop from the view, and the checkpoint slider and "latest" write ``selected_step`` to Python."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from .lab import OUTPUT, NotebookPage, notebook_in_lab

pytestmark = pytest.mark.e2e

VIEW = "[data-testid=grokking]"
STEPS = 100_000  # far more than the test waits for
PHASES = ("memorisation", "circuit formation", "cleanup", "generalised")
# A tiny run that steps quickly on a loaded 2-core CPU; a check every 10 steps so the slider has checks to move over.
RUN_CELL = f"""\
import mi_widgets as mw
run = mw.Grokking(p=23, d_model=32, n_heads=2, d_mlp=64, lr=3e-3, steps={STEPS}, device="cpu", check_every=10)
run"""

V = f"document.querySelector('{VIEW}')"


@pytest.fixture(scope="module")
def notebook(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NotebookPage]:
    with notebook_in_lab(tmp_path_factory.mktemp("lab"), "grokking.ipynb", [RUN_CELL]) as nb:
        nb.page.wait_for_selector(f"{VIEW}[data-status]", state="attached", timeout=60_000)
        yield nb
        nb.execute("run.stop(); run.wait()")


def _snapshot(nb: NotebookPage) -> dict[str, Any]:
    """What the view shows, read in one go."""
    return nb.page.evaluate(
        f"""() => {{
          const v = {V};
          const q = (id) => v.querySelector(`[data-testid=${{id}}]`);
          return {{
            ...v.dataset,
            points: +q('grokking-loss').dataset.points,
            accPoints: +q('grokking-accuracy').dataset.points,
            stepText: q('grokking-step').textContent,
            phaseText: q('grokking-phase').textContent,
            status: v.dataset.status,
            statusText: q('status').textContent,
            stopDisabled: q('stop-button').disabled,
            startDisabled: q('start-button').disabled,
          }};
        }}"""
    )


def _header_step(snapshot: dict[str, Any]) -> int:
    text = snapshot["stepText"]  # "step N / TOTAL"
    assert text.startswith("step ") and text.endswith(f" / {STEPS}"), text
    return int(text.split()[1])


def test_start_and_stop_from_the_view_with_live_curves(notebook: NotebookPage) -> None:
    page = notebook.page
    view = page.locator(VIEW)
    page.wait_for_function(f"() => {V}.dataset.status === 'idle'", timeout=30_000)
    assert notebook.python_value("[run.status, run.step, run.p]") == ["idle", 0, 23]
    assert view.locator("[data-testid=grokking-config]").inner_text().startswith("p = 23 · 40% of pairs to train · cpu")

    view.locator("[data-testid=start-button]").click()
    page.wait_for_function(f"() => {V}.dataset.status === 'running'", timeout=15_000)
    page.wait_for_function(
        f"() => +{V}.dataset.step > 0 && +{V}.querySelector('[data-testid=grokking-loss]').dataset.points > 0",
        timeout=30_000,
    )
    first = _snapshot(notebook)
    # the curves move: more loss points, a later step in the header
    page.wait_for_function(
        f"""() => +{V}.querySelector('[data-testid=grokking-loss]').dataset.points > {first["points"]}
                  && +{V}.dataset.step > {first["step"]}""",
        timeout=30_000,
    )
    second = _snapshot(notebook)
    assert second["points"] > first["points"] and second["accPoints"] > 0
    assert _header_step(second) > _header_step(first) > 0
    assert second["stopDisabled"] is False and second["startDisabled"] is True
    assert second["statusText"].startswith("running: step ")
    # Python sees the same run (its worker thread leaves the kernel free to answer)
    status, step = notebook.python_value("[run.status, run.step]")
    assert status == "running" and step > 0

    # the phase header: memorisation from the first log on (or a later phase on a fast machine)
    page.wait_for_function(f"() => {list(PHASES)}.includes({V}.dataset.phase)", timeout=15_000)
    phase = _snapshot(notebook)["phase"]
    assert phase in PHASES
    assert _snapshot(notebook)["phaseText"] == f"phase: {phase}"
    assert notebook.python_value("run.phase") in PHASES

    # enough checks for the slider to move over (one every 10 steps)
    page.wait_for_function(f"() => +{V}.dataset.checks >= 3", timeout=40_000)
    view.locator("[data-testid=stop-button]").click()
    page.wait_for_function(f"() => {V}.dataset.status === 'stopped'", timeout=30_000)
    assert notebook.python_eventually("run.status", "stopped") == "stopped"
    step = notebook.python_value("run.step")
    assert 0 < step < STEPS
    page.wait_for_function(f"() => {V}.dataset.step === '{step}'", timeout=15_000)
    time.sleep(1.5)  # the step stops growing: nothing moves in Python or in the view
    assert notebook.python_value("[run.status, run.step]") == ["stopped", step]
    stopped = _snapshot(notebook)
    assert stopped["step"] == str(step) and _header_step(stopped) == step
    assert stopped["statusText"] == f"stopped after {step}/{STEPS} steps"
    assert stopped["startDisabled"] is False
    assert notebook.python_value("int(run.history['step'][-1])") <= step
    view.screenshot(path=str(OUTPUT / "grokking_stopped.png"))


def test_the_slider_selects_a_check_and_latest_follows_again(notebook: NotebookPage) -> None:
    page = notebook.page
    view = page.locator(VIEW)
    page.wait_for_function(f"() => {V}.dataset.status === 'stopped'", timeout=30_000)
    checks = notebook.python_value("run.checks['step'].tolist()")
    assert len(checks) >= 3 and checks == sorted(checks)
    page.wait_for_function(f"() => +{V}.dataset.checks === {len(checks)}", timeout=15_000)
    assert notebook.python_value("run.selected_step") == -1
    assert _snapshot(notebook)["following"] == "true"
    latest = view.locator("[data-testid=grokking-latest]")
    assert latest.get_attribute("aria-pressed") == "true"

    slider = view.locator("[data-testid=grokking-slider]")
    assert slider.is_enabled()
    assert slider.get_attribute("max") == str(len(checks) - 1)
    assert slider.input_value() == str(len(checks) - 1)  # following: on the newest check
    # move it with the keyboard, as a user would: to the first check, then one to the right
    slider.focus()
    page.keyboard.press("Home")
    assert notebook.python_eventually("run.selected_step", checks[0]) == checks[0]
    page.keyboard.press("ArrowRight")
    assert notebook.python_eventually("run.selected_step", checks[1]) == checks[1]
    selected = notebook.python_value("run.selected_step")
    assert selected in notebook.python_value("run.checks['step'].tolist()")
    page.wait_for_function(f"() => {V}.dataset.selectedStep === '{checks[1]}'", timeout=10_000)
    snap = _snapshot(notebook)
    assert snap["following"] == "false" and slider.input_value() == "1"
    assert latest.get_attribute("aria-pressed") == "false"
    # a pinned check shows a marker at its step on every line chart
    for chart in ("grokking-loss", "grokking-accuracy", "grokking-measures", "grokking-weight-norm"):
        assert view.locator(f"[data-testid={chart}]").get_attribute("data-markers") == str(checks[1]), chart
    assert view.locator("[data-testid=grokking-spectrum-bars]").get_attribute("data-count") == str((23 - 1) // 2)
    view.screenshot(path=str(OUTPUT / "grokking_check.png"))

    # Python writes selected_step too: a step between two checks puts the slider on the nearer one
    between = checks[2] - 3  # nearer checks[2] than checks[1] (one check every 10 steps)
    notebook.execute(f"run.selected_step = {between}")
    page.wait_for_function(f"() => {V}.dataset.selectedStep === '{checks[2]}'", timeout=10_000)
    assert slider.input_value() == "2"
    assert view.locator("[data-testid=grokking-loss]").get_attribute("data-markers") == str(checks[2])

    latest.click()
    assert notebook.python_eventually("run.selected_step", -1) == -1
    page.wait_for_function(f"() => {V}.dataset.following === 'true'", timeout=10_000)
    assert latest.get_attribute("aria-pressed") == "true"
    assert slider.input_value() == str(len(checks) - 1)
    assert view.locator("[data-testid=grokking-loss]").get_attribute("data-markers") == ""
