"""AttentionView without a kernel: traits, state size, and the request handlers the view calls."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch
import traitlets

try:
    import mi_widgets as mw

    AttentionView, attention_heads = mw.AttentionView, mw.attention_heads
except ImportError:  # the zoo may be mid-edit; the widgets do not need it
    from mi_widgets.widgets import AttentionView, attention_heads

from mi_widgets.capture.adapter import PATTERN_HOOK, ModelAdapter
from mi_widgets.transport import decode_array

PROMPT = "The cat sat on the mat. The cat sat on the"
FP16_TOL = dict(atol=1e-3, rtol=1e-3)
MAX_MESSAGE = 4 * 1024 * 1024


def cached_patterns(model: Any, prompt: Any) -> torch.Tensor:
    names = [PATTERN_HOOK.format(layer=l) for l in range(model.cfg.n_layers)]
    _, cache = model.run_with_cache(prompt, names_filter=names)
    return torch.stack([cache[n][0] for n in names])


def walk(value: Any) -> Any:
    """Every leaf of a nested state value."""
    if isinstance(value, dict):
        for v in value.values():
            yield from walk(v)
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from walk(v)
    else:
        yield value


def overview(w: Any, sent: Any, ask: Callable[..., str]) -> tuple[dict[str, Any], np.ndarray, np.ndarray]:
    rid = ask(w, "overview")
    sent.wait(rid, 5)
    content, buffers = sent.reply(rid)
    assert content["ok"] is True, content
    header = content["result"]["thumbnails"]
    codes = np.frombuffer(buffers[header["buffer"]], np.uint8).reshape(header["shape"])
    return content["result"], decode_array(header, buffers), codes


def get_pattern(w: Any, sent: Any, ask: Callable[..., str], layer: int, head: int) -> tuple[dict[str, Any], np.ndarray]:
    rid = ask(w, "pattern", {"layer": layer, "head": head})
    sent.wait(rid, 5)
    content, buffers = sent.reply(rid)
    assert content["ok"] is True, content
    return content["result"], decode_array(content["result"]["pattern"], buffers)


def error_of(sent: Any, rid: str, timeout: float = 30.0) -> dict[str, Any]:
    sent.wait(rid, timeout)
    content, _ = sent.reply(rid)
    assert content["ok"] is False, f"expected an error reply, got {content}"
    return content["error"]


def max_pool(patterns: np.ndarray, size: int) -> np.ndarray:
    """Independent max-pooling for sides that divide evenly."""
    layers, heads, q, k = patterns.shape
    return patterns.reshape(layers, heads, size, q // size, size, k // size).max(axis=(3, 5))


@pytest.fixture
def view(native_model: Any) -> Any:
    w = AttentionView(native_model, PROMPT)
    yield w
    w.close()


@pytest.fixture
def gpt2_view(gpt2_bridge: Any) -> Any:
    w = AttentionView(gpt2_bridge, PROMPT)
    yield w
    w.close()


# ----- construction and traits ----------------------------------------------------------------


@pytest.mark.parametrize("which", ["native_model", "gpt2_bridge"])
def test_traits_after_construction(request: pytest.FixtureRequest, which: str) -> None:
    model = request.getfixturevalue(which)
    w = AttentionView(model, PROMPT, layer=1, head=2)
    assert (w.n_layers, w.n_heads) == (2, 4)
    assert w.tokens == model.to_str_tokens(PROMPT) and w.tokens[0] == "<|endoftext|>"
    assert w.prompt == PROMPT and w.can_rerun is True and w.revision > 0
    assert w.selected == {"layer": 1, "head": 2, "query": None, "key": None}
    expected = cached_patterns(model, PROMPT)
    torch.testing.assert_close(w.patterns, expected, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(w.pattern(1, 2), expected[1, 2], atol=1e-6, rtol=1e-5)
    with pytest.raises(IndexError, match="head must be in 0..3, got 4"):
        w.pattern(0, 4)
    w.close()


def test_revisions_are_unique(native_model: Any) -> None:
    a, b = AttentionView(native_model, PROMPT), AttentionView(native_model, PROMPT)
    assert a.revision != b.revision and a.tokens == b.tokens


def test_state_holds_no_big_arrays(view: Any) -> None:
    state = view.get_state()
    assert {"tokens", "n_layers", "n_heads", "revision", "can_rerun", "selected", "prompt"} <= set(state)
    leaves = list(walk(state))
    assert not any(isinstance(v, (bytes, bytearray, memoryview)) for v in leaves)
    small = {k: v for k, v in state.items() if k not in ("_esm", "_css")}
    assert len(json.dumps(small)) < 4096, "patterns or other bulk data leaked into traits"
    assert len(json.dumps(state)) < 512 * 1024, "the front-end bundle should stay small"
    assert state["tokens"] == view.tokens


def test_without_model_points_at_attention_heads() -> None:
    with pytest.raises(TypeError, match="TransformerLens, or an nnsight LanguageModel.*attention_heads"):
        AttentionView()
    with pytest.raises(TypeError, match="needs a prompt"):
        AttentionView(object(), None)


def test_non_model_is_rejected() -> None:
    with pytest.raises(TypeError, match="TransformerLens model"):
        AttentionView(torch.nn.Linear(2, 2), "hi")


def test_token_id_prompt_without_tokenizer(native_model_no_tokenizer: Any) -> None:
    w = AttentionView(native_model_no_tokenizer, [0, 7, 9, 7])
    assert w.tokens == ["<0>", "<7>", "<9>", "<7>"] and w.prompt == ""
    assert w.patterns.shape == (2, 4, 4, 4)
    with pytest.raises(ValueError, match="no tokenizer"):
        w.prompt = "text"
    assert w.tokens == ["<0>", "<7>", "<9>", "<7>"]


# ----- overview and pattern requests ---------------------------------------------------------


@pytest.mark.parametrize("which", ["view", "gpt2_view"])
def test_overview_and_pattern_replies_decode_to_the_patterns(
    request: pytest.FixtureRequest, which: str, capture: Any, ask: Any
) -> None:
    w = request.getfixturevalue(which)
    sent = capture(w)
    result, thumbs, _ = overview(w, sent, ask)
    seq = len(w.tokens)
    assert seq < 32  # thumbnails of a short prompt are the patterns themselves
    assert result["revision"] == w.revision and (result["n_layers"], result["n_heads"]) == (2, 4)
    assert result["seq"] == seq and result["size"] == seq
    assert result["thumbnails"]["dtype"] == "uint8" and result["thumbnails"]["range"] == [0.0, 1.0]
    assert thumbs.shape == (2, 4, seq, seq)
    assert np.all(np.abs(thumbs - w.patterns.numpy()) <= 0.5 / 254 + 1e-6)
    for layer in range(2):
        for head in range(4):
            meta, pattern = get_pattern(w, sent, ask, layer, head)
            assert meta == {**meta, "revision": w.revision, "layer": layer, "head": head}
            assert meta["pattern"]["dtype"] == "float16" and pattern.shape == (seq, seq)
            np.testing.assert_allclose(pattern.astype(np.float32), w.pattern(layer, head).numpy(), **FP16_TOL)
            np.testing.assert_array_equal(pattern, w.pattern(layer, head).to(torch.float16).numpy())


def test_thumbnails_are_max_pooled(capture: Any, ask: Any) -> None:
    rng = np.random.default_rng(1)
    patterns = rng.random((2, 3, 64, 64), dtype=np.float32) * 0.5
    patterns[0, 1, 10, 20] = 1.0  # one sharp cell must survive 64 -> 32
    w = attention_heads(patterns, [f"t{i}" for i in range(64)])
    sent = capture(w)
    result, thumbs, codes = overview(w, sent, ask)
    assert result["size"] == 32 and thumbs.shape == (2, 3, 32, 32)
    expected = max_pool(patterns, 32)
    assert np.all(np.abs(thumbs - expected) <= 0.5 / 254 + 1e-6)
    assert codes[0, 1, 5, 10] == 254


def test_bad_pattern_requests_are_error_replies(view: Any, capture: Any, ask: Any) -> None:
    sent = capture(view)
    assert error_of(sent, ask(view, "pattern", {"layer": 2, "head": 0})) == {
        "type": "IndexError",
        "message": "layer must be in 0..1, got 2",
    }
    assert error_of(sent, ask(view, "pattern", {"layer": 0, "head": -1}))["type"] == "IndexError"
    assert error_of(sent, ask(view, "pattern", {"layer": "0", "head": 0}))["type"] == "TypeError"
    assert "'head'" in error_of(sent, ask(view, "pattern", {"layer": 0, "head": True}))["message"]
    assert "'layer'" in error_of(sent, ask(view, "pattern", {}))["message"]
    unknown = error_of(sent, ask(view, "nope"))
    assert unknown["type"] == "UnknownMethod" and "overview, pattern, run" in unknown["message"]
    get_pattern(view, sent, ask, 1, 3)  # still serving


# ----- run requests ------------------------------------------------------------------------


def test_run_request_updates_state_with_progress(view: Any, capture: Any, ask: Any, native_model: Any) -> None:
    sent = capture(view)
    view.selected = {"layer": 1, "head": 3, "query": 4, "key": 2}
    old_revision = view.revision
    new_prompt = "Mary and John went to the store"
    rid = ask(view, "run", {"prompt": new_prompt})
    sent.wait(rid, 30)
    content, _ = sent.reply(rid)
    assert content["ok"] is True, content
    messages = sent.of(rid)
    kinds = [c["type"] for c, _ in messages]
    assert kinds == ["progress", "progress", "response"], kinds
    assert [(c["done"], c["total"]) for c in sent.progress(rid)] == [(1, 2), (2, 2)]
    tokens = native_model.to_str_tokens(new_prompt)
    result = content["result"]
    assert result["revision"] == view.revision != old_revision
    assert result["tokens"] == view.tokens == tokens and result["prompt"] == view.prompt == new_prompt
    assert view.selected == {"layer": 1, "head": 3, "query": None, "key": None}
    torch.testing.assert_close(view.patterns, cached_patterns(native_model, new_prompt), atol=1e-6, rtol=1e-5)
    meta, pattern = get_pattern(view, sent, ask, 0, 0)
    assert meta["revision"] == view.revision and pattern.shape == (len(tokens), len(tokens))


def _assert_unchanged(view: Any, sent: Any, ask: Any, before: dict[str, Any]) -> None:
    assert view.revision == before["revision"] and view.tokens == before["tokens"] and view.prompt == before["prompt"]
    assert view.selected == before["selected"]
    torch.testing.assert_close(view.patterns, before["patterns"], atol=0, rtol=0)
    meta, pattern = get_pattern(view, sent, ask, 1, 1)
    assert meta["revision"] == before["revision"]
    np.testing.assert_array_equal(pattern, before["patterns"][1, 1].to(torch.float16).numpy())


def _snapshot(view: Any) -> dict[str, Any]:
    return {
        "revision": view.revision,
        "tokens": list(view.tokens),
        "prompt": view.prompt,
        "selected": dict(view.selected),
        "patterns": view.patterns.clone(),
    }


@pytest.mark.parametrize(
    "params, kind, pattern",
    [
        ({"prompt": ""}, "ValueError", "prompt is empty"),
        ({"prompt": "  \n "}, "ValueError", "prompt is empty"),
        ({"prompt": 5}, "TypeError", "run expects a text prompt, got int"),
        ({}, "TypeError", "got NoneType"),
    ],
)
def test_bad_run_leaves_state_unchanged(
    view: Any, capture: Any, ask: Any, params: Any, kind: str, pattern: str
) -> None:
    sent = capture(view)
    view.selected = {"layer": 1, "head": 0, "query": 3, "key": 1}
    before = _snapshot(view)
    error = error_of(sent, ask(view, "run", params))
    assert error["type"] == kind and pattern in error["message"]
    _assert_unchanged(view, sent, ask, before)


def test_too_long_run_is_an_error_and_leaves_state_unchanged(view: Any, capture: Any, ask: Any) -> None:
    sent = capture(view)
    before = _snapshot(view)
    error = error_of(sent, ask(view, "run", {"prompt": "The cat sat on the mat. " * 40}))
    assert error["type"] == "ValueError" and "n_ctx" in error["message"] and "64" in error["message"]
    _assert_unchanged(view, sent, ask, before)


def test_run_cancelled_before_it_starts_changes_nothing(view: Any, native_model: Any, capture: Any, ask: Any) -> None:
    sent = capture(view)
    before = _snapshot(view)
    lock = ModelAdapter(native_model).runner()[1]
    with lock:  # the worker blocks on the model until the cancel is in
        rid = ask(view, "run", {"prompt": "Mary and John"})
        view._handle_custom_msg({"type": "cancel", "id": rid}, [])
    error = error_of(sent, rid)
    assert error["type"] == "Cancelled"
    _assert_unchanged(view, sent, ask, before)


def test_run_cancelled_mid_forward_changes_nothing(view: Any, capture: Any, ask: Any) -> None:
    sent = capture(view)
    before = _snapshot(view)
    recorder = view.send
    cancelled = threading.Event()

    def send(content: dict[str, Any], buffers: Any = None) -> None:
        recorder(content, buffers)
        if content.get("type") == "progress" and not cancelled.is_set():  # after layer 1 of 2 arrives
            cancelled.set()
            view._handle_custom_msg({"type": "cancel", "id": content["id"]}, [])

    view.send = send
    rid = ask(view, "run", {"prompt": "Mary and John"})
    error = error_of(sent, rid)
    assert cancelled.is_set() and error["type"] == "Cancelled"
    assert [c["done"] for c in sent.progress(rid)] == [1]
    _assert_unchanged(view, sent, ask, before)
    # the model and the worker are fine afterwards
    rid = ask(view, "run", {"prompt": "Mary and John"})
    sent.wait(rid, 30)
    assert sent.reply(rid)[0]["ok"] is True and view.prompt == "Mary and John"


def test_run_on_array_view_is_an_error(capture: Any, ask: Any) -> None:
    w = attention_heads(torch.rand(2, 3, 3), ["a", "b", "c"])
    assert w.can_rerun is False
    sent = capture(w)
    error = error_of(sent, ask(w, "run", {"prompt": "hello"}))
    assert error["type"] == "ValueError" and "cannot re-run" in error["message"]
    assert w.tokens == ["a", "b", "c"]


# ----- prompt from Python -----------------------------------------------------------------


def test_setting_prompt_reruns(view: Any, native_model: Any) -> None:
    old = view.revision
    view.selected = {"layer": 0, "head": 1, "query": 2, "key": 0}
    view.prompt = "Hello world"
    assert view.prompt == "Hello world" and view.revision != old
    assert view.tokens == native_model.to_str_tokens("Hello world")
    assert view.selected == {"layer": 0, "head": 1, "query": None, "key": None}
    torch.testing.assert_close(view.patterns, cached_patterns(native_model, "Hello world"), atol=1e-6, rtol=1e-5)
    revision = view.revision
    view.prompt = "Hello world"  # same prompt: no re-run
    assert view.revision == revision


@pytest.mark.parametrize("bad", ["", "   ", "The cat sat on the mat. " * 40])
def test_bad_prompt_from_python_raises_and_changes_nothing(view: Any, bad: str) -> None:
    before = _snapshot(view)
    with pytest.raises((ValueError, traitlets.TraitError), match="prompt is empty|n_ctx"):
        view.prompt = bad
    assert view.prompt == before["prompt"] and view.revision == before["revision"] and view.tokens == before["tokens"]


def test_prompt_of_array_view_cannot_change() -> None:
    w = attention_heads(np.ones((1, 2, 2), np.float32) / 2, ["a", "b"])
    with pytest.raises(traitlets.TraitError, match="fixed patterns"):
        w.prompt = "hello"
    assert w.prompt == ""


# ----- selected ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value, pattern",
    [
        ({"layer": 2, "head": 0}, "layer must be in 0..1, got 2"),
        ({"layer": -1, "head": 0}, "layer must be in 0..1"),
        ({"layer": 0, "head": 4}, "head must be in 0..3, got 4"),
        ({"layer": 0, "head": 0, "query": 99}, "selected query must be in 0..\\d+ or None, got 99"),
        ({"layer": 0, "head": 0, "key": -1}, "selected key must be in"),
        ({"layer": 0, "head": 0, "colour": "red"}, "unknown \\['colour'\\]"),
    ],
)
def test_selected_validation(view: Any, value: dict[str, Any], pattern: str) -> None:
    before = dict(view.selected)
    with pytest.raises(traitlets.TraitError, match=pattern):
        view.selected = value
    assert view.selected == before


def test_selected_is_normalised(view: Any) -> None:
    view.selected = {"layer": np.int64(1), "head": 2, "query": 3}
    assert view.selected == {"layer": 1, "head": 2, "query": 3, "key": None}
    assert all(type(view.selected[k]) is int for k in ("layer", "head", "query"))
    with pytest.raises(traitlets.TraitError):
        AttentionView.from_patterns(np.ones((1, 2, 2), np.float32), ["a", "b"], head=1)


# ----- from_patterns / attention_heads ------------------------------------------------------


@pytest.mark.parametrize("kind", ["numpy", "torch"])
@pytest.mark.parametrize("rank", [3, 4])
def test_from_patterns(kind: str, rank: int, capture: Any, ask: Any) -> None:
    shape = (3, 5, 5) if rank == 3 else (2, 3, 5, 5)
    data = np.random.default_rng(0).random(shape, dtype=np.float32)
    attention = data if kind == "numpy" else torch.from_numpy(data)
    tokens = ["a", "b", "c", "d", "e"]
    w = attention_heads(attention, tokens) if rank == 3 else AttentionView.from_patterns(attention, tokens, layer=1)
    assert (w.n_layers, w.n_heads) == (1 if rank == 3 else 2, 3)
    assert w.tokens == tokens and w.can_rerun is False and w.prompt == ""
    assert w.selected["layer"] == (0 if rank == 3 else 1)
    np.testing.assert_array_equal(w.patterns.numpy(), data.reshape((-1, 3, 5, 5)))
    sent = capture(w)
    _, pattern = get_pattern(w, sent, ask, w.n_layers - 1, 2)
    np.testing.assert_allclose(pattern, data.reshape((-1, 3, 5, 5))[-1, 2], **FP16_TOL)


@pytest.mark.parametrize(
    "attention, tokens, error, pattern",
    [
        (np.ones((5, 5), np.float32), list("abcde"), ValueError, r"\[heads, query, key\].*got shape \[5, 5\]"),
        (np.ones((1, 1, 1, 5, 5), np.float32), list("abcde"), ValueError, r"got shape \[1, 1, 1, 5, 5\]"),
        (np.ones((2, 4, 5), np.float32), list("abcde"), ValueError, r"square.*4 queries and 5 keys"),
        (np.ones((2, 5, 5), np.float32), list("abc"), ValueError, r"covers 5 positions but 3 tokens"),
        (np.ones((2, 5, 5), np.int64), list("abcde"), TypeError, r"floating-point.*int64"),
        (torch.ones(2, 5, 5, dtype=torch.int32), list("abcde"), TypeError, r"floating-point.*torch.int32"),
        (np.ones((2, 5, 5), np.float32), "abcde", TypeError, r"tokens as a list of strings, got str"),
        ([[[1.0]]], ["a"], TypeError, r"torch.Tensor or numpy.ndarray, got list"),
        (np.ones((0, 5, 5), np.float32), list("abcde"), ValueError, r"no heads or no positions"),
    ],
)
def test_from_patterns_errors(attention: Any, tokens: Any, error: type[Exception], pattern: str) -> None:
    with pytest.raises(error, match=pattern):
        attention_heads(attention, tokens)


def test_nonfinite_patterns_stay_visible(capture: Any, ask: Any) -> None:
    # a model's own patterns (a cache): NaN/inf is a broken head to show; attention_heads refuses it (test_bad_input.py)
    patterns = np.full((1, 3, 4, 4), 0.25, np.float32)
    patterns[0, 1, 2, 3] = np.nan
    patterns[0, 2, 0, 0] = np.inf
    w = AttentionView.from_cache({"blocks.0.attn.hook_pattern": torch.from_numpy(patterns)}, list("abcd"))
    sent = capture(w)
    _, thumbs, codes = overview(w, sent, ask)
    assert np.all(codes[0, 1] == 255), "a head with NaN is flagged as a whole"
    assert codes[0, 2, 0, 0] == 255 and np.sum(codes[0, 2] == 255) == 1
    assert not np.any(codes[0, 0] == 255)
    assert np.isnan(thumbs[0, 1]).all() and np.isnan(thumbs[0, 2, 0, 0])
    _, nan_head = get_pattern(w, sent, ask, 0, 1)
    assert np.isnan(nan_head[2, 3]) and np.isnan(nan_head).sum() == 1
    _, inf_head = get_pattern(w, sent, ask, 0, 2)
    assert np.isposinf(inf_head[0, 0]) and inf_head[1, 1] == np.float16(0.25)


def test_hostile_tokens_pass_through_as_strings() -> None:
    tokens = ["<img src=x onerror=alert(1)>", "</script>", "&amp;", "\"'", "\u202e", ""]
    w = attention_heads(np.eye(6, dtype=np.float32)[None], tokens)
    assert w.tokens == tokens and w.get_state()["tokens"] == tokens
    assert all(type(t) is str for t in w.tokens)


def test_non_string_tokens_become_strings() -> None:
    w = attention_heads(np.eye(2, dtype=np.float32)[None], [1, None])
    assert w.tokens == ["1", "None"]


def test_big_pattern_reply_is_split_and_reassembles(capture: Any, ask: Any) -> None:
    data = np.random.default_rng(0).random((1, 1500, 1500), dtype=np.float32)
    w = attention_heads(data, [str(i) for i in range(1500)])
    sent = capture(w)
    rid = ask(w, "pattern", {"layer": 0, "head": 0})
    sent.wait(rid, 10)
    parts = sent.responses(rid)
    assert len(parts) == 2 == parts[0][0]["parts"]
    assert all(sum(memoryview(b).nbytes for b in buffers) <= MAX_MESSAGE for _, buffers in parts)
    content, buffers = sent.reply(rid)
    assert content["buffer_lengths"] == [1500 * 1500 * 2]
    pattern = decode_array(content["result"]["pattern"], buffers)
    np.testing.assert_array_equal(pattern, data[0].astype(np.float16))


def test_causal_patterns_travel_as_lower_triangle_and_others_dense(capture: Any, ask: Any) -> None:
    rng = np.random.default_rng(1)
    causal = np.tril(rng.random((2, 300, 300), dtype=np.float32))
    full = rng.random((2, 300, 300), dtype=np.float32)
    for data, layout, nbytes in ((causal, "lower", 300 * 301), (full, None, 300 * 300 * 2)):
        w = attention_heads(data, [str(i) for i in range(300)])
        sent = capture(w)
        rid = ask(w, "pattern", {"layer": 0, "head": 1})
        sent.wait(rid, 10)
        content, buffers = sent.reply(rid)
        assert content["result"]["pattern"].get("layout") == layout
        assert content["buffer_lengths"] == [nbytes]
        np.testing.assert_array_equal(decode_array(content["result"]["pattern"], buffers), data[1].astype(np.float16))


# ----- from_cache ---------------------------------------------------------------------------


def test_from_cache_with_string_tokens_and_token_ids(native_model: Any) -> None:
    tokens = native_model.to_tokens(PROMPT)
    _, cache = native_model.run_with_cache(tokens, names_filter=lambda name: name.endswith("hook_pattern"))
    labels = native_model.to_str_tokens(PROMPT)
    a = AttentionView.from_cache(cache, labels)
    b = AttentionView.from_cache(cache, tokens)  # [1, seq] ids, labelled with the cache's model
    c = AttentionView.from_cache(cache, tokens[0], layer=1, head=3)
    for w in (a, b, c):
        assert w.tokens == labels and (w.n_layers, w.n_heads) == (2, 4) and w.can_rerun is False
        torch.testing.assert_close(w.patterns, torch.stack([cache["pattern", l][0] for l in range(2)]))
    assert c.selected == {"layer": 1, "head": 3, "query": None, "key": None}


def test_from_cache_without_tokenizer_labels_ids(native_model_no_tokenizer: Any) -> None:
    ids = torch.tensor([[0, 4, 8]])
    _, cache = native_model_no_tokenizer.run_with_cache(ids, names_filter=lambda n: n.endswith("hook_pattern"))
    w = AttentionView.from_cache(cache, ids)
    assert w.tokens == ["<0>", "<4>", "<8>"] and w.patterns.shape == (2, 4, 3, 3)


def test_from_cache_errors(native_model: Any) -> None:
    tokens = native_model.to_tokens("The cat")
    _, cache = native_model.run_with_cache(tokens, names_filter=lambda name: name.endswith("hook_q"))
    with pytest.raises(ValueError, match="no attention patterns.*names_filter"):
        AttentionView.from_cache(cache, ["a"])
    _, cache = native_model.run_with_cache(tokens, names_filter=lambda name: name.endswith("hook_pattern"))
    with pytest.raises(IndexError, match="batch_index must be in 0..0, got 1"):
        AttentionView.from_cache(cache, tokens, batch_index=1)
    with pytest.raises(ValueError, match="3 tokens were given"):
        AttentionView.from_cache(cache, ["a", "b", "c"])
