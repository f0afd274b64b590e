"""Composition: scores, the random baseline, CompositionView's requests and selection, bad input."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pytest
import torch
import traitlets

import mi_widgets as mw
from mi_widgets.analysis.composition import composition_baseline
from mi_widgets.capture.adapter import ModelAdapter
from mi_widgets.transport.codec import decode_array


@pytest.fixture(scope="module")
def model() -> Any:
    return mw.zoo.load("induction-2l")


def test_previous_token_heads_are_the_k_composition_sources(model: Any) -> None:
    scan = mw.HeadScan(model, n_batches=2).wait(30)
    prev = scan.scores["previous_token"][0]
    view = mw.CompositionView(model)
    k_comp = view.scores("K")
    assert k_comp.shape == (2, 4, 2, 4) and not k_comp.requires_grad
    assert torch.count_nonzero(k_comp[1]) == 0 and torch.count_nonzero(k_comp[0, :, 0]) == 0  # only later layers
    above_random = k_comp[0, :, 1, :].mean(-1) - view.baseline  # each layer-0 head -> all layer-1 heads
    assert int(above_random.argmax()) == int(prev.argmax())
    assert torch.equal(above_random.argsort(), prev.argsort()), (
        "K-composition ranks layer-0 heads as prev-token scores do"
    )
    l1, h1, l2, _, score = view.top("K", k=1)[0]
    assert (l1, h1, l2) == (0, int(prev.argmax()), 1) and score > view.baseline + 0.1


def test_baseline_matches_random_heads() -> None:
    d_model, d_head = 64, 16
    gen = torch.Generator().manual_seed(1)
    scores = []
    for _ in range(200):
        w_v, w_q, w_k = (torch.randn(d_model, d_head, generator=gen, dtype=torch.float64) for _ in range(3))
        w_o = torch.randn(d_head, d_model, generator=gen, dtype=torch.float64)
        ov, qk = w_v @ w_o, w_q @ w_k.T
        scores.append(float((ov @ qk).norm() / (ov.norm() * qk.norm())))
    assert composition_baseline(d_model, d_head, samples=200) == pytest.approx(sum(scores) / len(scores), rel=0.03)
    assert composition_baseline(768, 64) < composition_baseline(64, 16)  # wider residual stream, lower chance level
    with pytest.raises(ValueError, match="positive d_model"):
        composition_baseline(0, 16)


def test_modes_and_errors(model: Any) -> None:
    adapter = ModelAdapter(model)
    for mode in "QKV":
        scores = adapter.composition_scores(mode)
        assert scores.shape == (2, 4, 2, 4) and not scores.requires_grad
    with pytest.raises(ValueError, match="mode must be one of Q, K, V"):
        adapter.composition_scores("O")
    without = ModelAdapter(model)
    without.model = torch.nn.Linear(2, 2)  # a model object that cannot score composition
    assert adapter.has_composition_scores and not without.has_composition_scores
    with pytest.raises(TypeError, match="W_Q, W_K, W_V, W_O"):
        without.composition_scores()
    with pytest.raises(TypeError, match="expected a TransformerLens model"):
        mw.CompositionView(torch.nn.Linear(2, 2))
    with pytest.raises(traitlets.TraitError):
        mw.CompositionView(model, mode="O")


def test_scores_request_sends_the_matrix_with_nan_below_the_layer_blocks(
    model: Any, capture: Callable[[Any], Any], ask: Callable[..., str]
) -> None:
    view = mw.CompositionView(model)
    sent = capture(view)
    rid = ask(view, "scores", {"mode": "V"})
    sent.wait(rid)
    content, buffers = sent.reply(rid)
    result = content["result"]
    assert content["ok"] and result["mode"] == "V" and result["revision"] == view.revision
    assert result["baseline"] == pytest.approx(view.baseline)
    matrix = torch.tensor(decode_array(result["scores"], buffers), dtype=torch.float32)
    assert matrix.shape == (8, 8)
    expected = view.scores("V").reshape(8, 8)
    writer_layer = torch.arange(2).repeat_interleave(4)
    valid = writer_layer[:, None] < writer_layer[None, :]
    assert torch.isnan(matrix[~valid]).all()
    assert torch.allclose(matrix[valid], expected[valid], atol=1e-3)  # float16 on the wire

    bad = ask(view, "scores", {"mode": "O"})
    sent.wait(bad)
    content, _ = sent.reply(bad)
    assert not content["ok"] and "mode must be one of Q, K, V" in content["error"]["message"]


def test_selection_and_refresh(model: Any) -> None:
    view = mw.CompositionView(model)
    assert view.selected == {"writer": None, "reader": None}
    view.selected = {"writer": (0, 2), "reader": [1, 3]}
    assert view.selected == {"writer": [0, 2], "reader": [1, 3]}
    for bad, message in [
        ({"writer": [1, 0], "reader": [0, 1]}, "must come before"),
        ({"writer": [0, 9], "reader": [1, 0]}, "head must be in 0..3"),
        ({"writer": [0, 1], "reader": None}, "both"),
        ({"writer": 3, "reader": [1, 0]}, r"\[layer, head\]"),
        ({"source": [0, 1]}, "unknown"),
    ]:
        with pytest.raises(traitlets.TraitError, match=message):
            view.selected = bad
    assert view.selected == {"writer": [0, 2], "reader": [1, 3]}  # a bad value changes nothing
    before = view.scores("K")
    revision = view.revision
    view.refresh()
    assert view.revision == revision + 1 and torch.equal(view.scores("K"), before)
    assert all(math.isfinite(s[-1]) for s in view.top("Q", k=16)) and len(view.top("Q", k=100)) == 16
