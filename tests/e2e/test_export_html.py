"""``view.to_html()`` files opened from disk in headless Chromium, with no kernel and the network blocked."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from .lab import OUTPUT, cell_point, chromium_browser

pytestmark = pytest.mark.e2e

PROMPT = "The cat sat on the mat. The cat sat on the"
VIEW = "[data-testid=attention-view]"
LONG_VALUES = (0.25, 0.75)


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    import mi_widgets as mw

    folder = tmp_path_factory.mktemp("export")
    view = mw.AttentionView(mw.zoo.load("induction-2l"), PROMPT, layer=1, head=0)
    full = view.to_html(folder / "attention.html")
    with pytest.warns(UserWarning, match="left out"):
        view.to_html(folder / "budget.html", max_bytes=1)
    out = {"folder": folder, "revision": view.revision, "tokens": list(view.tokens), "included": full.included}
    view.close()
    # Past EXACT_MAX_SEQ tokens the export holds tiles and no exact lines: head h is LONG_VALUES[h] on and below
    # the diagonal, so every tile level holds the same value there.
    seq = 600
    causal = torch.ones(seq, seq).tril()
    long_view = mw.attention_heads(torch.stack([v * causal for v in LONG_VALUES]), [f"t{i}" for i in range(seq)])
    long_view.to_html(folder / "long.html")
    out["long_revision"] = long_view.revision
    long_view.close()
    return out


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium_browser() as b:
        yield b


def _open(browser: Any, path: Path) -> tuple[Any, list[str]]:
    """A fresh page on ``path``; every request that is not the file itself or a blob/data URL is recorded and refused."""
    page = browser.new_page(viewport={"width": 1100, "height": 900})
    refused: list[str] = []
    errors: list[str] = []

    def route(r: Any) -> None:
        if r.request.url.startswith(("blob:", "data:")) or r.request.url == path.as_uri():
            r.continue_()
        else:
            refused.append(r.request.url)
            r.abort()

    page.route("**/*", route)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(path.as_uri())
    return page, refused + errors


def test_opens_from_disk_and_answers_hover_and_head_switches(browser: Any, exported: dict[str, Any]) -> None:
    page, problems = _open(browser, exported["folder"] / "attention.html")
    rev = exported["revision"]
    page.wait_for_selector(f"{VIEW}[data-painted='{rev}:1:0']", timeout=20_000)
    assert page.locator(f"{VIEW} [data-testid=token]").all_text_contents() == exported["tokens"]
    assert not page.locator(f"{VIEW} [data-testid=prompt-input]").is_visible()  # no kernel to re-run with
    assert "9 of 9 parts" in page.inner_text("#miw-note")

    x, y = cell_point(
        page, f"{VIEW} [data-testid=pattern-heatmap]", row=8, col=3
    )  # hover: the readout quotes the cell's weight
    page.mouse.move(x, y)
    page.wait_for_function(
        f"() => /query 8 .* key 3 .*: \\d/.test(document.querySelector('{VIEW} [data-testid=readout]').textContent)"
    )
    x, y = cell_point(
        page, f"{VIEW} [data-testid=head-grid]", row=0, col=2
    )  # click another head: its pattern comes from the file
    page.mouse.click(x, y)
    page.wait_for_selector(f"{VIEW}[data-painted='{rev}:0:2']", timeout=10_000)
    page.locator(f"{VIEW} [data-testid=head-grid]").focus()
    page.keyboard.press("ArrowDown")
    page.wait_for_selector(f"{VIEW}[data-painted='{rev}:1:2']", timeout=10_000)
    assert not page.locator(f"{VIEW} [data-testid=error]").is_visible()
    page.screenshot(path=str(OUTPUT / "export_html.png"))
    assert problems == []  # nothing asked the network, nothing threw
    page.close()


def test_a_head_left_out_of_the_budget_says_so_in_the_view(browser: Any, exported: dict[str, Any]) -> None:
    page, problems = _open(browser, exported["folder"] / "budget.html")
    rev = exported["revision"]
    page.wait_for_selector(f"{VIEW}[data-painted='{rev}:1:0']", timeout=20_000)
    assert "left out over the 0 MiB budget: L0H0" in page.inner_text("#miw-note")
    x, y = cell_point(page, f"{VIEW} [data-testid=head-grid]", row=0, col=1)
    page.mouse.click(x, y)
    banner = page.locator(f"{VIEW} [data-testid=error]")
    banner.wait_for(state="visible", timeout=10_000)
    assert "not in this export: pattern" in banner.inner_text()
    assert problems == []
    page.close()


def test_a_long_export_reads_hovered_values_from_its_tiles(browser: Any, exported: dict[str, Any]) -> None:
    """Past 512 tokens the file holds tiles, not exact rows: the readout quotes the tile's value (quantised to
    1/255 of the scale), with no error, for the selected head and for another one."""
    page, problems = _open(browser, exported["folder"] / "long.html")
    rev = exported["long_revision"]
    readout = page.locator(f"{VIEW} [data-testid=readout]")
    for head, expected in enumerate(LONG_VALUES):
        if head:
            x, y = cell_point(page, f"{VIEW} [data-testid=head-grid]", row=0, col=head)
            page.mouse.click(x, y)
        page.wait_for_selector(f"{VIEW}[data-painted='{rev}:0:{head}']", timeout=20_000)
        x, y = cell_point(page, f"{VIEW} [data-testid=pattern-heatmap]", row=500, col=100)
        page.mouse.move(x, y - 3)
        page.mouse.move(x, y)
        page.wait_for_function(
            f"() => /key \\d+ .*: ≈/.test(document.querySelector('{VIEW} [data-testid=readout]').textContent)"
        )
        text = readout.inner_text()
        value = float(text.split("≈")[1].split()[0])
        assert abs(value - expected) <= 1 / 255 + 0.005, text
    assert not page.locator(f"{VIEW} [data-testid=error]").is_visible()
    assert problems == []
    page.close()
