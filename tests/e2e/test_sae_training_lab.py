"""SAE training in a real JupyterLab: live curves while ``train_sae`` keeps the kernel busy, then a background SAETrainer."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from .lab import OUTPUT, NotebookPage, notebook_in_lab

pytestmark = pytest.mark.e2e

VIEW = "[data-testid=sae-training]"
HOOK = "blocks.0.hook_resid_post"
STEPS = 100  # a few seconds of training in the cell
BACKGROUND_STEPS = 100_000  # far more than the test waits for
SMALL = "d_sae=64, batch_size=128, buffer_size=2048"


TRAIN_CELL = f'sae = mw.train_sae(model, hook="{HOOK}", tokens=texts, {SMALL}, steps={STEPS})  # trains in this cell'
TRAINER_CELL = f'tr = mw.SAETrainer(model, hook="{HOOK}", tokens=texts, {SMALL}, steps={BACKGROUND_STEPS})\ntr'


@pytest.fixture(scope="module")
def notebook(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NotebookPage]:
    cells = [
        'import mi_widgets as mw\nmodel = mw.zoo.load("code-2l")\ntexts = mw.zoo.stdlib_texts("heldout", max_files=4)',
    ]
    with notebook_in_lab(tmp_path_factory.mktemp("lab"), "sae_training.ipynb", cells) as nb:
        yield nb
        nb.execute("if 'tr' in globals(): tr.stop(); tr.wait()")


def _start_new_cell(nb: NotebookPage, code: str) -> None:
    """Append a code cell to the notebook and run it like Shift+Enter, without waiting for it to finish.

    (``run_all`` resolves only once every cell is done, too late to watch a cell that trains in the kernel.)
    """
    nb.page.evaluate(
        """async (code) => {
          const app = window.jupyterapp;
          const notebook = app.shell.currentWidget.content;
          notebook.activeCellIndex = notebook.widgets.length - 1;
          await app.commands.execute('notebook:insert-cell-below');
          notebook.activeCell.model.sharedModel.setSource(code);
          void app.commands.execute('notebook:run-cell');  // not awaited: the cell keeps the kernel busy
        }""",
        code,
    )


LAST_PROMPT = "[...document.querySelectorAll('.jp-Notebook .jp-CodeCell .jp-InputPrompt')].at(-1).textContent.trim()"


def _view(n: int) -> str:
    """JS expression for the n-th SAE training view on the page."""
    return f"document.querySelectorAll('{VIEW}')[{n}]"


def _snapshot(nb: NotebookPage, n: int) -> dict[str, Any]:
    """What the n-th view shows, and the kernel's state, read in one go."""
    return nb.page.evaluate(
        f"""() => {{
          const v = {_view(n)};
          const q = (id) => v.querySelector(`[data-testid=${{id}}]`);
          return {{
            ...v.dataset,
            // "[*]:" while the cell runs (the kernel's status is no use: a comm subshell reports "idle")
            cellPrompt: {LAST_PROMPT},
            hintHidden: q('foreground-hint').hidden,
            hint: q('foreground-hint').textContent,
            stopDisabled: q('stop-button').disabled,
            startDisabled: q('start-button').disabled,
            summary: q('summary').textContent,
            charts: v.querySelectorAll('.miw-sae-charts > *').length,
          }};
        }}"""
    )


def test_curves_are_live_while_train_sae_runs_in_the_cell(notebook: NotebookPage) -> None:
    page = notebook.page
    notebook.wait_kernel_idle()
    _start_new_cell(notebook, TRAIN_CELL)
    page.wait_for_function(
        f"() => {{ const v = {_view(0)}; return v && +v.dataset.frames >= 2 && v.dataset.foreground === 'true'; }}",
        timeout=60_000,
    )
    live = _snapshot(notebook, 0)
    assert live["foreground"] == "true"
    assert live["cellPrompt"] == "[*]:"  # the cell is still running: these frames came while the kernel was busy
    assert live["status"] == "running"
    assert int(live["frames"]) >= 2 and 0 < int(live["step"]) < STEPS
    assert live["hintHidden"] is False and "interrupt the kernel" in live["hint"]
    assert live["stopDisabled"] is True and live["startDisabled"] is True
    assert live["summary"].startswith(f"step {live['step']} · loss ")
    assert live["charts"] == 5
    page.locator(VIEW).first.screenshot(path=str(OUTPUT / "sae_training_live.png"))

    page.wait_for_function(f"() => {_view(0)}.dataset.status === 'done'", timeout=120_000)
    page.wait_for_function(f"() => {_view(0)}.dataset.step === '{STEPS}'", timeout=15_000)
    page.wait_for_function(f"() => {LAST_PROMPT} === '[2]:'", timeout=30_000)  # the cell has finished
    done = _snapshot(notebook, 0)
    assert done["foreground"] == "false" and done["hintHidden"] is True
    assert int(done["frames"]) > int(live["frames"])
    summary = done["summary"]
    assert summary.startswith(f"step {STEPS} · loss ")
    for metric in (" · MSE ", " · L0 ", " · FVE ", " · dead "):
        assert metric in summary, summary
    view = page.locator(VIEW).first
    assert view.locator("[data-testid=status]").inner_text() == f"done: {STEPS} steps"
    assert view.locator("[data-testid=config]").inner_text().startswith(HOOK)
    assert view.locator("[data-testid=tokens]").inner_text().endswith(" tokens")
    assert notebook.python_value("type(sae).__name__") == "SparseAutoencoder"
    assert notebook.python_value("isinstance(sae, mw.SparseAutoencoder)") is True
    assert notebook.python_value("sae.hook_name") == HOOK
    assert notebook.python_value("[sae.d_sae, sae.d_in == model.cfg.d_model]") == [64, True]
    assert notebook.python_value("bool(sae.W_dec.isfinite().all())") is True


def test_background_trainer_start_and_stop_from_the_view(notebook: NotebookPage) -> None:
    page = notebook.page
    notebook.wait_kernel_idle()
    _start_new_cell(notebook, TRAINER_CELL)
    page.wait_for_function(f"() => {_view(1)} && {_view(1)}.dataset.status === 'idle'", timeout=60_000)
    view = page.locator(VIEW).nth(1)
    assert notebook.python_value("[tr.status, tr.step]") == ["idle", 0]
    view.locator("[data-testid=start-button]").click()
    page.wait_for_function(f"() => {_view(1)}.dataset.status === 'running'", timeout=15_000)
    page.wait_for_function(f"() => +{_view(1)}.dataset.step > 0", timeout=30_000)
    frames = int(view.get_attribute("data-frames") or 0)
    page.wait_for_function(f"() => +{_view(1)}.dataset.frames > {frames}", timeout=30_000)
    running = _snapshot(notebook, 1)
    assert running["foreground"] == "false" and running["hintHidden"] is True
    assert running["stopDisabled"] is False  # in the background the kernel can take the Stop click
    assert notebook.python_value("tr.status") == "running"  # and it is free to answer meanwhile
    view.locator("[data-testid=stop-button]").click()
    page.wait_for_function(f"() => {_view(1)}.dataset.status === 'stopped'", timeout=30_000)
    assert notebook.python_value("tr.status") == "stopped"
    step = notebook.python_value("tr.step")
    assert 0 < step < BACKGROUND_STEPS
    assert view.locator("[data-testid=status]").inner_text() == f"stopped after {step}/{BACKGROUND_STEPS} steps"
    page.wait_for_function(f"() => {_view(1)}.dataset.step === '{step}'", timeout=15_000)
    assert _snapshot(notebook, 1)["summary"].startswith(f"step {step} · loss ")
    assert notebook.python_value("int(tr.history['step'][-1])") == step
    assert notebook.python_value("tr.sae.hook_name") == HOOK
    page.locator(VIEW).nth(1).screenshot(path=str(OUTPUT / "sae_training_stopped.png"))
