"""SuperpositionToy in a real JupyterLab: frames arrive while it trains, sliders restart it, Stop, check Python."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .lab import OUTPUT, NotebookPage, notebook_in_lab

pytestmark = pytest.mark.e2e

VIEW = "[data-testid=superposition]"
STEPS = 200_000  # far more than the test waits for: training is still running when it is stopped


@pytest.fixture(scope="module")
def notebook(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NotebookPage]:
    cells = [
        "import mi_widgets as mw\n"
        f"toy = mw.SuperpositionToy(n_features=5, n_hidden=2, sparsity=[0.0, 0.7, 0.9], steps={STEPS}, batch_size=64)\n"
        "events = []  # what the kernel saw: status changes and progress counts, in order\n"
        "toy.observe(lambda c: events.append(['status', c['new']]), names='status')\n"
        "toy.observe(lambda c: events.append(['done', c['new']['done']]), names='progress')\n"
        "toy",
    ]
    with notebook_in_lab(tmp_path_factory.mktemp("lab"), "superposition.ipynb", cells) as nb:
        nb.page.wait_for_selector(VIEW, timeout=60_000)
        yield nb
        nb.execute("toy.stop(); toy.wait()")


def _data(nb: NotebookPage, selector: str, key: str) -> str | None:
    return nb.page.locator(selector).evaluate(f"e => e.dataset.{key} ?? null")


def _wait_step_at_least(nb: NotebookPage, step: int, timeout_ms: int = 30_000) -> int:
    nb.page.wait_for_function(f"() => +document.querySelector('{VIEW}').dataset.step >= {step}", timeout=timeout_ms)
    return int(_data(nb, VIEW, "step") or 0)


def _press(nb: NotebookPage, testid: str, key: str) -> tuple[str, str]:
    """Focus a slider and press ``key`` like a keyboard user; returns its value before and after."""
    slider = nb.page.locator(f"{VIEW} [data-testid={testid}]")
    slider.focus()
    before = slider.input_value()
    nb.page.keyboard.press(key)
    return before, slider.input_value()


def _restarted_since(nb: NotebookPage, mark: int) -> bool:
    """Whether the kernel stopped, started again and counted progress from 0 after ``events[mark]``."""
    new = nb.python_value(f"events[{mark}:]")
    statuses = [v for k, v in new if k == "status"]
    return statuses[:2] == ["stopped", "running"] and ["done", 0] in new


def test_frames_arrive_while_training(notebook: NotebookPage) -> None:
    page = notebook.page
    page.wait_for_function(f"() => +document.querySelector('{VIEW}').dataset.frames >= 2", timeout=30_000)
    frames, step = int(_data(notebook, VIEW, "frames") or 0), int(_data(notebook, VIEW, "step") or 0)
    page.wait_for_function(
        f"() => {{ const d = document.querySelector('{VIEW}').dataset; return +d.frames > {frames} && +d.step > {step}; }}",
        timeout=30_000,
    )
    assert page.locator(f"{VIEW}[data-status=running]").count() == 1
    assert notebook.python_value("toy.status") == "running"
    assert "5 features in 2 hidden dimensions" in page.locator(f"{VIEW} [data-testid=info]").inner_text()
    for i, s in enumerate(["0.00", "0.70", "0.90"]):  # one panel per instance, each with its plane (m == 2)
        panel = f"{VIEW} [data-testid=instance-{i}]"
        assert _data(notebook, panel, "sparsity") == s
        assert page.locator(panel).locator(".miw-sup-title").inner_text().startswith(f"sparsity {s}")
        plane = page.locator(f"{panel} [data-testid=feature-plane-{i}]")
        assert plane.count() == 1
        assert float(plane.get_attribute("data-extent") or 0) >= 1.2  # set on every draw of the plane
        box = plane.bounding_box()
        assert box is not None and round(box["width"]) == 200 and round(box["height"]) == 200
        assert page.locator(f"{panel} [data-testid=gram-{i}]").count() == 1
        assert page.locator(f"{panel} [data-testid=bars-{i}]").count() == 1
    assert page.locator(f"{VIEW} [data-testid=sparsity-2]").input_value() == "0.9"
    assert page.locator(f"{VIEW} [data-testid=loss-chart]").count() == 1
    page.locator(VIEW).screenshot(path=str(OUTPUT / "superposition.png"))


def test_sparsity_slider_restarts_training(notebook: NotebookPage) -> None:
    page = notebook.page
    step = _wait_step_at_least(notebook, 200)  # far enough into the run that a restart shows in the step count
    mark = len(notebook.python_value("events"))
    before, after = _press(notebook, "sparsity-2", "PageDown")  # a tenth of the range down
    assert (before, after) == ("0.9", "0.8")
    assert page.locator(f"{VIEW} [data-testid=instance-2] output").inner_text() == "0.80"
    assert notebook.python_eventually("toy.sparsity", [0.0, 0.7, 0.8]) == [0.0, 0.7, 0.8]
    assert _restarted_since(notebook, mark), notebook.python_value(f"events[{mark}:]")
    assert notebook.python_value("toy.status") == "running"
    # A frame of the new run: trained with the new sparsity, from a step below where the old run was.
    page.wait_for_function(
        f"() => +document.querySelector('{VIEW}').dataset.step < {step}"
        f" && document.querySelector('{VIEW} [data-testid=instance-2]').dataset.sparsity === '0.80'",
        timeout=15_000,
    )
    assert _data(notebook, f"{VIEW} [data-testid=instance-1]", "sparsity") == "0.70"  # the others unchanged
    assert page.locator(f"{VIEW} [data-testid=instance-2] .miw-sup-title").inner_text().startswith("sparsity 0.80")


def test_importance_decay_slider_sets_the_trait(notebook: NotebookPage) -> None:
    page = notebook.page
    _wait_step_at_least(notebook, 20)
    mark = len(notebook.python_value("events"))
    before, after = _press(notebook, "importance-decay", "PageDown")
    assert before == "0.9" and after != before
    assert notebook.python_eventually("toy.importance_decay", float(after)) == float(after)
    page.wait_for_selector(f"{VIEW}[data-importance-decay='{float(after):.2f}']", timeout=15_000)
    assert _restarted_since(notebook, mark), notebook.python_value(f"events[{mark}:]")
    assert notebook.python_value("toy.sparsity") == [0.0, 0.7, 0.8]  # the sparsities stay
    notebook.execute("toy.importance_decay = 0.75")  # and Python's value moves the slider
    page.wait_for_function(
        f"() => document.querySelector('{VIEW} [data-testid=importance-decay]').value === '0.75'", timeout=10_000
    )
    page.wait_for_selector(f"{VIEW}[data-importance-decay='0.75']", timeout=15_000)


def test_arrow_keys_move_a_focused_slider(notebook: NotebookPage) -> None:
    """The arrow keys are a range input's own keys: JupyterLab's notebook shortcuts must not take them."""
    before, after = _press(notebook, "importance-decay", "ArrowLeft")
    assert before == "0.75"
    assert after == "0.74", "ArrowLeft on the focused importance-decay slider did not move it"
    assert notebook.python_eventually("toy.importance_decay", 0.74) == 0.74


def test_stop_keeps_the_weights_the_view_drew(notebook: NotebookPage) -> None:
    page = notebook.page
    # The previous test restarted training; the view may still show the old run's step until the new
    # run's first frame arrives, so wait on the kernel's step of the current run first, then on the view.
    assert notebook.python_eventually("toy.step >= 50", True, timeout_s=30.0) is True
    _wait_step_at_least(notebook, 50)
    page.locator(f"{VIEW} [data-testid=stop-button]").click()
    page.wait_for_selector(f"{VIEW}[data-status=stopped]", timeout=30_000)
    assert notebook.python_value("toy.status") == "stopped"
    step = notebook.python_value("toy.step")
    assert 50 <= step < STEPS
    assert f"stopped after {step}/{STEPS} steps" in page.locator(f"{VIEW} [data-testid=status]").inner_text()
    assert page.locator(f"{VIEW} [data-testid=start-button]").is_enabled()
    assert page.locator(f"{VIEW} [data-testid=stop-button]").is_disabled()
    # The final frame (pushed when the run ends) is drawn: the view shows the step Python stopped at.
    page.wait_for_function(f"() => document.querySelector('{VIEW}').dataset.step === '{step}'", timeout=15_000)
    assert notebook.python_value("list(toy.W.shape)") == [3, 2, 5]
    assert notebook.python_value("bool(toy.W.isfinite().all())") is True
    # The W^T W canvases are coloured on max(1, max |W^T W|) of the frame drawn: the stopped weights'.
    expected = notebook.python_value(
        "f\"{max(1.0, float(__import__('torch').einsum('ima,imb->iab', toy.W, toy.W).abs().max())):.3f}\""
    )
    for i in range(3):
        assert _data(notebook, f"{VIEW} [data-testid=gram-{i}]", "range") == expected
    assert notebook.python_value("toy.sparsity") == [0.0, 0.7, 0.8]
    assert _data(notebook, f"{VIEW} [data-testid=instance-2]", "sparsity") == "0.80"
