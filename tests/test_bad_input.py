"""Bad input gets an error that says what was expected and what came (issue 10, items 6 and 8).

* Token text the kernel cannot send (a lone surrogate, ``"\\ud800"``) is shown escaped, never a crash in
  jupyter_client; a prompt a tokenizer cannot encode is a clear ValueError, from Python and from the view.
* Prompts that are not text or token ids, models on the ``meta`` device, out-of-range prompt indices,
  non-integer selections and impossible attention weights are refused where they come in, not deep in torch.
"""

from __future__ import annotations

import json
import re
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch
import traitlets

import mi_widgets as mw
from mi_widgets.analysis.attention import check_patterns
from mi_widgets.analysis.sae import SparseAutoencoder
from mi_widgets.capture.adapter import ModelAdapter
from mi_widgets.capture.inputs import check_text, visible_text

from .conftest import PROMPT, SENTENCES, _native_cfg

# Clean and corrupted token ids for the patching widgets: one length, position 2 differs.
PATCH_PAIR = (torch.tensor([[0, 5, 7, 9], [0, 6, 8, 10]]), torch.tensor([[0, 5, 11, 9], [0, 6, 12, 10]]))

SURROGATE = "\ud800"
ESCAPED = "\\ud800"  # what the view shows instead: six visible characters
RESID = "blocks.0.hook_resid_post"
PROMPT_KINDS = re.escape(
    "expected a prompt as a string, or token ids as a 1-D tensor, a [1, seq] tensor or a list of ints"
)


def sendable(widget: Any) -> dict[str, Any]:
    """The widget's state after the check jupyter_client makes: JSON, then strict UTF-8."""
    state = widget.get_state()
    json.dumps(state, ensure_ascii=False).encode("utf-8")
    return state


def reply_of(sent: Any, rid: str) -> dict[str, Any]:
    """A reply's content, checked to survive the same encoding as the state."""
    sent.wait(rid, 30)
    content, _ = sent.reply(rid)
    json.dumps(content, ensure_ascii=False).encode("utf-8")
    return content


def walk(value: Any) -> Any:
    if isinstance(value, dict):
        for v in value.values():
            yield from walk(v)
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from walk(v)
    else:
        yield value


def small_sae() -> SparseAutoencoder:
    return SparseAutoencoder(64, 8, "relu", hook_name=RESID, generator=torch.Generator().manual_seed(0))


@pytest.fixture
def surrogate_labels(native_model: Any) -> Any:
    """The model's tokenizer now decodes token 2 of every prompt to text with a lone surrogate (a broken vocab)."""
    adapter = ModelAdapter(native_model)
    adapter.attention_patterns(adapter.to_tokens("warm up"))  # any copy the adapter makes of the model exists unpatched
    original = native_model.to_str_tokens

    def to_str_tokens(tokens: Any, *args: Any, **kwargs: Any) -> list[str]:
        labels = list(original(tokens, *args, **kwargs))
        if len(labels) > 2:
            labels[2] = "a" + SURROGATE + "b"
        return labels

    native_model.to_str_tokens = to_str_tokens  # an instance attribute over the class's method ...
    try:
        yield native_model
    finally:
        del native_model.to_str_tokens  # ... removed again, so the session's model is as it was


# ----- 6. text the kernel cannot send ------------------------------------------------------------


def test_visible_text_escapes_only_what_utf8_cannot_encode() -> None:
    assert visible_text("plain é 日本 🙂") == "plain é 日本 🙂"
    assert visible_text("x" + SURROGATE + "y\udfff") == "x" + ESCAPED + "y\\udfff"
    with pytest.raises(ValueError, match=r"prompt contains text the tokenizer cannot encode: '\\ud800' at position 2"):
        check_text("ab" + SURROGATE + "c")


def test_attention_heads_with_a_lone_surrogate_token_is_shown_escaped() -> None:
    tokens = ["a", SURROGATE, "emoji 🙂 half \udc00"]
    w = mw.attention_heads(np.full((2, 3, 3), 1 / 3, np.float32), tokens)
    state = sendable(w)
    assert state["tokens"] == ["a", ESCAPED, "emoji 🙂 half \\udc00"] == w.tokens
    w.close()


def test_model_tokens_with_a_lone_surrogate_are_shown_escaped(
    surrogate_labels: Any, capture: Callable, ask: Callable
) -> None:
    model = surrogate_labels
    view = mw.AttentionView(model, PROMPT)
    assert view.tokens[2] == "a" + ESCAPED + "b"
    sendable(view)
    sent = capture(view)
    content = reply_of(sent, ask(view, "run", {"prompt": "Hello world! The cat sat."}))  # the view's own path
    assert content["ok"] and content["result"]["tokens"][2] == "a" + ESCAPED + "b"
    view.close()
    for widget in (
        mw.ActivationView(model, [PROMPT, "The cat sat."], hook="resid_post"),
        mw.LogitLens(model, PROMPT),
        mw.LogitAttribution(model, PROMPT, answer=1, wrong=2),
    ):
        state = sendable(widget)
        assert any(isinstance(v, str) and ESCAPED in v for v in walk(state["tokens"])), type(widget).__name__
        widget.close()


def test_lens_vocab_and_examples_with_a_lone_surrogate_are_sendable(
    surrogate_labels: Any, capture: Callable, ask: Callable
) -> None:
    model = surrogate_labels
    lens = mw.LogitLens(model, PROMPT)
    sent = capture(lens)
    reply_of(sent, ask(lens, "lens", {}))  # top tokens' strings: through the same labels
    lens.close()
    ex = mw.TopExamples(model, SENTENCES[:2], hook="blocks.1.hook_resid_post", neurons=[0, 1], k=2).wait(60)
    assert ex.status == "done", ex.error
    sent = capture(ex)
    content = reply_of(sent, ask(ex, "examples", {"neuron": 0}))
    assert content["ok"] and all(isinstance(t, str) for e in content["result"]["examples"] for t in e["tokens"])
    ex.close()


@pytest.mark.parametrize(
    "make",
    [
        lambda m, p: ModelAdapter(m).to_tokens(p),
        lambda m, p: mw.AttentionView(m, p),
        lambda m, p: mw.LogitLens(m, p),
        lambda m, p: mw.ActivationView(m, p, hook="resid_post"),
    ],
    ids=["to_tokens", "AttentionView", "LogitLens", "ActivationView"],
)
def test_a_prompt_the_tokenizer_cannot_encode_is_a_clear_error(native_model: Any, make: Callable) -> None:
    with pytest.raises(ValueError, match=r"prompt contains text the tokenizer cannot encode: '\\ud800' at position 4"):
        make(native_model, "The " + SURROGATE + " cat")


def test_a_prompt_typed_in_the_view_that_cannot_be_encoded_is_an_error_reply(
    native_model: Any, capture: Callable, ask: Callable
) -> None:
    view = mw.AttentionView(native_model, PROMPT)
    before = (view.prompt, list(view.tokens), view.revision)
    sent = capture(view)
    content = reply_of(sent, ask(view, "run", {"prompt": "Hi " + SURROGATE}))
    assert not content["ok"] and content["error"]["type"] == "ValueError"
    assert "cannot encode: '" + ESCAPED + "' at position 3" in content["error"]["message"]
    assert (view.prompt, list(view.tokens), view.revision) == before
    view.close()


def test_feature_view_and_corpora_refuse_text_the_tokenizer_cannot_encode(native_model: Any) -> None:
    with pytest.raises(
        ValueError, match=r"prompts\[1\] contains text the tokenizer cannot encode: '\\ud800' at position 0"
    ):
        mw.FeatureView(small_sae(), native_model, [PROMPT, SURROGATE + "x"], autostart=False)
    with pytest.raises(ValueError, match=r"corpus\[1\] contains text the tokenizer cannot encode"):
        mw.TopExamples(native_model, ["fine", "bad " + SURROGATE], hook=RESID, autostart=False)
    fv = mw.FeatureView(small_sae(), native_model, [PROMPT], autostart=False)
    with pytest.raises(traitlets.TraitError, match=r"prompts\[1\] contains text the tokenizer cannot encode"):
        fv.set_state({"prompts": [PROMPT, "typed " + SURROGATE]})  # as the view sends an edited prompt list
    assert fv.prompts == [PROMPT]
    fv.close()


# ----- 8. prompts that are not text or token ids -----------------------------------------------------


@pytest.mark.parametrize(
    "prompt, error, message",
    [
        ({"text": "hi"}, TypeError, PROMPT_KINDS + r", got dict \{'text': 'hi'\}"),
        (
            ["The cat", "The dog"],
            TypeError,
            r"got a list of str: pass one prompt string, or use a widget that takes several prompts",
        ),
        (None, TypeError, PROMPT_KINDS + ", got None"),
        (3, TypeError, r"got int 3: put a single token id in a list \(\[3\]\)"),
        (b"hello", TypeError, r"got bytes b'hello': decode it to text first"),
        ([1, "a"], TypeError, r"got a list of int, str \(item 1 is str 'a'\)"),
        ([1.5, 2.0], TypeError, "token ids must be integers, got a list of float"),
        (np.array([1.5, 2.0]), TypeError, "token ids must be integers, got numpy dtype float64"),
        ([[1, 2], [3, 4]], ValueError, r"shape \[seq\] or \[1, seq\], got 2 rows"),
        (object(), TypeError, PROMPT_KINDS + ", got object <object object at"),
    ],
)
def test_to_tokens_says_what_it_expected_and_what_came(
    native_model: Any, prompt: Any, error: type, message: str
) -> None:
    with pytest.raises(error, match=message):
        ModelAdapter(native_model).to_tokens(prompt)


@pytest.mark.parametrize(
    "prompt",
    [
        [5, 6, 7],
        (5, 6, 7),
        [[5, 6, 7]],
        np.array([5, 6, 7]),
        np.array([[5, 6, 7]], np.int32),
        [np.int64(5), 6, np.int32(7)],
        torch.tensor([[5, 6, 7]]),
        range(5, 8),
    ],
)
def test_to_tokens_still_takes_every_kind_of_token_ids(native_model: Any, prompt: Any) -> None:
    tokens = ModelAdapter(native_model).to_tokens(prompt)
    assert tokens.tolist() == [[5, 6, 7]] and tokens.dtype == torch.long


def test_single_prompt_widgets_pass_the_prompt_error_on(native_model: Any) -> None:
    with pytest.raises(TypeError, match=PROMPT_KINDS + r", got dict"):
        mw.AttentionView(native_model, {"a": 1})
    with pytest.raises(TypeError, match="got a list of str: pass one prompt string"):
        mw.LogitLens(native_model, ["The cat", "The dog"])


def test_several_prompt_widgets_say_which_prompt_is_bad(native_model: Any) -> None:
    with pytest.raises(TypeError, match=r"prompt 0: " + PROMPT_KINDS + ", got None"):
        mw.ActivationView(native_model, [None, 3.5], hook="resid_post")
    with pytest.raises(TypeError, match=r"prompt 1: " + PROMPT_KINDS + ", got None"):
        mw.ActivationView(native_model, ["The cat", None], hook="resid_post")
    with pytest.raises(TypeError, match=r"prompt 1: .*got dict \{'x': 1\}"):
        mw.ActivationView(native_model, ["The cat", {"x": 1}], hook="resid_post")
    with pytest.raises(TypeError, match=r"prompts mixes token ids \(ints\) with str"):
        mw.ActivationView(native_model, [3, "The cat"], hook="resid_post")
    view = mw.ActivationView(native_model, np.array(["The cat", "The dog"]), hook="resid_post")  # an array of texts
    assert len(view.tokens) == 2
    view.close()
    with pytest.raises(ValueError, match=r"prompts must be a non-blank string .*: prompts\[1\] is None"):
        mw.FeatureView(small_sae(), native_model, [PROMPT, None], autostart=False)
    with pytest.raises(TypeError, match=r"sequences\[1\]: " + PROMPT_KINDS + r", got dict"):
        mw.HeadScan(native_model, sequences=["The cat sat.", {"a": 1}], autostart=False)


# ----- 8. a model on the meta device -------------------------------------------------------------------


@pytest.fixture(scope="module", params=["moved", "built"])
def meta_model(request: pytest.FixtureRequest, tokenizer: Any, vocab_size: int) -> Any:
    """A TL-native bridge with shapes but no weights: moved to ``meta``, or built under ``torch.device("meta")``."""
    from transformer_lens import TransformerBridge

    if request.param == "moved":
        return TransformerBridge.boot_native(_native_cfg(vocab_size), tokenizer=tokenizer).to("meta")
    with torch.device("meta"):
        return TransformerBridge.boot_native(_native_cfg(vocab_size), tokenizer=tokenizer)


@pytest.mark.parametrize(
    "make",
    [
        lambda m: mw.AttentionView(m, PROMPT),
        lambda m: mw.HeadScan(m, autostart=False),
        lambda m: mw.LogitLens(m, PROMPT),
        lambda m: mw.ActivationView(m, PROMPT, hook="resid_post"),
        lambda m: mw.LogitAttribution(m, PROMPT, answer=1, wrong=2),
        lambda m: mw.TopExamples(m, SENTENCES, hook=RESID, autostart=False),
        lambda m: mw.FeatureView(small_sae(), m, PROMPT, autostart=False),
        lambda m: mw.CompositionView(m),
        lambda m: mw.Patching(m, *PATCH_PAIR, mw.logit_diff([1, 1], [2, 2]), autostart=False),
        lambda m: mw.PathPatching(
            m, clean=PATCH_PAIR[0], corrupted=PATCH_PAIR[1], metric=mw.logit_diff([1, 1], [2, 2])
        ),
        lambda m: mw.FourierView(m),
    ],
    ids=[
        "AttentionView",
        "HeadScan",
        "LogitLens",
        "ActivationView",
        "LogitAttribution",
        "TopExamples",
        "FeatureView",
        "CompositionView",
        "Patching",
        "PathPatching",
        "FourierView",
    ],
)
def test_a_model_on_the_meta_device_is_refused_at_construction(meta_model: Any, make: Callable) -> None:
    assert next(meta_model.parameters()).is_meta
    with pytest.raises(
        ValueError, match=r"the model's weights are on the 'meta' device \(not loaded\).*Load real weights first"
    ):
        make(meta_model)


# ----- 8. indices -------------------------------------------------------------------------------------------


def test_feature_acts_with_a_prompt_index_out_of_range(native_model: Any) -> None:
    fv = mw.FeatureView(small_sae(), native_model, PROMPT, autostart=False)
    with pytest.raises(IndexError, match=re.escape("prompt must index prompts (0..0), got 5")):
        fv.feature_acts(5)
    with pytest.raises(IndexError, match=re.escape("prompt must index prompts (0..0), got -1")):
        fv.feature_acts(-1)
    with pytest.raises(TypeError, match="prompt must be an index into prompts \\(an integer\\) or a text, got 0.5"):
        fv.feature_acts(0.5)
    assert fv.feature_acts(np.int64(0)).shape[-1] == 8
    with pytest.raises(traitlets.TraitError, match="prompt_index must be an index into prompts, got True"):
        fv.prompt_index = True
    fv.close()


BAD_INDICES = [1.7, True, "1", 1.0, None]


@pytest.fixture(scope="module")
def views(native_model: Any) -> dict[str, Any]:
    made = {
        "attention": mw.AttentionView(native_model, PROMPT),
        "head_scan": mw.HeadScan(native_model, autostart=False),
        "composition": mw.CompositionView(native_model),
        "activation": mw.ActivationView(native_model, [PROMPT, "The cat"], hook="resid_post"),
        "top_examples": mw.TopExamples(native_model, SENTENCES, hook=RESID, neurons=[0, 1, 2], autostart=False),
        "feature_view": mw.FeatureView(small_sae(), native_model, PROMPT, autostart=False),
        "logit_lens": mw.LogitLens(native_model, PROMPT),
        "logit_attribution": mw.LogitAttribution(native_model, PROMPT, answer=5, wrong=6),
        "patching": mw.Patching(native_model, *PATCH_PAIR, mw.logit_diff([5, 5], [6, 6]), autostart=False),
    }
    yield made
    for view in made.values():
        view.close()


def _selections(bad: Any) -> list[tuple[str, dict[str, Any], str]]:
    """(view, selected value with ``bad`` in one place, the name the error must give)."""
    return [
        ("attention", {"layer": 1, "head": bad}, "selected head"),
        ("attention", {"layer": bad, "head": 1}, "selected layer"),
        ("attention", {"layer": 1, "head": 1, "query": bad}, "selected query"),
        ("head_scan", {"score": "induction", "layer": 1, "head": bad}, "selected head"),
        ("head_scan", {"score": "induction", "layer": bad, "head": 1}, "selected layer"),
        ("composition", {"writer": [0, bad], "reader": [1, 1]}, "selected writer head"),
        ("composition", {"writer": [0, 1], "reader": [bad, 1]}, "selected reader layer"),
        ("activation", {"neuron": bad}, "selected neuron"),
        ("activation", {"prompt_index": bad, "position": 1}, "selected prompt_index"),
        ("activation", {"prompt_index": 1, "position": bad}, "selected position"),
        ("top_examples", {"neuron": bad}, "selected neuron"),
        ("feature_view", {"feature": bad}, "feature"),
        ("logit_lens", {"layer": bad, "position": 1}, "selected layer"),
        ("logit_lens", {"layer": 1, "position": bad}, "selected position"),
        ("logit_attribution", {"layer": 1, "head": bad}, "selected head"),
        ("logit_attribution", {"layer": bad, "component": "attn"}, "selected layer"),
        ("patching", {"component": "head_out", "layer": 1, "head": bad}, "selected head"),
        ("patching", {"component": "resid_pre", "layer": bad, "position": 1}, "selected layer"),
        ("patching", {"component": "head_out_pos", "layer": 1, "head": 1, "position": bad}, "selected position"),
    ]


@pytest.mark.parametrize("bad", BAD_INDICES, ids=repr)
def test_selected_refuses_indices_that_are_not_integers(views: dict[str, Any], bad: Any) -> None:
    for name, value, what in _selections(bad):
        if bad is None and (name, what) in {
            ("attention", "selected query"),
            ("activation", "selected prompt_index"),
            ("activation", "selected position"),
            ("top_examples", "selected neuron"),
            ("feature_view", "feature"),
            ("activation", "selected neuron"),
        }:
            continue  # None means "nothing selected" there
        if bad is None and name in ("head_scan", "logit_lens", "logit_attribution", "patching"):
            continue  # None there means "no head" (and must come as a pair: covered by test_head_scan.py)
        view = views[name]
        before = dict(view.selected)
        with pytest.raises(traitlets.TraitError, match=rf"{what} (must be|is) .*got {re.escape(repr(bad))}") as info:
            view.selected = value
        assert "integer" in str(info.value), (name, value, str(info.value))
        assert view.selected == before, (name, value)


def test_selected_takes_numpy_integers_as_plain_ints(views: dict[str, Any]) -> None:
    one = np.int64(1)
    for name, value, _ in _selections(one):
        view = views[name]
        view.selected = value
        assert all(type(v) is int for v in walk(view.selected) if not isinstance(v, (str, type(None)))), (
            name,
            view.selected,
        )
    assert views["head_scan"].selected == {"score": "induction", "layer": 1, "head": 1}
    assert views["logit_attribution"].selected == {"layer": 1, "head": None, "component": "attn"}
    assert views["top_examples"].selected == {"neuron": 1} and views["top_examples"].examples[np.int64(1)] == []
    assert views["attention"].pattern(np.int64(1), np.int32(2)).shape[0] == len(views["attention"].tokens)
    with pytest.raises(TypeError, match="head must be an integer in 0..3, got 2.5"):
        views["attention"].pattern(1, 2.5)


# ----- 8. attention weights -------------------------------------------------------------------------------


def _patterns() -> torch.Tensor:
    return torch.full((2, 3, 4, 4), 0.25)


@pytest.mark.parametrize(
    "value, problem",
    [
        (float("inf"), r"is not finite \(inf; 1 such value\(s\) in layer 1\): expected finite weights"),
        (float("-inf"), r"is not finite \(-inf"),
        (float("nan"), r"is not finite \(nan"),
        (-0.5, r"is negative \(-0.5; 1 such value\(s\) in layer 1\): expected non-negative attention weights"),
        (1e6, r"is too large to show \(1e\+06.*expected weights up to 65504"),
    ],
)
def test_attention_heads_refuses_impossible_weights_and_says_where(value: float, problem: str) -> None:
    patterns = _patterns()
    patterns[1, 2, 3, 1] = value
    with pytest.raises(ValueError, match=r"attention weight at layer 1, head 2, query 3, key 1 " + problem):
        mw.attention_heads(patterns, list("abcd"))
    with pytest.raises(ValueError, match=r"at layer 0, head 2, query 3, key 1"):
        mw.attention_heads(patterns[1].numpy(), list("abcd"))  # one layer, CircuitsVis-style


def test_unnormalised_weights_are_kept_and_above_one_warns() -> None:
    halves = torch.full((2, 4, 4), 0.5)  # rows sum to 2: accepted, as CircuitsVis does
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning for weights in 0..1, however the rows sum
        w = mw.attention_heads(halves, list("abcd"))
    assert torch.equal(w.pattern(0, 1), halves[1])
    w.close()
    big = halves.clone()
    big[0, 1, 1] = 3.0
    with pytest.warns(UserWarning, match=r"go up to 3, but the view's colour scale is 0..1"):
        mw.attention_heads(big, list("abcd")).close()
    cached = check_patterns(
        torch.tensor([[[[float("nan"), 0.0], [0.5, 0.5]]]]), 2, finite=False
    )  # a model's cache: shown
    assert torch.isnan(cached).sum() == 1


# ----- 6. answers, targets and error replies with text UTF-8 cannot carry ------------------------------------


def test_a_target_or_answer_the_tokenizer_cannot_encode_is_a_clear_error(native_model: Any) -> None:
    with pytest.raises(ValueError, match=r"target contains text the tokenizer cannot encode: '\\ud800' at position 1"):
        mw.LogitLens(native_model, PROMPT, target=" \ud800")
    with pytest.raises(ValueError, match=r"answer contains text the tokenizer cannot encode"):
        mw.LogitAttribution(native_model, PROMPT, answer="\ud800", wrong=6)


def test_an_error_reply_quoting_a_lone_surrogate_can_be_sent() -> None:
    from mi_widgets.transport.protocol import RequestRouter

    sent: list[dict[str, Any]] = []
    router = RequestRouter(lambda content, buffers: sent.append(content))

    def fail(params: Any, buffers: Any, ctx: Any) -> Any:
        raise ValueError("no token '\ud800' here")

    router.add("fail", fail)
    router.handle({"type": "request", "id": "r1", "method": "fail", "params": {}}, [])
    [reply] = sent
    assert reply["ok"] is False and reply["error"]["message"] == "no token '\\ud800' here"
    json.dumps(reply, ensure_ascii=False).encode("utf-8")  # what jupyter_client does: must not raise
