"""FourierView in a real JupyterLab on the bundled ``modadd-113``: the header names the key frequencies and their share
of the logits; clicks on the bars, the clusters, the neuron and head buttons and the (a, b) maps write ``selected``
in Python; ``selected`` written in Python redraws the view."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest

from .lab import OUTPUT, NotebookPage, notebook_in_lab

pytestmark = pytest.mark.e2e

VIEW = "[data-testid=fourier]"
V = f"document.querySelector('{VIEW}')"
P = 113
KEY_FREQUENCIES = {5, 7, 20, 21, 42}  # modadd-113's (zoo/models/modadd-113)
VIEW_CELL = """\
import mi_widgets as mw
model = mw.zoo.load("modadd-113")
view = mw.FourierView(model)
view"""


@pytest.fixture(scope="module")
def notebook(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NotebookPage]:
    # tall enough for the whole view (about 1100 px) below the notebook's toolbar
    with notebook_in_lab(tmp_path_factory.mktemp("lab"), "fourier_view.ipynb", [VIEW_CELL], height=1600) as nb:
        nb.page.wait_for_selector(f"{VIEW}[data-revision]", state="attached", timeout=120_000)
        yield nb


def _data(nb: NotebookPage, testid: str, name: str) -> str | None:
    return nb.page.locator(f"{VIEW} [data-testid={testid}]").first.get_attribute(f"data-{name}")


def _text(nb: NotebookPage, testid: str) -> str:
    return nb.page.locator(f"{VIEW} [data-testid={testid}]").first.inner_text()


def _wait_maps_drawn(nb: NotebookPage) -> None:
    """Both (a, b) maps show the grid of what is selected (not a stale one on its way out)."""
    nb.page.wait_for_function(
        f"""() => {{
          const v = {V};
          const ok = (kind, want) => {{
            const p = v.querySelector(`[data-testid=fourier-${{kind}}-panel]`);
            return p.dataset.index === want && p.dataset.stale === 'false';
          }};
          return ok('neuron', v.dataset.neuron) && ok('attention', v.dataset.head);
        }}""",
        timeout=20_000,
    )


def _selected(nb: NotebookPage) -> dict[str, Any]:
    return nb.python_value("view.selected")


def _wait_selected(nb: NotebookPage, key: str, value: Any) -> dict[str, Any]:
    """Poll Python until ``view.selected[key] == value``; returns the whole selection."""
    got = nb.python_eventually(f"view.selected[{key!r}]", value)
    assert got == value, (key, got, value)
    return _selected(nb)


def _click_bar(nb: NotebookPage, testid: str, index: int) -> None:
    """Click bar ``index`` of the BarChart ``testid``: find its column with the pointer (data-hovered), then click."""
    page = nb.page
    chart = page.locator(f"{VIEW} [data-testid={testid}]")
    canvas = chart.locator(f"[data-testid={testid}-canvas]")
    canvas.scroll_into_view_if_needed()
    box = canvas.bounding_box()
    assert box is not None, f"{testid} is not visible"
    y = box["y"] + box["height"] / 2

    def hovered_at(x: float) -> int | None:
        page.mouse.move(x, y)
        h = chart.get_attribute("data-hovered")
        return None if h in (None, "") else int(h)

    # two probes give the bars' pitch; then step towards the bar until the pointer is over it
    x1, x2 = box["x"] + 0.3 * box["width"], box["x"] + 0.8 * box["width"]
    i1, i2 = hovered_at(x1), hovered_at(x2)
    assert i1 is not None and i2 is not None and i2 > i1, (i1, i2)
    slot = (x2 - x1) / (i2 - i1)
    x = x1 + (index - i1) * slot
    for _ in range(40):
        i = hovered_at(x)
        if i == index:
            # the middle of the bar's column: a little to the right until the next one, then back half way
            right = x
            while hovered_at(right + 1) == index:
                right += 1
            x = right - slot / 2 + 0.5
            assert hovered_at(x) == index
            page.mouse.click(x, y)
            return
        x += slot / 3 if i is None or i < index else -slot / 3
    raise AssertionError(f"no bar {index} found on {testid}")


def test_the_header_names_the_key_frequencies_and_their_share(notebook: NotebookPage) -> None:
    header = _text(notebook, "fourier-header")
    m = re.fullmatch(r"P = 113 · key frequencies ([\d, ]+) · they explain ([\d.]+)% of the logits", header)
    assert m, header
    shown = [int(k) for k in m.group(1).split(", ")]
    assert set(shown) == KEY_FREQUENCIES and len(shown) == len(KEY_FREQUENCIES), header
    share = float(m.group(2))
    assert 79.0 <= share <= 80.5, header
    keys, fraction = notebook.python_value("[view.key_frequencies, view.key_fraction]")
    assert shown == keys  # in Python's order (largest first)
    assert f"{fraction * 100:.1f}" == m.group(2)
    # both bar charts: K bars, the key frequencies highlighted (index k - 1)
    highlight = ",".join(str(k - 1) for k in sorted(KEY_FREQUENCIES))
    for bars in ("fourier-embed-bars", "fourier-logit-bars"):
        assert _data(notebook, bars, "count") == str((P - 1) // 2)
        assert _data(notebook, bars, "highlight") == highlight
    # one cluster button per key frequency's neurons (the dead group, if any, is text)
    clusters = notebook.page.locator(f"{VIEW} [data-testid=fourier-cluster]")
    frequencies = {int(clusters.nth(i).get_attribute("data-frequency") or 0) for i in range(clusters.count())}
    assert frequencies == {c["frequency"] for c in notebook.python_value("view.clusters") if c["frequency"] > 0}
    assert KEY_FREQUENCIES <= frequencies
    # the first selection, from Python: the largest key frequency and its best neuron
    first = _selected(notebook)
    assert first["frequency"] == keys[0] and first["neuron"] == notebook.python_value(f"view.neurons({keys[0]})[0]")
    notebook.page.wait_for_selector(f"{VIEW}[data-frequency='{keys[0]}'][data-neuron='{first['neuron']}']")
    _wait_maps_drawn(notebook)
    assert _text(notebook, "fourier-correlation").startswith("prediction vs logits: r = 0.9")
    notebook.page.mouse.move(0, 0)
    notebook.page.locator(VIEW).screenshot(path=str(OUTPUT / "fourier_view.png"))


def test_a_frequency_bar_or_a_cluster_selects_the_frequency_in_python(notebook: NotebookPage) -> None:
    page = notebook.page
    before = _selected(notebook)
    # a bar of the logits' chart: frequency 7
    _click_bar(notebook, "fourier-logit-bars", 7 - 1)
    after = _wait_selected(notebook, "frequency", 7)
    assert {k: v for k, v in after.items() if k != "frequency"} == {k: v for k, v in before.items() if k != "frequency"}
    page.wait_for_selector(f"{VIEW}[data-frequency='7']", state="attached", timeout=10_000)
    for bars in ("fourier-embed-bars", "fourier-logit-bars"):  # both charts outline it
        assert _data(notebook, bars, "selected") == "6"
    assert page.locator(f"{VIEW} [data-testid=fourier-cluster][data-frequency='7']").get_attribute("aria-pressed") == (
        "true"
    )
    assert _text(notebook, "fourier-neurons-caption").startswith("Neurons of frequency 7: ")

    # a bar of the embedding's chart, not a key frequency: frequency 3
    _click_bar(notebook, "fourier-embed-bars", 3 - 1)
    _wait_selected(notebook, "frequency", 3)
    page.wait_for_selector(f"{VIEW}[data-frequency='3']", state="attached", timeout=10_000)
    assert _data(notebook, "fourier-logit-bars", "selected") == "2"

    # a cluster button: frequency 42
    page.locator(f"{VIEW} [data-testid=fourier-cluster][data-frequency='42']").click()
    _wait_selected(notebook, "frequency", 42)
    page.wait_for_selector(f"{VIEW}[data-frequency='42']", state="attached", timeout=10_000)
    assert _data(notebook, "fourier-embed-bars", "selected") == "41"
    count = notebook.python_value("len(view.neurons(42))")
    assert _text(notebook, "fourier-neurons-caption").startswith(f"Neurons of frequency 42: {count}")

    # Escape on a chart selects no frequency
    page.locator(f"{VIEW} [data-testid=fourier-logit-bars-canvas]").focus()
    page.keyboard.press("Escape")
    assert notebook.python_eventually("view.selected['frequency']", None) is None
    page.wait_for_selector(f"{VIEW}[data-frequency='0']", state="attached", timeout=10_000)
    assert _data(notebook, "fourier-logit-bars", "selected") == ""


def test_a_neuron_button_selects_a_neuron_of_the_selected_frequency(notebook: NotebookPage) -> None:
    page = notebook.page
    page.locator(f"{VIEW} [data-testid=fourier-cluster][data-frequency='5']").click()
    _wait_selected(notebook, "frequency", 5)
    buttons = page.locator(f"{VIEW} [data-testid=fourier-neuron]")
    page.wait_for_function(
        f"() => {V}.querySelector('[data-testid=fourier-neurons-caption]').textContent.startsWith('Neurons of frequency 5:')",
        timeout=10_000,
    )
    listed = [int(buttons.nth(i).get_attribute("data-neuron") or -1) for i in range(buttons.count())]
    expected = notebook.python_value("view.neurons(5)")
    assert listed == expected[: len(listed)] and 0 < len(listed) <= 64  # best first, as Python orders them
    n = listed[2]
    assert n != _selected(notebook)["neuron"]
    buttons.nth(2).click()
    selected = _wait_selected(notebook, "neuron", n)
    assert selected["frequency"] == 5
    assert notebook.python_value(f"int(view.neuron_frequency[{n}])") == selected["frequency"]
    page.wait_for_selector(f"{VIEW}[data-neuron='{n}']", state="attached", timeout=10_000)
    assert buttons.nth(2).get_attribute("aria-pressed") == "true"
    _wait_maps_drawn(notebook)
    page.mouse.move(0, 0)
    readout = _text(notebook, "fourier-neuron-readout")
    assert readout.startswith(f"neuron {n}: frequency 5, "), readout

    # the last button of the row too (the row scrolls)
    last = buttons.nth(len(listed) - 1)
    m = listed[-1]
    last.click()
    _wait_selected(notebook, "neuron", m)
    assert notebook.python_value(f"int(view.neuron_frequency[{m}])") == 5


def test_grid_cells_and_head_buttons_select_in_python(notebook: NotebookPage) -> None:
    page = notebook.page
    _wait_maps_drawn(notebook)
    grid = f"{VIEW} [data-testid=fourier-neuron-grid]"
    notebook.click_cell(grid, 17, 40)
    after = notebook.python_eventually("[view.selected['a'], view.selected['b']]", [17, 40])
    assert after == [17, 40]
    page.wait_for_selector(f"{VIEW}[data-pair='17,40']", state="attached", timeout=10_000)
    page.wait_for_function(
        f"() => {V}.querySelector('[data-testid=fourier-logits-caption]').textContent.startsWith('17 + 40 mod 113 = 57')",
        timeout=15_000,
    )
    assert _data(notebook, "fourier-logits-caption", "answer") == "57"

    # a head button, then a cell of the attention map
    page.locator(f"{VIEW} [data-testid=fourier-head][data-head='2']").click()
    _wait_selected(notebook, "head", 2)
    page.wait_for_selector(f"{VIEW}[data-head='2']", state="attached", timeout=10_000)
    _wait_maps_drawn(notebook)
    assert _data(notebook, "fourier-attention-panel", "index") == "2"
    notebook.click_cell(f"{VIEW} [data-testid=fourier-attention-grid]", 100, 3)
    after = notebook.python_eventually("[view.selected['a'], view.selected['b']]", [100, 3])
    assert after == [100, 3]
    page.wait_for_selector(f"{VIEW}[data-pair='100,3']", state="attached", timeout=10_000)
    page.wait_for_function(
        f"() => {V}.querySelector('[data-testid=fourier-logits-caption]').textContent.startsWith('100 + 3 mod 113 = 103')",
        timeout=15_000,
    )
    selected = _selected(notebook)
    assert selected["head"] == 2 and selected["frequency"] == 5
    # with the pointer away, both readouts read the selected pair
    page.mouse.move(0, 0)
    for readout in ("fourier-neuron-readout", "fourier-attention-readout"):
        page.wait_for_function(
            f"() => {V}.querySelector('[data-testid={readout}]').textContent.includes(' · a 100, b 3: ')",
            timeout=10_000,
        )
    value = float(_text(notebook, "fourier-attention-readout").rsplit(": ", 1)[1])
    want = notebook.python_value(f"float(view.run.attention[100 * {P} + 3, 2])")
    assert abs(value - want) <= 0.01 * max(1.0, abs(want)), (value, want)

    # hovering a cell of one map reads that pair on both
    grid_box = page.locator(grid).bounding_box()
    assert grid_box is not None
    at = page.locator(grid).evaluate("e => ({x: +e.dataset.originX, y: +e.dataset.originY, w: +e.dataset.cellWidth})")
    page.mouse.move(grid_box["x"] + at["x"] + 60.5 * at["w"], grid_box["y"] + at["y"] + 30.5 * at["w"])
    for readout in ("fourier-neuron-readout", "fourier-attention-readout"):
        page.wait_for_function(
            f"() => {V}.querySelector('[data-testid={readout}]').textContent.includes(' · a 30, b 60: ')",
            timeout=10_000,
        )
    assert notebook.python_value("[view.selected['a'], view.selected['b']]") == [100, 3]  # hover selects nothing
    page.mouse.move(0, 0)


def test_selected_written_in_python_redraws_the_view(notebook: NotebookPage) -> None:
    page = notebook.page
    n = notebook.python_value("view.neurons(21)[1]")
    assert n != _selected(notebook)["neuron"]
    notebook.execute(f'view.selected = {{"frequency": 21, "neuron": {n}, "head": 1, "a": 5, "b": 9}}')
    page.wait_for_selector(
        f"{VIEW}[data-frequency='21'][data-neuron='{n}'][data-head='1'][data-pair='5,9']",
        state="attached",
        timeout=10_000,
    )
    _wait_maps_drawn(notebook)
    page.mouse.move(0, 0)
    assert _data(notebook, "fourier-neuron-panel", "index") == str(n)
    assert _data(notebook, "fourier-attention-panel", "index") == "1"
    readout = _text(notebook, "fourier-neuron-readout")
    assert readout.startswith(f"neuron {n}: frequency 21, ") and " · a 5, b 9: " in readout, readout
    assert _text(notebook, "fourier-attention-readout").startswith("head 0.1: attention from '=' to a · a 5, b 9: ")
    for bars in ("fourier-embed-bars", "fourier-logit-bars"):
        assert _data(notebook, bars, "selected") == "20"
    cluster = page.locator(f"{VIEW} [data-testid=fourier-cluster][data-frequency='21']")
    assert cluster.get_attribute("aria-pressed") == "true"
    assert _text(notebook, "fourier-neurons-caption").startswith("Neurons of frequency 21: ")
    pressed = page.locator(f"{VIEW} [data-testid=fourier-neuron][aria-pressed=true]")
    assert pressed.count() == 1 and pressed.get_attribute("data-neuron") == str(n)
    assert page.locator(f"{VIEW} [data-testid=fourier-head][aria-pressed=true]").get_attribute("data-head") == "1"
    page.wait_for_function(
        f"() => {V}.querySelector('[data-testid=fourier-logits-caption]').textContent.startsWith('5 + 9 mod 113 = 14')",
        timeout=15_000,
    )

    # no frequency and no neuron: the view clears the marks and says what to pick
    notebook.execute('view.selected = {"frequency": None, "neuron": None, "head": 1, "a": 5, "b": 9}')
    page.wait_for_selector(f"{VIEW}[data-frequency='0'][data-neuron='-1']", state="attached", timeout=10_000)
    assert _data(notebook, "fourier-embed-bars", "selected") == ""
    assert page.locator(f"{VIEW} [data-testid=fourier-neuron]").count() == 0
    assert _text(notebook, "fourier-neuron-readout").startswith("Pick a neuron")
    assert page.locator(f"{VIEW} [data-testid=fourier-cluster][aria-pressed=true]").count() == 0
    page.locator(VIEW).screenshot(path=str(OUTPUT / "fourier_view_python_selection.png"))
