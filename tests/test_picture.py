"""Static pictures (transport/picture.py): the image/png in every display bundle, for readers without a kernel."""

from __future__ import annotations

import io
import math
import warnings
from typing import Any

import numpy as np
import pytest
import torch
from IPython.core.formatters import DisplayFormatter
from PIL import Image

import mi_widgets as mw
from mi_widgets.transport import picture

WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


@pytest.fixture(scope="module")
def induction() -> Any:
    return mw.zoo.load("induction-2l")


def _bundle(widget: Any) -> dict[str, Any]:
    data, _ = DisplayFormatter().format(widget)
    return data


def _image(png: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(png))
    image.load()
    return image


def test_colour_indices_follow_the_views() -> None:
    got = picture.color_index(np.array([-1, 0, 0.5, 1, 2, math.nan, math.inf]), 0.0, 1.0)
    assert got.tolist() == [0, 0, 128, 255, 255, -1, -1]
    assert picture.color_index(np.array([0.0, 1.0, 2.0]), 1.0, 1.0).tolist() == [0, 255, 255]  # empty range
    light = picture.colormap_lut(picture.SEQUENTIAL["light"])
    assert light[0].tolist() == [255, 255, 255] and light[255].tolist() == [8, 48, 107]
    diverging = picture.colormap_lut(picture.DIVERGING["light"])
    assert diverging[0].tolist() == [33, 102, 172] and diverging[255].tolist() == [178, 24, 43]
    assert min(diverging[127].tolist() + diverging[128].tolist()) >= 254  # the centre is the background


def test_heatmap_pools_large_arrays_keeping_a_one_cell_stripe() -> None:
    eye = np.eye(1024)
    image = picture.heatmap(eye, 0.0, 1.0, max_side=256)
    assert image.size == (256, 256)
    pixels = np.asarray(image)
    dark = picture.colormap_lut(picture.SEQUENTIAL["light"])[255]
    assert all((pixels[i, i] == dark).all() for i in range(256))  # the diagonal survives a 4x reduction
    assert (pixels[0, 255] == [255, 255, 255]).all()
    pooled = picture.max_pool(np.array([[1.0, -3.0], [2.0, math.nan]]), 1)
    assert pooled.tolist() == [[-3.0]]  # the largest magnitude, its sign kept
    nan = picture.heatmap(np.array([[math.nan, 0.0]]), 0.0, 1.0, cell=1)
    assert np.asarray(nan)[0, 0].tolist() == list(picture.NAN_RGB)
    with pytest.raises(ValueError, match=r"non-empty \[rows, cols\] array, got shape \[3\]"):
        picture.heatmap(np.zeros(3), 0.0, 1.0)


def test_png_is_scaled_down_to_its_budget() -> None:
    noise = Image.fromarray(np.random.default_rng(0).integers(0, 255, (800, 800, 3), dtype=np.uint8))
    png = picture.png_bytes(noise, limit=200_000)
    assert len(png) <= 200_000 and _image(png).width < 800
    small = picture.png_bytes(Image.new("RGB", (50, 40), picture.BACKGROUND))
    assert _image(small).size == (50, 40)


def test_untrusted_labels_are_drawn_on_one_line() -> None:
    labels = ["\x00\x1b[31m", "line\nbreak", "\u202eevil", "😀" * 30, "", "<img src=x>", "y" * 100_000]
    assert picture.fit_text("a\nb\tc\x07", 200) == "a b c "
    assert picture.font().getlength(picture.fit_text("x" * 500, 80)) <= 80
    image = picture.labelled_heatmap(picture.heatmap(np.eye(7), 0, 1, cell=14), labels, labels)
    assert image.width > 7 * 14 and image.height > 7 * 14
    strip = picture.token_strip(labels, np.arange(7.0), 0, 6)  # a 100,000-character token is cut, not measured
    assert strip.width == 720


def test_compose_wraps_panels_and_stays_within_the_width() -> None:
    panels = [picture.Panel(Image.new("RGB", (400, 100), (0, 0, 0)), f"panel {i}") for i in range(5)]
    image = picture.compose("title", panels, picture.NOTE)
    assert image.width <= picture.MAX_WIDTH + 16
    assert image.height > 3 * 100  # two per row: three rows


def test_attention_view_bundle_carries_the_live_view_and_a_picture(induction: Any) -> None:
    view = mw.AttentionView(induction, "When Mary and John went to the store, John gave a drink to")
    view.selected = {"layer": 1, "head": 2}
    data = _bundle(view)
    assert WIDGET_VIEW in data and "image/png" in data and "text/plain" in data
    png = view._repr_png_()
    assert png is not None and len(png) < picture.MAX_PNG_BYTES
    image = _image(png)
    assert image.width > 300 and image.height > 200
    # the selected head is drawn at full resolution: the colour of its strongest cell is in the picture
    pixels = np.asarray(image.convert("RGB")).reshape(-1, 3)
    strongest = picture.color_index(np.array([float(view.pattern(1, 2).max())]), 0.0, 1.0)[0]
    assert (pixels == picture.colormap_lut(picture.SEQUENTIAL["light"])[strongest]).all(-1).any()
    view.selected = {"layer": 0, "head": 0}
    assert view._repr_png_() != png  # the picture follows the selection
    view.close()
    assert "image/png" in _bundle(view)  # a closed widget still shows its picture


def test_a_long_prompt_picture_stays_small() -> None:
    patterns = torch.softmax(torch.randn(2, 4, 1024, 1024), -1).tril()
    view = mw.AttentionView.from_patterns(patterns, [f"tok{i}" for i in range(1024)])
    png = view._repr_png_()
    assert png is not None and len(png) < picture.MAX_PNG_BYTES
    assert max(_image(png).size) <= picture.MAX_WIDTH + 16
    view.close()


def test_a_picture_that_fails_is_left_out_with_a_warning(induction: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    view = mw.AttentionView(induction, "The cat sat")

    def broken() -> Any:
        raise RuntimeError("no font")

    monkeypatch.setattr(view, "_picture", broken)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        data = _bundle(view)
    assert WIDGET_VIEW in data and "image/png" not in data
    assert any("no static picture of this AttentionView: no font" in str(w.message) for w in caught)
    view.close()


PROMPT = "When Mary and John went to the store, John gave a drink to"
CORPUS = [PROMPT, "The cat sat on the mat. The cat sat on the mat again.", "One two three four. One two three four."]


def _sae(model: Any) -> Any:
    from mi_widgets.analysis.sae import SparseAutoencoder

    d = int(model.cfg.d_model)
    return SparseAutoencoder(
        d, 32, "relu", hook_name="blocks.1.hook_resid_post", generator=torch.Generator().manual_seed(0)
    )


INSTANT_VIEWS = {  # on ioi-4l, whose vocabulary has the names as single tokens
    "CompositionView": lambda m: mw.CompositionView(m),
    "LogitLens": lambda m: mw.LogitLens(m, PROMPT, target=" Mary"),
    "LogitAttribution": lambda m: mw.LogitAttribution(m, PROMPT, answer=" Mary", wrong=" John"),
    "ActivationView": lambda m: mw.ActivationView(m, [PROMPT, "Then John and Mary met"], hook="resid_post"),
}


@pytest.fixture(scope="module")
def ioi() -> Any:
    return mw.zoo.load("ioi-4l")


@pytest.mark.parametrize("name", sorted(INSTANT_VIEWS))
def test_views_made_at_once_show_a_picture_of_their_data(name: str, ioi: Any) -> None:
    view = INSTANT_VIEWS[name](ioi)
    data = _bundle(view)
    assert WIDGET_VIEW in data and "image/png" in data
    png = view._repr_png_()
    assert png is not None and len(png) < picture.MAX_PNG_BYTES
    pixels = np.asarray(_image(png).convert("RGB")).reshape(-1, 3)
    coloured = (pixels.max(-1).astype(int) - pixels.min(-1)) > 40  # heatmap or token colours, not just ink
    assert coloured.sum() > 50
    view.close()


def test_fourier_view_marks_its_key_frequencies() -> None:
    view = mw.FourierView(mw.zoo.load("modadd-113"))
    png = view._repr_png_()
    assert png is not None and "image/png" in _bundle(view)
    pixels = np.asarray(_image(png).convert("RGB"))
    accent = (pixels == picture.ACCENT).all(-1)
    columns = np.flatnonzero(accent.any(0))
    runs = 1 + int((np.diff(columns) > 1).sum())  # separate accent bars across both charts
    assert runs == 2 * len(view.key_frequencies)  # five key frequencies in each of the two charts
    view.close()


def test_background_work_draws_what_it_has_and_says_how_far_it_came(ioi: Any, induction: Any) -> None:
    data = mw.ioi_prompts(ioi, n=8, seed=0)
    made = {
        "HeadScan": mw.HeadScan(induction, n_batches=3, batch_size=4, autostart=False),
        "Patching": mw.Patching(
            ioi, data.clean, data.corrupted, metric=mw.logit_diff(data.answers, data.wrong), autostart=False
        ),
        "PathPatching": mw.PathPatching(ioi, data, autostart=False),
        "Grokking": mw.Grokking(p=23, d_model=32, n_heads=2, d_mlp=64, steps=60, device="cpu"),
        "SuperpositionToy": mw.SuperpositionToy(steps=200, autostart=False),
        "TopExamples": mw.TopExamples(
            induction, CORPUS, hook="blocks.1.hook_resid_post", neurons=range(8), k=3, autostart=False
        ),
        "FeatureView": mw.FeatureView(_sae(induction), induction, [PROMPT], corpus=CORPUS, k=3, autostart=False),
    }
    for name, widget in made.items():
        before = widget._repr_png_()
        assert before is not None and "image/png" in _bundle(widget), name
        assert "Drawn at step 0 of" in widget._picture_note() and "(idle)" in widget._picture_note()
        widget.run() if isinstance(widget, (mw.Grokking, mw.SuperpositionToy)) else widget.start()
        widget.wait(120)
        assert widget.status == "done", (name, widget.error)
        after = widget._repr_png_()
        assert after is not None and after != before and len(after) < picture.MAX_PNG_BYTES, name
        assert widget._picture_note().endswith("Drawn after all " + str(widget.progress["total"]) + " steps.")
        widget.close()


def test_line_chart_leaves_gaps_and_labels_its_range() -> None:
    chart = picture.line_chart([("a", [0, 1, 2, 3], [1.0, math.nan, 3.0, 4.0]), ("b", [0, 3], [0.0, -1.0])], log_y=True)
    pixels = np.asarray(chart.image())
    first, second = picture.CATEGORICAL[0], picture.CATEGORICAL[1]
    assert (pixels == first).all(-1).sum() > 20  # series a: the segment after the gap (and its legend)
    assert (pixels == second).all(-1).sum() < 200  # series b has no positive values: only its legend swatch


def test_every_widget_draws_its_own_picture() -> None:
    import anywidget

    from mi_widgets.widgets.base import ProtocolWidget

    exported = [getattr(mw, name) for name in mw.__all__]
    widgets = [cls for cls in exported if isinstance(cls, type) and issubclass(cls, anywidget.AnyWidget)]
    assert len(widgets) >= 13
    missing = [cls.__name__ for cls in widgets if cls._picture is ProtocolWidget._picture]
    assert not missing, f"no static picture: {missing}"


def test_to_png_writes_the_picture(induction: Any, tmp_path: Any) -> None:
    view = mw.AttentionView(induction, "The cat sat on the mat")
    path = tmp_path / "attention.png"
    data = view.to_png(path)
    assert path.read_bytes() == data == view._repr_png_()
    assert _image(data).format == "PNG"
    view.close()


def test_a_turned_label_reads_upwards_from_its_anchor() -> None:
    drawing = picture.Drawing(120, 120)
    drawing.text((60, 100), "upwards", anchor="lm", turned=True)
    ink = np.argwhere((np.asarray(drawing.image()) < 128).all(-1))  # [row, col] of dark pixels
    assert ink.size and ink[:, 0].max() <= 101 and ink[:, 0].min() < 70  # above the anchor, a word long
    assert 52 <= ink[:, 1].min() and ink[:, 1].max() <= 68  # one line high, centred on x


def test_svg_keeps_labels_as_text_and_untrusted_tokens_inert(induction: Any, tmp_path: Any) -> None:
    import xml.etree.ElementTree as ET

    view = mw.AttentionView(induction, "a <b> & </svg> c")
    path = tmp_path / "attention.svg"
    svg = view.to_svg(path)
    assert path.read_text(encoding="utf-8") == svg
    root = ET.fromstring(svg)  # well-formed whatever the tokens hold
    ns = "{http://www.w3.org/2000/svg}"
    texts = [t.text or "" for t in root.iter(f"{ns}text")]
    assert any("AttentionView" in t for t in texts)
    assert sum(t.strip() == "&" for t in texts) == 2  # the token is a row and a (turned) column label
    assert any("rotate(-90" in (t.get("transform") or "") for t in root.iter(f"{ns}text"))
    [image] = root.iter(f"{ns}image")
    assert image.get("href", "").startswith("data:image/png;base64,")
    assert len(root) == 1 + len(texts)  # nothing but the raster and the labels
    view.close()


def test_the_export_button_gets_png_or_svg_bytes(induction: Any) -> None:
    view = mw.AttentionView(induction, "The cat sat on the mat")
    png = view._serve_export({"format": "png"}, [], None)
    assert png.result == {"filename": "AttentionView.png", "mime": "image/png"} and png.buffers == [view.to_png()]
    svg = view._serve_export({"format": "svg"}, [], None)
    assert svg.result["mime"] == "image/svg+xml" and bytes(svg.buffers[0]).startswith(b"<svg")
    with pytest.raises(ValueError, match="'png' or 'svg', got 'pdf'"):
        view._serve_export({"format": "pdf"}, [], None)
    view.close()
