"""AttentionView in a real JupyterLab: render, click, type a prompt, and check what Python sees."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from .lab import OUTPUT, NotebookPage, cell_point, notebook_in_lab

pytestmark = pytest.mark.e2e

PROMPT = "The cat sat on the mat. The cat sat on the"
VIEW = "[data-testid=attention-view]"


@pytest.fixture(scope="module")
def notebook(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NotebookPage]:
    cells = [
        "import mi_widgets as mw\n"
        'model = mw.zoo.load("induction-2l")\n'
        f"view = mw.AttentionView(model, {PROMPT!r}, layer=1, head=0)\n"
        "view",
    ]
    with notebook_in_lab(tmp_path_factory.mktemp("lab"), "attention.ipynb", cells, height=1000) as nb:
        nb.page.wait_for_selector(f"{VIEW}[data-painted='{_revision(nb)}:1:0']", timeout=60_000)
        yield nb
        nb.page.screenshot(path=str(OUTPUT / "attention_final.png"))


def _revision(nb: NotebookPage) -> int:
    return int(nb.python_value("view.revision"))


def _wait_selected(nb: NotebookPage, expected: dict[str, Any], timeout_s: float = 10.0) -> dict[str, Any]:
    import time

    deadline = time.monotonic() + timeout_s
    while True:
        selected = nb.python_value("view.selected")
        if all(selected.get(k) == v for k, v in expected.items()) or time.monotonic() > deadline:
            return selected
        time.sleep(0.2)


def test_renders_with_tokens_and_screenshot(notebook: NotebookPage) -> None:
    page = notebook.page
    tokens = notebook.python_value("view.tokens")
    strip = page.locator(f"{VIEW} [data-testid=token-strip] [data-testid=token]")
    assert strip.count() == len(tokens)
    assert [strip.nth(i).get_attribute("data-index") for i in (0, len(tokens) - 1)] == ["0", str(len(tokens) - 1)]
    view = page.locator(VIEW)
    view.scroll_into_view_if_needed()
    view.screenshot(path=str(OUTPUT / "attention.png"))
    assert (OUTPUT / "attention.png").stat().st_size > 5_000


def test_click_head_syncs_selection(notebook: NotebookPage) -> None:
    page = notebook.page
    x, y = cell_point(notebook.page, f"{VIEW} [data-testid=head-grid]", row=0, col=2)
    page.mouse.click(x, y)
    revision = _revision(notebook)
    page.wait_for_selector(f"{VIEW}[data-painted='{revision}:0:2']", timeout=10_000)
    assert _wait_selected(notebook, {"layer": 0, "head": 2})["head"] == 2
    assert notebook.python_value("view.selected")["layer"] == 0


def test_keyboard_moves_between_heads(notebook: NotebookPage) -> None:
    page = notebook.page
    page.locator(f"{VIEW} [data-testid=head-grid]").focus()
    page.keyboard.press("ArrowRight")
    page.keyboard.press("ArrowDown")
    revision = _revision(notebook)
    page.wait_for_selector(f"{VIEW}[data-painted='{revision}:1:3']", timeout=10_000)
    assert _wait_selected(notebook, {"layer": 1, "head": 3}) == {"layer": 1, "head": 3, "query": None, "key": None}


def test_click_token_and_cell_lock_query_key(notebook: NotebookPage) -> None:
    page = notebook.page
    page.locator(f"{VIEW} [data-testid=token][data-index='5']").click()
    assert _wait_selected(notebook, {"query": 5})["query"] == 5
    x, y = cell_point(notebook.page, f"{VIEW} [data-testid=pattern-heatmap]", row=8, col=3)
    page.mouse.click(x, y)
    selected = _wait_selected(notebook, {"query": 8, "key": 3})
    assert (selected["query"], selected["key"]) == (8, 3)
    assert "0." in page.locator(f"{VIEW} [data-testid=readout]").inner_text()


def test_python_selection_drives_view(notebook: NotebookPage) -> None:
    notebook.execute('view.selected = {"layer": 0, "head": 1, "query": None, "key": None}')
    revision = _revision(notebook)
    notebook.page.wait_for_selector(f"{VIEW}[data-painted='{revision}:0:1']", timeout=10_000)


def test_prompt_box_reruns_model(notebook: NotebookPage) -> None:
    page = notebook.page
    before = _revision(notebook)
    box = page.locator(f"{VIEW} [data-testid=prompt-input]")
    box.fill("One two three four. One two three four.")
    page.locator(f"{VIEW} [data-testid=run-button]").click()
    page.wait_for_function(f"() => +document.querySelector('{VIEW}').dataset.revision > {before}", timeout=30_000)
    assert notebook.python_value("view.prompt") == "One two three four. One two three four."
    tokens = notebook.python_value("view.tokens")
    revision = _revision(notebook)
    assert revision > before
    page.wait_for_selector(f"{VIEW}[data-painted^='{revision}:']", timeout=10_000)
    shown = page.locator(f"{VIEW} [data-testid=token]").all_text_contents()
    assert len(shown) == len(tokens)
    assert "".join(shown).replace("\u21b5", "\n") == "".join(tokens)


def test_untrusted_tokens_stay_text(notebook: NotebookPage) -> None:
    page = notebook.page
    before = _revision(notebook)
    evil = "<img src=x onerror=window.__miw_pwned=1></script><b>bold</b>"
    page.locator(f"{VIEW} [data-testid=prompt-input]").fill(evil)
    page.locator(f"{VIEW} [data-testid=run-button]").click()
    page.wait_for_function(f"() => +document.querySelector('{VIEW}').dataset.revision > {before}", timeout=30_000)
    page.wait_for_timeout(300)
    assert page.evaluate("() => window.__miw_pwned") is None
    strip = page.locator(f"{VIEW} [data-testid=token-strip]")
    assert strip.locator("img, b, script").count() == 0
    assert "onerror" in "".join(strip.all_text_contents())


def test_bad_prompt_shows_error_and_view_survives(notebook: NotebookPage) -> None:
    page = notebook.page
    before = _revision(notebook)
    page.locator(f"{VIEW} [data-testid=prompt-input]").fill("word " * 600)
    page.locator(f"{VIEW} [data-testid=run-button]").click()
    error = page.locator(f"{VIEW} [data-testid=error]")
    error.wait_for(state="visible", timeout=30_000)
    assert "n_ctx" in error.inner_text()
    assert _revision(notebook) == before  # nothing the user had is lost
    x, y = cell_point(notebook.page, f"{VIEW} [data-testid=head-grid]", row=1, col=1)
    page.mouse.click(x, y)
    page.wait_for_selector(f"{VIEW}[data-painted='{before}:1:1']", timeout=10_000)
    assert notebook.python_value("1 + 1") == 2  # the kernel keeps working


def test_follows_dark_theme(notebook: NotebookPage) -> None:
    page = notebook.page
    page.evaluate("() => window.jupyterapp.commands.execute('apputils:change-theme', {theme: 'JupyterLab Dark'})")
    page.wait_for_function("() => document.body.dataset.jpThemeLight === 'false'", timeout=20_000)
    page.wait_for_timeout(500)
    luminance = page.locator(VIEW).evaluate(
        """e => { let n = e; while (n) { const c = getComputedStyle(n).backgroundColor;
              const m = c.match(/[\\d.]+/g); if (m && (m.length < 4 || +m[3] > 0)) { const [r,g,b] = m.map(Number);
              return (0.2126*r + 0.7152*g + 0.0722*b) / 255; } n = n.parentElement; } return 1; }"""
    )
    page.locator(VIEW).screenshot(path=str(OUTPUT / "attention_dark.png"))
    assert luminance < 0.35
    page.evaluate("() => window.jupyterapp.commands.execute('apputils:change-theme', {theme: 'JupyterLab Light'})")
    page.wait_for_function("() => document.body.dataset.jpThemeLight === 'true'", timeout=20_000)


def test_save_picture_buttons_download_svg_and_png(notebook: NotebookPage) -> None:
    from pathlib import Path
    from xml.etree import ElementTree

    page = notebook.page
    with page.expect_download(timeout=30_000) as svg_download:
        page.locator(f"{VIEW} [data-testid=export-svg]").click()
    assert svg_download.value.suggested_filename == "AttentionView.svg"
    svg = Path(svg_download.value.path()).read_text(encoding="utf-8")
    selected = notebook.python_value("view.selected")
    assert svg.startswith("<svg") and f"L{selected['layer']}H{selected['head']}:" in svg  # the head shown now
    texts = {t.text for t in ElementTree.fromstring(svg).iter("{http://www.w3.org/2000/svg}text")}
    n_tokens = len(notebook.python_value("view.tokens"))
    assert any(t and t.startswith(f"AttentionView: {n_tokens} tokens") for t in texts)  # labels stay text
    with page.expect_download(timeout=30_000) as png_download:
        page.locator(f"{VIEW} [data-testid=export-png]").click()
    assert Path(png_download.value.path()).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
