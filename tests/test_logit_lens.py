"""LogitLens: the maths against TransformerLens's own cache, chunking, the widget's requests, bad input."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch
import traitlets

import mi_widgets as mw
from mi_widgets.analysis.logit_lens import logit_lens
from mi_widgets.capture.adapter import ModelAdapter
from mi_widgets.capture.readout import lens_hooks, model_unembed, residual_streams, single_token_id
from mi_widgets.transport.codec import decode_array

from .conftest import PROMPT


def reference_lens(model: Any, prompt: Any) -> torch.Tensor:
    """Probabilities ``[rows, seq, vocab]`` from ``run_with_cache`` and the final LayerNorm written out by hand."""
    _, cache = model.run_with_cache(prompt)
    resid = cache.accumulated_resid(incl_mid=False)[:, 0]  # [n_layers + 1, seq, d_model]: 0_pre, ..., final_post
    assert resid.shape[0] == model.cfg.n_layers + 1
    centred = resid - resid.mean(-1, keepdim=True)
    normed = (
        centred / (centred.pow(2).mean(-1, keepdim=True) + model.cfg.eps).sqrt() * model.ln_final.w + model.ln_final.b
    )
    return (normed @ model.W_U + model.b_U).softmax(-1).detach()


def wait_reply(sent: Any, rid: str) -> tuple[dict[str, Any], list[bytes]]:
    sent.wait(rid, 30)
    return sent.reply(rid)


@pytest.fixture(scope="module")
def induction() -> Any:
    return mw.zoo.load("induction-2l")


# ----- maths ----------------------------------------------------------------------------------


def test_every_row_is_the_final_norm_and_unembedding_of_that_layer(any_model: Any) -> None:
    lens = mw.LogitLens(any_model, PROMPT, target=" the", k=4)
    probs = reference_lens(any_model, PROMPT)
    rows, seq = any_model.cfg.n_layers + 1, len(lens.tokens)
    assert lens.top_ids.shape == (rows, seq, 4) and lens.target_probs.shape == (rows, seq)
    values, ids = probs.topk(4, dim=-1)
    assert torch.allclose(lens.top_probs, values, atol=1e-5)
    assert (lens.top_ids == ids).float().mean() > 0.99  # ties in a random model may swap order
    target = single_token_id(ModelAdapter(any_model), " the")
    assert torch.allclose(lens.target_probs, probs[..., target], atol=1e-6, rtol=1e-4)
    ranks = (probs > probs[..., target : target + 1]).sum(-1) + 1
    assert torch.equal(lens.target_ranks, ranks)
    assert lens.rows == ["embed", "L0 out", "L1 out"]


def test_the_last_row_is_the_models_next_token_distribution(any_model: Any) -> None:
    lens = mw.LogitLens(any_model, PROMPT, target=0, k=5)
    real = any_model(PROMPT)[0].softmax(-1).detach()
    values, ids = real.topk(5, dim=-1)
    assert torch.allclose(lens.top_probs[-1], values, atol=1e-6)
    assert torch.equal(lens.top_ids[-1, :, 0], ids[:, 0])
    assert torch.allclose(lens.target_probs[-1], real[:, 0], atol=1e-7, rtol=1e-5)
    top = lens.top(any_model.cfg.n_layers, 3)
    assert [p for _, p in top] == pytest.approx(values[3].tolist(), abs=1e-6)
    assert top[0][0] == any_model.to_str_tokens(ids[3, :1])[0]


def test_agrees_with_accumulated_resid_and_not_with_the_cached_final_scale(induction: Any) -> None:
    """The docstring's claims: TL's accumulated_resid(apply_ln=True) recomputes the final norm per layer
    (as here); the cached final scale (``apply_ln_to_stack``, ``recompute_ln=False``) only agrees in the last row."""
    lens = mw.LogitLens(induction, PROMPT, k=1)
    _, cache = induction.run_with_cache(PROMPT)
    recomputed = cache.accumulated_resid(apply_ln=True)[:, 0] @ induction.W_U + induction.b_U
    assert torch.allclose(lens.top_probs[..., 0], recomputed.softmax(-1).max(-1).values.detach(), atol=1e-5)
    resid = cache.accumulated_resid()
    cached = cache.apply_ln_to_stack(resid, layer=induction.cfg.n_layers, recompute_ln=False)[:, 0]
    tl2 = (cached * induction.ln_final.w + induction.ln_final.b) @ induction.W_U + induction.b_U
    tl2_top = tl2.softmax(-1).max(-1).values.detach()
    assert torch.allclose(lens.top_probs[-1, :, 0], tl2_top[-1], atol=1e-5)
    assert not torch.allclose(lens.top_probs[0, :, 0], tl2_top[0], atol=1e-3)


def test_chunks_bound_the_logits_held_and_give_the_same_answer(induction: Any) -> None:
    adapter = ModelAdapter(induction)
    resid = residual_streams(adapter, adapter.to_tokens(PROMPT))
    unembed = model_unembed(adapter)
    sizes: list[int] = []

    def counting(x: torch.Tensor) -> torch.Tensor:
        sizes.append(int(x.shape[0]))
        return unembed(x)

    vocab = int(induction.cfg.d_vocab)
    small = logit_lens(counting, resid, k=3, target=7, chunk_elements=5 * vocab)
    assert max(sizes) <= 5 and sum(sizes) == 1 + resid.shape[0] * resid.shape[1]  # one probe, then every cell once
    whole = logit_lens(unembed, resid, k=3, target=7)
    for a, b in zip(small.__dict__.values(), whole.__dict__.values()):
        assert torch.equal(a, b)
    assert len(lens_hooks(2)) == 3 and lens_hooks(2)[-1] == "blocks.1.hook_resid_post"


def test_target_and_k_errors(native_model: Any, native_model_no_tokenizer: Any) -> None:
    adapter = ModelAdapter(native_model)
    pieces = adapter.token_labels(native_model.to_tokens(" Marylebone", prepend_bos=False)[0])
    assert len(pieces) > 1
    with pytest.raises(ValueError, match=rf"' Marylebone' tokenizes to {len(pieces)} tokens \[' Mary'"):
        mw.LogitLens(native_model, PROMPT, target=" Marylebone")
    with pytest.raises(ValueError, match="token id must be in 0..349"):
        mw.LogitLens(native_model, PROMPT, target=350)
    with pytest.raises(TypeError, match="string of one token or a token id"):
        mw.LogitLens(native_model, PROMPT, target=1.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="k must be an integer in 1..50"):
        mw.LogitLens(native_model, PROMPT, k=0)
    with pytest.raises(ValueError, match="n_ctx"):
        mw.LogitLens(native_model, " cat" * 100)
    with pytest.raises(ValueError, match="no tokenizer, so target ' cat' cannot"):
        mw.LogitLens(native_model_no_tokenizer, torch.arange(1, 9), target=" cat")
    lens = mw.LogitLens(native_model_no_tokenizer, torch.arange(1, 9), target=np.int64(3), k=2)
    assert lens.target == 3 and type(lens.target) is int
    assert lens.tokens == [f"<{i}>" for i in range(1, 9)] and lens.target_token == "<3>"
    assert all(t.startswith("<") for t, _ in lens.top(0, 0))


# ----- the widget -----------------------------------------------------------------------------


def test_lens_request_sends_ids_probs_and_only_the_strings_that_occur(
    induction: Any, capture: Callable[[Any], Any], ask: Callable[..., str]
) -> None:
    lens = mw.LogitLens(induction, PROMPT, target=" sat", k=3)
    sent = capture(lens)
    content, buffers = wait_reply(sent, ask(lens, "lens"))
    assert content["ok"], content
    r = content["result"]
    assert (r["rows"], r["seq"], r["k"], r["revision"]) == (3, len(lens.tokens), 3, lens.revision)
    assert {r[n]["dtype"] for n in ("top_ids", "vocab_ids", "target_ranks")} == {"int32"}
    assert {r[n]["dtype"] for n in ("top_probs", "target_probs")} == {"float16"}
    ids = decode_array(r["top_ids"], buffers)
    assert np.array_equal(ids, lens.top_ids.numpy())
    assert np.allclose(decode_array(r["top_probs"], buffers), lens.top_probs.numpy(), atol=1e-3)
    assert np.allclose(decode_array(r["target_probs"], buffers), lens.target_probs.numpy(), atol=1e-3)
    assert np.array_equal(decode_array(r["target_ranks"], buffers), lens.target_ranks.numpy())
    vocab_ids = decode_array(r["vocab_ids"], buffers).tolist()
    assert set(vocab_ids) == set(np.unique(ids).tolist()) | {lens.target_id}
    assert len(r["vocab"]) == len(vocab_ids) < induction.cfg.d_vocab
    assert r["vocab"][vocab_ids.index(lens.target_id)] == " sat" == r["target_token"]
    assert all(isinstance(s, str) for s in r["vocab"])


def test_target_request_recomputes_with_progress_and_bad_targets_change_nothing(
    induction: Any, capture: Callable[[Any], Any], ask: Callable[..., str]
) -> None:
    lens = mw.LogitLens(induction, PROMPT)
    with pytest.raises(ValueError, match="no target token is set"):
        _ = lens.target_probs
    sent = capture(lens)
    top_before, revision = lens.top_ids.clone(), lens.revision
    rid = ask(lens, "target", {"target": " mat"})
    content, _ = wait_reply(sent, rid)
    assert content["ok"], content
    assert lens.target == " mat" and lens.target_token == " mat" and lens.revision > revision
    assert content["result"]["revision"] == lens.revision
    assert [p["done"] for p in sent.progress(rid)] == [1, 2, 3]
    assert torch.equal(lens.top_ids, top_before)  # only the target row was recomputed
    expected = reference_lens(induction, PROMPT)[..., lens.target_id]
    assert torch.allclose(lens.target_probs, expected, atol=1e-6)

    state = (lens.target, lens.revision)
    content, _ = wait_reply(sent, ask(lens, "target", {"target": " mat mat"}))
    assert not content["ok"] and "tokenizes to 2 tokens" in content["error"]["message"]
    assert (lens.target, lens.revision) == state
    content, _ = wait_reply(sent, ask(lens, "target", {"target": ""}))
    assert content["ok"] and lens.target is None and lens.target_id is None and lens.target_token == ""


def test_target_from_python_and_selection(induction: Any) -> None:
    lens = mw.LogitLens(induction, PROMPT, k=2)
    lens.target = " on"
    assert lens.target_token == " on" and lens.target_probs.shape == (3, len(lens.tokens))
    revision = lens.revision
    with pytest.raises(traitlets.TraitError, match="tokenizes to"):
        lens.target = " on the"
    assert lens.target == " on" and lens.revision == revision
    lens.target = lens.target_id  # an id works as well
    assert lens.target_token == " on"

    assert lens.selected == {"layer": None, "position": None}
    lens.selected = {"layer": 2, "position": 4}
    assert lens.selected == {"layer": 2, "position": 4}
    for bad, message in [
        ({"layer": 3, "position": 0}, r"row in 0..2"),
        ({"layer": 0, "position": 99}, "position must be in"),
        ({"layer": 0}, "both"),
        ({"row": 1}, "unknown"),
    ]:
        with pytest.raises(traitlets.TraitError, match=message):
            lens.selected = bad
    assert lens.selected == {"layer": 2, "position": 4}
    with pytest.raises(IndexError, match="row in 0..2"):
        lens.top(5, 0)
