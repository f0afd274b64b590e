"""FourierView: the paper's analyses on the shipped modadd-113, planted frequencies through the whole widget, the
requests the view makes, selections, and models that do not fit."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
import torch
import traitlets

import mi_widgets as mw
from mi_widgets.analysis import fourier
from mi_widgets.capture.modular import ModularRun
from mi_widgets.transport.codec import decode_array
from mi_widgets.widgets import fourier_view
from mi_widgets.zoo import modadd

P = 113


@pytest.fixture(scope="module")
def shipped() -> Any:
    return mw.zoo.load("modadd-113")


@pytest.fixture(scope="module")
def view(shipped: Any) -> Any:
    v = mw.FourierView(shipped)
    yield v
    v.close()


def test_the_shipped_model_read_as_in_the_paper(view: Any) -> None:
    assert view.p == P and view.n_neurons == 512 and view.n_heads == 4
    # Five frequencies, as in the paper; each the dominant one of 78-124 of the 512 neurons.
    assert sorted(view.key_frequencies) == [5, 7, 20, 21, 42]
    clusters = {c["frequency"]: c for c in view.clusters}
    assert set(clusters) == {5, 7, 20, 21, 42}
    assert sum(c["count"] for c in clusters.values()) == 512
    assert all(c["mean_fraction"] > 0.6 for c in clusters.values())
    # The embedding is sparse in the Fourier basis: its top frequencies are the key ones (and 10).
    assert set(fourier.top_frequencies(view.embed_norms, 5)) == {5, 7, 20, 21, 42}
    # cos/sin(w(a+b-c)) at the key frequencies explain ~80% of the centred logits; the prediction tracks them.
    assert 0.75 < view.key_fraction < 0.85
    assert view.correlation > 0.95
    measures = view.progress_measures(modadd.train_split(P))
    assert measures["test_acc"] == 1.0 and measures["restricted_loss"] < 1e-4 and measures["excluded_loss"] > 5
    assert view.selected["frequency"] == view.key_frequencies[0]
    assert view.selected["neuron"] == view.neurons(view.key_frequencies[0])[0]


def test_requests_the_view_makes(view: Any, capture: Any, ask: Any) -> None:
    sent = capture(view)
    rid = ask(view, "summary")
    sent.wait(rid)
    content, buffers = sent.reply(rid)
    result = content["result"]
    assert result["key_frequencies"] == view.key_frequencies
    embed = decode_array(result["embed_norms"], buffers)
    assert embed.shape == ((P + 1) // 2,) and embed.dtype == np.float32
    np.testing.assert_allclose(decode_array(result["logit_fractions"], buffers), view.logit_fractions.numpy())
    assert decode_array(result["neuron_frequency"], buffers).tolist() == view.neuron_frequency.tolist()
    assert result["clusters"][0]["count"] >= result["clusters"][-1]["count"]

    rid = ask(view, "grid", {"kind": "neuron", "index": 3})
    sent.wait(rid)
    content, buffers = sent.reply(rid)
    grid = decode_array(content["result"]["values"], buffers)
    assert grid.shape == (P, P) and grid.dtype == np.float16
    np.testing.assert_allclose(grid[2, 7], float(view.run.neurons[2 * P + 7, 3]), rtol=1e-2, atol=1e-2)
    assert "frequency" in content["result"]["label"]

    rid = ask(view, "grid", {"kind": "attention", "index": 1})
    sent.wait(rid)
    content, buffers = sent.reply(rid)
    att = decode_array(content["result"]["values"], buffers)
    assert 0 <= att.min() and att.max() <= 1

    rid = ask(view, "logits", {"a": 30, "b": 100})
    sent.wait(rid)
    content, buffers = sent.reply(rid)
    r = content["result"]
    assert r["answer"] == (30 + 100) % P
    logits = decode_array(r["logits"], buffers)
    prediction = decode_array(r["prediction"], buffers)
    assert int(np.argmax(logits)) == r["answer"] == int(np.argmax(prediction))

    for params, message in (
        ({"kind": "neuron", "index": 512}, "neuron must be 0..511, got 512"),
        ({"kind": "pixel", "index": 0}, "kind must be 'neuron' or 'attention'"),
    ):
        rid = ask(view, "grid", params)
        sent.wait(rid)
        content, _ = sent.reply(rid)
        assert not content["ok"] and message in content["error"]["message"]
    rid = ask(view, "logits", {"a": 113, "b": 0})
    sent.wait(rid)
    assert "a and b must be in 0..112" in sent.reply(rid)[0]["error"]["message"]


def test_selected(view: Any) -> None:
    before = dict(view.selected)
    view.selected = {"frequency": 7, "neuron": np.int64(5), "head": 2, "a": 3, "b": 4}
    assert view.selected == {"frequency": 7, "neuron": 5, "head": 2, "a": 3, "b": 4}
    assert type(view.selected["neuron"]) is int
    view.selected = {"frequency": None, "neuron": None, "head": 0, "a": 0, "b": 0}
    for bad, message in (
        ({"frequency": 57}, "selected frequency must be in 0..56"),
        ({"neuron": 512}, "selected neuron must be in 0..511 or None"),
        ({"head": 1.5}, "selected head must be an integer"),
        ({"a": True}, "selected a must be an integer"),
        ({"pair": [1, 2]}, "selected takes frequency, neuron, head, a and b"),
    ):
        with pytest.raises(traitlets.TraitError, match=message):
            view.selected = {**before, **bad}
    view.selected = before


def planted_run(p: int, d_mlp: int, freqs: list[int]) -> ModularRun:
    """What a model running the paper's algorithm exactly at ``freqs`` would give."""
    x = torch.arange(p, dtype=torch.float64)
    a, b = x.repeat_interleave(p), x.repeat(p)
    logits = torch.zeros(p * p, p, dtype=torch.float64)
    neurons = torch.zeros(p * p, d_mlp, dtype=torch.float64)
    embed = torch.zeros(p, 8, dtype=torch.float64)
    for i, k in enumerate(freqs):
        w = 2 * math.pi * k / p
        logits += (3.0 - i) * torch.cos(w * (a[:, None] + b[:, None] - x[None, :]))
        embed[:, 2 * i] += torch.cos(w * x)
        embed[:, 2 * i + 1] += torch.sin(w * x)
    for n in range(d_mlp):  # neuron n: frequency freqs[n % len(freqs)], phase n
        w = 2 * math.pi * freqs[n % len(freqs)] / p
        neurons[:, n] = torch.cos(w * (a + b) + n)
    attention = torch.full((p * p, 2), 0.5, dtype=torch.float64)
    return ModularRun(p, 0, logits.float(), neurons.float(), attention.float(), embed.float())


def test_planted_frequencies_come_back_exactly(monkeypatch: pytest.MonkeyPatch) -> None:
    p, freqs = 13, [2, 5, 3]
    config = modadd.ModAddConfig(p=p, d_model=16, n_heads=2, d_head=8, d_mlp=30)
    model = modadd.to_bridge(modadd.init_params(config), config)
    monkeypatch.setattr(fourier_view, "run_all_pairs", lambda adapter, p, equals, layer: planted_run(p, 30, freqs))
    view = mw.FourierView(model)
    try:
        assert sorted(view.key_frequencies) == sorted(freqs)
        assert {c["frequency"]: c["count"] for c in view.clusters} == {2: 10, 5: 10, 3: 10}
        assert all(c["mean_fraction"] == pytest.approx(1.0, abs=1e-5) for c in view.clusters)
        assert view.key_fraction == pytest.approx(1.0, abs=1e-5)
        assert view.correlation == pytest.approx(1.0, abs=1e-6)
        assert sorted(fourier.top_frequencies(view.embed_norms, 3)) == [2, 3, 5]
        assert view.neurons(5) == sorted(view.neurons(5), key=lambda n: -float(view.neuron_fraction[n]))
    finally:
        view.close()


def test_a_real_small_model_runs_through(shipped: Any) -> None:
    """The real capture path on a second model shape (no planting): a just-initialised p=13 model."""
    config = modadd.ModAddConfig(p=13, d_model=16, n_heads=2, d_head=8, d_mlp=24)
    params = modadd.init_params(config)
    view = mw.FourierView(modadd.to_bridge(params, config))
    try:
        tokens, _ = fourier.all_pairs(13)
        ref = modadd.forward(params, tokens, n_heads=2)
        assert torch.allclose(view.logits, ref, atol=1e-4)
        assert view.run.neurons.shape == (169, 24) and view.run.attention.shape == (169, 2)
    finally:
        view.close()


def test_models_that_do_not_fit_are_refused(shipped: Any, native_model: Any) -> None:
    with pytest.raises(ValueError, match="p must be a prime of at least 5.*got 112"):
        mw.FourierView(shipped, p=112)
    with pytest.raises(ValueError, match=r"has p outputs \(d_vocab_out = 97.*this model has d_vocab_out = 113"):
        mw.FourierView(shipped, p=97)
    with pytest.raises(ValueError, match="'=' token must be an id from 113 to 113.*got 5"):
        mw.FourierView(shipped, equals=5)
    with pytest.raises(ValueError, match="layer must be 0..0, got 1"):
        mw.FourierView(shipped, layer=1)
    with pytest.raises(ValueError, match="p must be a prime|d_vocab_out"):
        mw.FourierView(native_model)  # a language model: its vocabulary is not 0..p-1 and "="
