"""The CircuitsVis drop-in (``mi_widgets.circuitsvis``): same functions, parameters and defaults as the installed
``circuitsvis``, CircuitsVis's own examples (its tests and docstrings) run with only the import changed, and the
views carry the data CircuitsVis would have rendered: each case runs the real ``circuitsvis`` function with its
``render`` captured and compares the props it would have sent with what the view holds.

``python tests/test_circuitsvis.py`` rewrites ``tests/fixtures/scale_vectors.json`` (the colour scale shared with
``js/src/lib/colormap.ts``'s ``anchoredColormap``; ``js/tests/colormap.test.ts`` reads it).
"""

from __future__ import annotations

import inspect
import json
import math
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

if __name__ != "__main__":
    from .conftest import ROOT
else:  # run as a script to rewrite the fixture
    ROOT = Path(__file__).resolve().parent.parent
    sys.path.insert(0, str(ROOT))

import mi_widgets as mw
import mi_widgets.circuitsvis as cv
from mi_widgets.transport.codec import decode_array
from mi_widgets.transport.scale import ColorScale, anchored_lut, parse_color

circuitsvis = pytest.importorskip("circuitsvis") if __name__ != "__main__" else None
MODULES = ["activations", "attention", "examples", "logits", "tokens", "topk_samples", "topk_tokens"]
SCALE_VECTORS = ROOT / "tests" / "fixtures" / "scale_vectors.json"


def _public_functions(module: Any) -> dict[str, Any]:
    return {
        name: f
        for name, f in inspect.getmembers(module, inspect.isfunction)
        if f.__module__ == module.__name__ and not name.startswith("_")
    }


def _props(monkeypatch: pytest.MonkeyPatch, module_name: str, call: Any) -> dict[str, Any]:
    """Run a real circuitsvis call and return the props its ``render`` would have sent (tensors as lists)."""
    import importlib

    module = importlib.import_module(f"circuitsvis.{module_name}")
    seen: dict[str, Any] = {}

    def fake_render(name: str, **kwargs: Any) -> str:
        seen.update(kwargs, _component=name)
        return ""

    monkeypatch.setattr(module, "render", fake_render)
    call(module)
    return {k: v.tolist() if isinstance(v, (torch.Tensor, np.ndarray)) else v for k, v in seen.items()}


# ----- the same API ---------------------------------------------------------------------------


def test_every_circuitsvis_module_and_function_is_offered_with_the_same_signature() -> None:
    import importlib

    assert sorted(cv.__all__) == sorted(set(circuitsvis.__all__) | {"logits"})
    for name in MODULES:
        theirs = _public_functions(importlib.import_module(f"circuitsvis.{name}"))
        ours = _public_functions(getattr(cv, name))
        assert theirs, name
        assert set(ours) == set(theirs), f"{name}: {sorted(set(theirs) ^ set(ours))}"
        for fname, f in theirs.items():
            a, b = inspect.signature(f).parameters, inspect.signature(ours[fname]).parameters
            assert list(a) == list(b), f"{name}.{fname}"
            for p in a:
                assert (a[p].kind, a[p].default) == (b[p].kind, b[p].default), f"{name}.{fname}({p})"


def test_import_like_circuitsvis() -> None:
    from mi_widgets.circuitsvis.attention import attention_heads  # as `from circuitsvis.attention import ...`

    assert attention_heads is cv.attention.attention_heads
    with pytest.raises(NotImplementedError, match="demo"):
        cv.examples.hello("Bob")


# ----- CircuitsVis's own tests, import changed -------------------------------------------------


def test_circuitsvis_attention_test(monkeypatch: pytest.MonkeyPatch) -> None:
    kwargs = {"tokens": ["a", "b"], "attention": np.array([[[0, 1], [0, 1]]])}
    res = cv.attention.attention_patterns(**kwargs)
    props = _props(monkeypatch, "attention", lambda m: m.attention_patterns(**kwargs))
    assert isinstance(res, mw.AttentionView)
    assert res.tokens == props["tokens"]
    assert res.patterns[0].tolist() == props["attention"]
    assert (res.n_layers, res.n_heads, res.mask_upper_tri) == (1, 1, False)  # AttentionPatterns masks nothing
    assert res._repr_png_()[:4] == b"\x89PNG"


def test_circuitsvis_tokens_test(monkeypatch: pytest.MonkeyPatch) -> None:
    res = cv.tokens.colored_tokens(tokens=["a", "b"], values=[1, 2])
    props = _props(monkeypatch, "tokens", lambda m: m.colored_tokens(tokens=["a", "b"], values=[1, 2]))
    assert isinstance(res, mw.ActivationView)
    assert res.tokens == [props["tokens"]]
    assert res.values()[0].tolist() == props["values"]
    # CircuitsVis's ColoredTokens defaults the scale to min(values)..max(values)
    assert (res.color_scale["lo"], res.color_scale["hi"]) == (1.0, 2.0)
    assert res._repr_png_()[:4] == b"\x89PNG"


ACTS_1 = np.array([[[0, 1, 0], [0, 1, 1]], [[0, 1, 1], [1, 1, 1]]])  # [tokens (2) x layers (2) x neurons (3)]
ACTS_2 = np.array([[[0, 1, 0], [0, 1, 1]], [[0, 1, 1], [1, 1, 1]], [[0, 1, 1], [1, 1, 1]]])


@pytest.mark.parametrize(
    "kwargs",
    [
        {"tokens": ["a", "b"], "activations": ACTS_1},
        {"tokens": [["a", "b"], ["c", "d", "e"]], "activations": [ACTS_1, ACTS_2]},
    ],
    ids=["single", "multi"],
)
def test_circuitsvis_activations_tests(kwargs: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    res = cv.activations.text_neuron_activations(**kwargs)
    props = _props(monkeypatch, "activations", lambda m: m.text_neuron_activations(**kwargs))
    samples = props["activations"] if isinstance(props["activations"][0][0][0], list) else [props["activations"]]
    tokens = props["tokens"] if isinstance(props["tokens"][0], list) else [props["tokens"]]
    assert res.tokens == tokens
    assert [a.permute(1, 0, 2).tolist() for a in res.activations] == samples  # ours: [layers, tokens, neurons]
    assert (res.layer_name, res.unit_name) == (props["firstDimensionName"], props["secondDimensionName"])
    assert (res.n_layers, res.d) == (2, 3)
    assert res.values(1, 2)[0].tolist() == [1.0, 1.0]


def test_circuitsvis_topk_samples_test(monkeypatch: pytest.MonkeyPatch) -> None:
    tokens = [
        [["And", " here"], ["This", " is", " another"]],
        [["Another", " example"], ["Weee", " is", " another"]],
    ]  # list of samples for the layer (n_neurons (2), samples (2), tokens (varied))
    activations = [[[0.2, 1], [1, 0.0, 0]], [[0, 1], [0.5, 1, 1]]]
    res = cv.topk_samples.topk_samples(tokens=[tokens], activations=[activations])
    props = _props(monkeypatch, "topk_samples", lambda m: m.topk_samples(tokens=[tokens], activations=[activations]))
    assert isinstance(res, mw.TopExamples)
    assert res.neurons == [0, 1] and res.unit_labels == ["Layer 0, Neuron 0", "Layer 0, Neuron 1"]
    assert res.status == "done"
    for unit, (unit_tokens, unit_acts) in enumerate(zip(props["tokens"][0], props["activations"][0])):
        # CircuitsVis lists a neuron's samples in descending order of their max activation (stable on ties)
        order = sorted(range(len(unit_acts)), key=lambda i: -max(unit_acts[i]))
        examples = res.examples[unit]
        assert [e.tokens for e in examples] == [unit_tokens[i] for i in order]
        assert [e.activations.tolist() for e in examples] == [pytest.approx(unit_acts[i]) for i in order]
        assert [e.value for e in examples] == [pytest.approx(max(unit_acts[i])) for i in order]
    assert res.maxima.tolist() == [1.0, 1.0]
    assert res._repr_png_()[:4] == b"\x89PNG"


def test_circuitsvis_topk_tokens_test(monkeypatch: pytest.MonkeyPatch) -> None:
    kwargs = {
        "tokens": [["a", "b", "c", "d", "e"], ["f", "g", "h"]],
        "activations": [np.arange(30).reshape(2, 5, 3), np.arange(12).reshape(2, 3, 2)],
    }  # each of shape (n_layers, n_tokens, n_neurons)
    res = cv.topk_tokens.topk_tokens(**kwargs)
    props = _props(monkeypatch, "topk_tokens", lambda m: m.topk_tokens(**kwargs))
    assert res.tokens == props["tokens"]
    assert (res.layer_name, res.unit_name) == ("Layer", "Neuron")
    # every (sample, layer, neuron): the view's values give CircuitsVis's top-k and bottom-k tokens
    for sample, acts in enumerate(kwargs["activations"]):
        n_layers, _, n_neurons = acts.shape
        for layer in range(n_layers):
            for neuron in range(n_neurons):
                values = res.values(layer, neuron)[sample]
                k = min(10, len(values))
                top = values.topk(k)
                assert top.values.tolist() == [v[neuron] for v in props["topkVals"][sample][layer]]
                assert top.indices.tolist() == [v[neuron] for v in props["topkIdxs"][sample][layer]]
                low = values.topk(k, largest=False)
                assert low.values.flip(0).tolist() == [v[neuron] for v in props["bottomkVals"][sample][layer]]
    # sample 1 has 2 neurons, sample 0 has 3: the missing neuron is NaN, never a number
    assert all(math.isnan(v) for v in res.values(0, 2)[1].tolist())


def test_topk_tokens_max_k_warns_that_it_changes_nothing() -> None:
    acts = [np.arange(6, dtype=np.float32).reshape(1, 3, 2)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cv.topk_tokens.topk_tokens([["a", "b", "c"]], acts)  # the default: no warning
    with pytest.warns(UserWarning, match="max_k=3 changes nothing"):
        cv.topk_tokens.topk_tokens([["a", "b", "c"]], acts, max_k=3)
    with pytest.raises(ValueError, match="max_k must be a positive integer"):
        cv.topk_tokens.topk_tokens([["a", "b", "c"]], acts, max_k=0)


# ----- docstring examples and the parameters CircuitsVis documents ------------------------------------------


def test_attention_heads_all_parameters(monkeypatch: pytest.MonkeyPatch) -> None:
    attention = torch.rand(3, 4, 4)
    attention[0, 0, 0] = -0.25
    kwargs: dict[str, Any] = {
        "attention": attention,
        "tokens": ["A", " person", " is", " here"],
        "attention_head_names": ["prev", "induction", "copy"],
        "max_value": 2.0,
        "min_value": -0.5,
        "negative_color": "orange",
        "positive_color": "rgb(0, 128, 0)",
        "mask_upper_tri": False,
    }
    res = cv.attention.attention_heads(**kwargs)
    props = _props(monkeypatch, "attention", lambda m: m.attention_heads(**kwargs))
    assert torch.equal(res.patterns[0], attention)
    assert res.tokens == props["tokens"]
    assert res.head_names == props["attentionHeadNames"] == ["prev", "induction", "copy"]
    assert res.head_name(0, 1) == "induction"
    assert res.color_scale == {"lo": -0.5, "hi": 2.0, "negative": "#ffa500", "positive": "#008000"}
    assert res.mask_upper_tri is False
    assert res._repr_png_()[:4] == b"\x89PNG"


def test_attention_heads_defaults_as_circuitsvis() -> None:
    res = cv.attention.attention_heads(np.full((2, 3, 3), 1 / 3, np.float32), ["A", " person", "!"])
    assert res.mask_upper_tri is True  # AttentionHeads' maskUpperTri defaults to true
    assert res.head_names == [] and res.head_name(0, 1) == "L0H1"
    assert res.color_scale == {"lo": 0.0, "hi": 1.0, "negative": "", "positive": ""}
    # signed values without a min_value: CircuitsVis's default minimum, -1
    res = cv.attention.attention_heads(np.array([[[0.5, -0.5], [1.0, 0.0]]]), ["A", " person"])
    assert res.color_scale["lo"] == -1.0
    # nested lists and ints, as CircuitsVis takes them
    res = cv.attention.attention_heads([[[1, 0], [0, 1]]], ["A", " person"])
    assert res.patterns.dtype == torch.float32 and res.patterns[0, 0].tolist() == [[1.0, 0.0], [0.0, 1.0]]


def test_mask_upper_tri_hides_the_upper_triangle(capture: Any, ask: Any) -> None:
    pattern = torch.full((3, 3), 0.5)
    res = cv.attention.attention_pattern(["a", "b", "c"], pattern)
    assert res.mask_upper_tri is True and res.show_axis_labels is True
    assert torch.equal(res.pattern(0, 0), pattern)  # the data stay whole
    sent = capture(res)
    rid = ask(res, "pattern", {"layer": 0, "head": 0})
    sent.wait(rid)
    content, buffers = sent.reply(rid)
    header = content["result"]["pattern"]
    assert header["layout"] == "lower"  # what is not shown is not sent
    assert decode_array(header, buffers).tolist() == [[0.5, 0, 0], [0.5, 0.5, 0], [0.5, 0.5, 0.5]]
    unmasked = cv.attention.attention_pattern(["a", "b", "c"], pattern, mask_upper_tri=False, show_axis_labels=False)
    assert unmasked.mask_upper_tri is False and unmasked.show_axis_labels is False
    assert res._repr_png_() != unmasked._repr_png_()


def test_attention_pattern_parameters(monkeypatch: pytest.MonkeyPatch) -> None:
    kwargs = {
        "tokens": ["A", " person"],
        "attention": torch.tensor([[1.0, 0.0], [0.3, 0.7]]),
        "max_value": 0.5,
        "positive_color": "#f00",
        "show_axis_labels": False,
    }
    res = cv.attention.attention_pattern(**kwargs)
    props = _props(monkeypatch, "attention", lambda m: m.attention_pattern(**kwargs))
    assert res.patterns[0, 0].tolist() == props["attention"]
    assert (res.n_layers, res.n_heads) == (1, 1)
    assert res.color_scale == {"lo": 0.0, "hi": 0.5, "negative": "", "positive": "#ff0000"}
    assert res.show_axis_labels is False


def test_colored_tokens_parameters(monkeypatch: pytest.MonkeyPatch) -> None:
    kwargs = {
        "tokens": ["A", " person"],
        "values": torch.tensor([-1.0, 3.0]),
        "min_value": -2,
        "max_value": 4,
        "negative_color": "red",
        "positive_color": "blue",
    }
    res = cv.tokens.colored_tokens(**kwargs)
    props = _props(monkeypatch, "tokens", lambda m: m.colored_tokens(**kwargs))
    assert res.values()[0].tolist() == props["values"]
    assert res.color_scale == {"lo": -2.0, "hi": 4.0, "negative": "#ff0000", "positive": "#0000ff"}
    assert res._repr_png_()[:4] == b"\x89PNG"


def test_colored_tokens_multi_and_model_performance(monkeypatch: pytest.MonkeyPatch) -> None:
    values = torch.tensor([[1.0, -2.0], [0.5, 0.25], [3.0, 0.0]])
    res = cv.tokens.colored_tokens_multi(["A", " person", "!"], values, ["x", "y"])
    props = _props(monkeypatch, "tokens", lambda m: m.colored_tokens_multi(["A", " person", "!"], values, ["x", "y"]))
    assert res.unit_labels == props["labels"] == ["x", "y"]
    assert [res.values(0, k)[0].tolist() for k in range(2)] == [list(c) for c in zip(*props["values"])]

    ids = torch.tensor([0, 3, 1, 2])
    logits = torch.randn(4, 6)
    res = cv.tokens.visualize_model_performance(ids, ["<bos>", "a", "b", "c"], logits)
    props = _props(
        monkeypatch, "tokens", lambda m: m.visualize_model_performance(ids, ["<bos>", "a", "b", "c"], logits)
    )
    assert res.tokens == [props["tokens"]] == [["a", "b", "c"]]
    assert res.unit_labels == props["labels"] == ["logits", "log_probs", "probs"]
    for k in range(3):
        assert res.values(0, k)[0].tolist() == pytest.approx([row[k] for row in props["values"]], abs=1e-6)
    with pytest.raises(ValueError, match="Number of tokens \\(2\\) must equal"):
        cv.tokens.colored_tokens_multi(["a", "b"], values)


def test_text_neuron_activations_dimension_names_and_labels() -> None:
    acts = torch.randn(2, 2, 3)  # [tokens x layers x neurons]
    res = cv.activations.text_neuron_activations(
        ["A", " person"], acts, "Block", "Feature", ["embed", "mlp"], ["f0", "f1", "f2"]
    )
    assert (res.layer_name, res.unit_name) == ("Block", "Feature")
    assert (res.layer_labels, res.unit_labels) == (["embed", "mlp"], ["f0", "f1", "f2"])
    assert torch.equal(res.activations[0], acts.permute(1, 0, 2))
    with pytest.raises(ValueError, match="tokens x layers x neurons"):
        cv.activations.text_neuron_activations(["A", " person"], np.zeros((2, 3)))
    with pytest.raises(TypeError, match="np.ndarray, torch.Tensor, or list"):
        cv.activations.text_neuron_activations(["A"], "acts")


def test_token_log_probs(monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(0)
    ids = torch.tensor([[0, 3, 1, 2, 5]])  # a batch dimension, as CircuitsVis allows
    log_probs = torch.randn(1, 5, 8).log_softmax(-1)
    vocab = [f"t{i}" for i in range(8)]
    res = cv.logits.token_log_probs(ids, log_probs, lambda i: vocab[i], top_k=3)
    props = _props(monkeypatch, "logits", lambda m: m.token_log_probs(ids, log_probs, lambda i: vocab[i], top_k=3))
    assert isinstance(res, mw.LogitLens)
    assert res.tokens == props["prompt"]
    assert res.can_retarget is False and res.k == 3
    for position in range(4):  # CircuitsVis drops the last position: no next token to score
        top = res.top(0, position)
        assert [t for t, _ in top] == props["topKTokens"][position]
        assert [math.log(p) for _, p in top] == pytest.approx(props["topKLogProbs"][position], abs=1e-5)
    assert res.target_probs[0, :4].log().tolist() == pytest.approx(props["correctTokenLogProb"], abs=1e-5)
    assert (res.target_ranks[0, :4] - 1).tolist() == props["correctTokenRank"]  # ours: 1 = the most likely
    assert math.isnan(float(res.target_probs[0, 4]))
    with pytest.raises(Exception, match="fixed predictions"):
        res.target = " cat"
    assert res._repr_png_()[:4] == b"\x89PNG"


# ----- bad input: what was expected and what came ------------------------------------------------------------


@pytest.mark.parametrize(
    ("call", "error", "pattern"),
    [
        (lambda: cv.attention.attention_heads(np.ones((2, 3, 3)), ["a", "b"]), ValueError, "3 positions but 2 tokens"),
        (lambda: cv.attention.attention_heads(np.ones((3, 3)), list("abc")), ValueError, r"\[heads, dest_tokens"),
        (
            lambda: cv.attention.attention_heads(np.full((1, 2, 2), np.nan), ["a", "b"]),
            ValueError,
            "is not finite",
        ),
        (
            lambda: cv.attention.attention_heads(np.ones((2, 2, 2)) / 2, ["a", "b"], attention_head_names=["x"]),
            ValueError,
            "expected 2 head names",
        ),
        (
            lambda: cv.attention.attention_heads(np.ones((1, 2, 2)) / 2, ["a", "b"], positive_color="bluish"),
            ValueError,
            "positive_color must be a CSS colour",
        ),
        (
            lambda: cv.attention.attention_heads(np.ones((1, 2, 2)) / 2, ["a", "b"], min_value=1, max_value=1),
            ValueError,
            "min_value must be below max_value",
        ),
        (
            lambda: cv.attention.attention_heads(np.ones((1, 2, 2)) / 2, ["a", "b"], mask_upper_tri="yes"),
            TypeError,
            "mask_upper_tri must be True or False",
        ),
        (lambda: cv.attention.attention_pattern(["a"], [[1.0, 0.0]]), ValueError, "square patterns"),
        (lambda: cv.attention.attention_heads([[[1, 0], [0]]], ["a", "b"]), ValueError, "rectangular nested list"),
        (lambda: cv.attention.attention_heads("att", ["a"]), TypeError, "torch.Tensor, a numpy array or a nested"),
        (lambda: cv.tokens.colored_tokens(["a", "b", "c"], [1.0, 2.0]), ValueError, "covers 2 tokens .* 3 tokens"),
        (lambda: cv.tokens.colored_tokens(["a", "b"], [1.0, float("nan")]), ValueError, "token 1, layer 0, unit 0"),
        (lambda: cv.tokens.colored_tokens(["a", 2], [1.0, 2.0]), TypeError, "tokens must be strings"),
        (
            lambda: cv.activations.text_neuron_activations([["a"], ["b", "c"]], [np.zeros((1, 1, 2))]),
            ValueError,
            "2 token lists but 1 activation arrays",
        ),
        (
            lambda: cv.activations.text_neuron_activations([["a"], ["b"]], [np.zeros((1, 1, 2)), np.zeros((1, 2, 2))]),
            ValueError,
            "has 2 layers x 2 units but the first prompt has 1 x 2",
        ),
        (
            lambda: cv.activations.text_neuron_activations(
                ["a"], np.zeros((1, 1, 2)), first_dimension_labels=["x", "y"]
            ),
            ValueError,
            "layer_labels must have 1 entries",
        ),
        (
            lambda: cv.topk_samples.topk_samples([[[["a", "b"]]]], [[[[1.0]]]]),
            ValueError,
            r"activations\[0\]\[0\] has 1 values but tokens\[0\]\[0\] has 2 tokens",
        ),
        (
            lambda: cv.topk_samples.topk_samples([[[["a"]]]], [[[[math.inf]]]]),
            ValueError,
            "expected finite numbers",
        ),
        (
            lambda: cv.logits.token_log_probs(torch.tensor([0, 1]), torch.zeros(3, 4), str),
            ValueError,
            "2 token ids but 3 log prob vectors",
        ),
        (
            lambda: cv.logits.token_log_probs(torch.tensor([0, 9]), torch.zeros(2, 4), str),
            ValueError,
            r"token_ids must be in 0\.\.3",
        ),
        (
            lambda: cv.logits.token_log_probs(torch.tensor([0, 1]), torch.zeros(2, 4), str, top_k=10),
            ValueError,
            r"k must be an integer in 1\.\.4",
        ),
        (
            lambda: cv.tokens.visualize_model_performance(torch.tensor([0, 1]), ["a"], torch.zeros(2, 4)),
            ValueError,
            "same number of tokens and str_tokens",
        ),
    ],
)
def test_bad_input_says_what_was_expected(call: Any, error: type[Exception], pattern: str) -> None:
    with pytest.raises(error, match=pattern):
        call()


def test_meta_tensors_and_non_integer_selections_are_refused() -> None:
    with pytest.raises(ValueError, match="meta device"):
        cv.tokens.colored_tokens(["a"], torch.empty(1, device="meta"))
    with pytest.raises(ValueError, match="meta device"):
        cv.attention.attention_heads(torch.empty(1, 2, 2, device="meta"), ["a", "b"])
    view = cv.tokens.colored_tokens_multi(["a", "b"], torch.ones(2, 2))
    for bad in (1.7, True, "1"):
        with pytest.raises(Exception, match="must be an integer"):
            view.selected = {"neuron": bad}
    ex = cv.topk_samples.topk_samples([[[["a"]], [["b"]]]], [[[[1.0]], [[2.0]]]])
    with pytest.raises(Exception, match="must be an integer"):
        ex.selected = {"neuron": 1.7}
    lens = cv.logits.token_log_probs(torch.tensor([0, 1]), torch.zeros(2, 3), str, top_k=2)
    with pytest.raises(Exception, match="position"):
        lens.selected = {"layer": 0, "position": 2}
    for w in (view, ex, lens):
        w.close()


def test_array_paths_need_no_model_and_keep_selection_two_way() -> None:
    view = mw.ActivationView.from_activations([["a", "b"], ["c"]], [torch.ones(2, 3), torch.zeros(1, 3)])
    view.selected = {"neuron": 2, "prompt_index": 0, "position": 1}
    assert view.selected == {"layer": 0, "neuron": 2, "prompt_index": 0, "position": 1}
    with pytest.raises(Exception, match="selected neuron must be in 0..2"):
        view.selected = {"neuron": 3}
    with pytest.raises(TypeError, match="from_activations"):
        mw.ActivationView()
    with pytest.raises(TypeError, match="from_log_probs"):
        mw.LogitLens()
    with pytest.raises(TypeError, match="from_samples"):
        mw.TopExamples()
    ex = cv.topk_samples.topk_samples([[[["a"]], [["b"]]]], [[[[1.0]], [[2.0]]]])
    ex.selected = {"neuron": 1}
    assert ex.examples[1][0].tokens == ["b"]
    ex.start()  # nothing to scan: finishes at once and keeps the given examples
    ex.wait(5)
    assert ex.status == "done" and ex.examples[1][0].value == 2.0
    for w in (view, ex):
        w.close()


# ----- the colour scale, shared with colormap.ts -----------------------------------------------------------


def test_colour_scale() -> None:
    assert parse_color("red", "c") == "#ff0000" and parse_color("hsl(120, 100%, 25%)", "c") == "#008000"
    assert parse_color(None, "c") == ""
    with pytest.raises(TypeError, match="CSS colour string"):
        parse_color(3, "c")
    # 0..1 without colours is the views' own sequential map, so attention looks as it always did
    from mi_widgets.transport.picture import SEQUENTIAL, colormap_lut

    assert np.array_equal(ColorScale().lut(), colormap_lut(SEQUENTIAL["light"]))
    lut = anchored_lut(-1.0, 2.0, "#ff0000", "#0000ff")
    zero = round(1 / 3 * 255)
    assert tuple(lut[zero]) == (255, 255, 255)  # 0 is the background, as CircuitsVis mixes with white
    assert tuple(lut[0]) == (255, 0, 0) and tuple(lut[255]) == (0, 0, 255)


def _scale_cases() -> list[dict[str, Any]]:
    cases = [
        (0.0, 1.0, "", ""),
        (-1.0, 1.0, "", ""),
        (-0.5, 2.0, "", ""),
        (0.2, 1.0, "", ""),
        (-1.0, 2.0, "#ff0000", "#0000ff"),
        (0.0, 0.5, "", "#008000"),
        (-3.0, 0.0, "#ffa500", ""),
    ]
    return [
        {"lo": lo, "hi": hi, "negative": n, "positive": p, "theme": t, "lut": anchored_lut(lo, hi, n, p, t).tolist()}
        for lo, hi, n, p in cases
        for t in ("light", "dark")
    ]


def test_scale_vectors_are_current() -> None:
    assert json.loads(SCALE_VECTORS.read_text()) == _scale_cases(), (
        "tests/fixtures/scale_vectors.json is stale: run .venv/bin/python tests/test_circuitsvis.py"
    )


if __name__ == "__main__":
    SCALE_VECTORS.write_text(json.dumps(_scale_cases()) + "\n")
    print(f"wrote {SCALE_VECTORS}")


def test_token_log_probs_refuses_logits() -> None:
    logits = torch.tensor([[2.0, -1.0, 0.5], [0.1, 0.2, 0.3]])
    with pytest.raises(ValueError, match=r"position 0, token 0 is 2.0 > 0: expected log probabilities .*log_softmax"):
        cv.logits.token_log_probs(torch.tensor([0, 1]), logits, str, top_k=2)
    view = cv.logits.token_log_probs(torch.tensor([0, 1]), logits.log_softmax(-1), str, top_k=2)
    view.close()
