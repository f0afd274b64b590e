"""ActivationView: captured activations and values against TransformerLens's own cache, requests, bad input."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch
import traitlets

import mi_widgets as mw
from mi_widgets.analysis.activations import (
    activation_nbytes,
    check_direction,
    per_token,
    symmetric_range,
    top_units,
    unit_values,
)
from mi_widgets.capture import ModelAdapter
from mi_widgets.transport.codec import decode_array

PROMPTS = ["The cat sat on the mat.", "The mat sat on the cat.", "Hello world! Numbers like 1, 2, 3"]


def _cache(model: Any, tokens: torch.Tensor, names: list[str]) -> dict[str, torch.Tensor]:
    _, cache = model.run_with_cache(tokens, names_filter=names)
    return {name: cache[name] for name in names}


class _Forwards:
    """Records the hooks of every ``run_with_hooks`` call a model makes."""

    def __init__(self, model: Any, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: list[tuple[list[str], tuple[int, ...]]] = []
        original = model.run_with_hooks

        def run_with_hooks(tokens: Any, *args: Any, fwd_hooks: Any = (), **kwargs: Any) -> Any:
            self.calls.append(([name for name, _ in fwd_hooks], tuple(tokens.shape)))
            return original(tokens, *args, fwd_hooks=fwd_hooks, **kwargs)

        monkeypatch.setattr(model, "run_with_hooks", run_with_hooks)


# ----- analysis ------------------------------------------------------------------------------


def test_unit_values_and_top_units_against_direct_indexing() -> None:
    gen = torch.Generator().manual_seed(0)
    acts = torch.randn(3, 5, 8, generator=gen)
    assert torch.equal(unit_values(acts, neuron=6), acts[..., 6])
    direction = torch.randn(8, generator=gen)
    expected = torch.einsum("lsd,d->ls", acts.double(), direction.double()).float()
    assert torch.allclose(unit_values(acts, direction=direction), expected, atol=1e-5)
    assert torch.allclose(unit_values(acts, direction=direction * 3), 3 * expected, atol=1e-4), "not normalised"
    values, indices = top_units(acts[1, 2], k=3)
    order = sorted(range(8), key=lambda i: -float(acts[1, 2, i]))[:3]
    assert indices.tolist() == order and torch.equal(values, acts[1, 2, order])
    assert top_units(acts[0, 0], k=50)[1].shape == (8,)  # k > d gives d
    assert symmetric_range([torch.tensor([1.0, -3.0]), torch.tensor([float("nan"), 2.0, float("-inf")])]) == 3.0
    assert symmetric_range([torch.zeros(0)]) == 0.0
    assert activation_nbytes(1024, 12, 3072) == 150_994_944  # gpt2-small mlp.post, 1024 tokens, float32
    assert activation_nbytes(10, 2, 4, torch.float16) == 160
    z = torch.randn(2, 5, 4, 16)
    assert torch.equal(per_token(z, 5, "blocks.0.attn.hook_z"), z.reshape(2, 5, 64))


def test_analysis_input_checks() -> None:
    acts = torch.randn(4, 8)
    with pytest.raises(ValueError, match=r"shape \[8\] \(the width of the hooked activations\), got shape \[7\]"):
        unit_values(acts, direction=torch.randn(7))
    with pytest.raises(ValueError, match="1 NaN/inf entry"):
        unit_values(acts, direction=torch.tensor([0.0] * 7 + [float("nan")]))
    with pytest.raises(ValueError, match="2 NaN/inf entries"):
        check_direction([1.0, float("inf"), float("-inf")], 3)
    with pytest.raises(ValueError, match="exactly one of neuron"):
        unit_values(acts)
    with pytest.raises(ValueError, match="exactly one of neuron"):
        unit_values(acts, neuron=1, direction=torch.ones(8))
    with pytest.raises(IndexError, match=r"neuron must be in 0\.\.7, got 8"):
        unit_values(acts, neuron=8)
    with pytest.raises(TypeError, match="neuron must be an integer"):
        unit_values(acts, neuron=1.5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="real numbers"):
        check_direction(torch.ones(3, dtype=torch.bool), 3)
    with pytest.raises(ValueError, match="k must be a positive integer"):
        top_units(acts[0], k=0)
    with pytest.raises(ValueError, match=r"as \[d\]"):
        top_units(acts, k=2)
    with pytest.raises(ValueError, match="not one vector per token"):
        per_token(torch.zeros(1, 4, 5, 5), 5, "blocks.0.attn.hook_pattern")
    assert check_direction(np.ones((1, 8)), 8).shape == (8,)  # a [1, d] probe weight is fine


# ----- against TransformerLens ----------------------------------------------------------------


def test_activations_values_and_top_neurons_match_run_with_cache(
    gpt2_bridge: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    forwards = _Forwards(ModelAdapter(gpt2_bridge).runner()[0], monkeypatch)  # views run on the model's twin
    view = mw.ActivationView(gpt2_bridge, PROMPTS, hook="mlp.post", layer=1, neuron=5)
    names = ["blocks.0.mlp.hook_post", "blocks.1.mlp.hook_post"]
    assert view.hooks == names and view.layers == [0, 1] and view.n_layers == 2 and view.d == 256
    assert view.selected == {"layer": 1, "neuron": 5, "prompt_index": None, "position": None}
    # only the requested hooks; the two prompts of equal length share one forward pass, the other has its own
    seqs = [len(t) for t in view.tokens]
    assert seqs[0] == seqs[1] != seqs[2]
    assert all(hooks == names for hooks, _ in forwards.calls)
    assert sorted(shape for _, shape in forwards.calls) == sorted([(2, seqs[0]), (1, seqs[2])])

    acts = view.activations
    assert view.nbytes == sum(a.numel() for a in acts) * 4
    for i, prompt in enumerate(PROMPTS):
        tokens = gpt2_bridge.to_tokens(prompt)
        cache = _cache(gpt2_bridge, tokens, names)
        expected = torch.stack([cache[name][0] for name in names])
        assert acts[i].shape == expected.shape and acts[i].device == tokens.device
        assert torch.allclose(acts[i], expected, atol=1e-5), f"prompt {i} differs from run_with_cache"
        assert view.tokens[i] == [str(t) for t in gpt2_bridge.to_str_tokens(prompt)]
        assert torch.allclose(view.values()[i], expected[1, :, 5], atol=1e-5)
        assert torch.allclose(view.values(layer=0, neuron=17)[i], expected[0, :, 17], atol=1e-5)
        top = view.top_neurons(i, 2, k=10)
        values, indices = torch.topk(cache[names[1]][0, 2], 10)
        assert [n for n, _ in top] == indices.tolist()
        assert np.allclose([v for _, v in top], values.tolist(), atol=1e-5)
        assert [n for n, _ in view.top_neurons(i, 0, k=3, layer=0)] == torch.topk(
            cache[names[0]][0, 0], 3
        ).indices.tolist()


def test_full_hook_name_pins_one_layer_and_direction_is_a_plain_dot_product(gpt2_bridge: Any) -> None:
    torch.manual_seed(1)
    direction = torch.randn(64)
    view = mw.ActivationView(gpt2_bridge, PROMPTS[:2], hook="blocks.1.hook_resid_post", direction=direction)
    assert view.layers == [1] and view.hooks == ["blocks.1.hook_resid_post"] and view.d == 64
    assert view.selected["layer"] == 1 and view.selected["neuron"] is None and view.has_direction
    for i, prompt in enumerate(PROMPTS[:2]):
        resid = _cache(gpt2_bridge, gpt2_bridge.to_tokens(prompt), ["blocks.1.hook_resid_post"])[
            "blocks.1.hook_resid_post"
        ][0]
        assert torch.allclose(view.values()[i], resid @ direction, atol=1e-4)
        assert torch.allclose(view.values(neuron=3)[i], resid[:, 3])
    view.selected = {"neuron": 3}
    assert view.selected["neuron"] == 3
    assert torch.allclose(view.values(neuron="direction")[0], view.activations[0][0] @ direction, atol=1e-4)


def test_other_hooks_z_and_attn_out(gpt2_bridge: Any) -> None:
    z = mw.ActivationView(gpt2_bridge, PROMPTS[0], hook="z")
    assert z.d == 4 * 16 and z.layers == [0, 1]
    tokens = gpt2_bridge.to_tokens(PROMPTS[0])
    cache = _cache(gpt2_bridge, tokens, ["blocks.1.attn.hook_z", "blocks.0.hook_attn_out"])
    assert torch.allclose(z.activations[0][1], cache["blocks.1.attn.hook_z"][0].reshape(tokens.shape[1], -1), atol=1e-5)
    attn = mw.ActivationView(gpt2_bridge, PROMPTS[0], hook="attn_out")
    assert torch.allclose(attn.activations[0][0], cache["blocks.0.hook_attn_out"][0], atol=1e-5)


def test_token_id_prompts(native_model_no_tokenizer: Any) -> None:
    model = native_model_no_tokenizer
    batch = torch.arange(1, 13).reshape(2, 6)
    view = mw.ActivationView(model, batch, hook="resid_post")
    assert len(view.activations) == 2 and view.tokens[1] == [f"<{i}>" for i in range(7, 13)]
    _, cache = model.run_with_cache(batch, names_filter=["blocks.1.hook_resid_post"])
    assert torch.allclose(view.activations[1][1], cache["blocks.1.hook_resid_post"][1], atol=1e-5)
    assert len(mw.ActivationView(model, [5, 6, 7], hook="resid_post").activations) == 1  # one prompt of ids
    ragged = mw.ActivationView(model, [[5, 6, 7], torch.tensor([1, 2]), np.array([[9]])], hook="resid_post")
    assert [a.shape[1] for a in ragged.activations] == [3, 2, 1]


# ----- bad input ------------------------------------------------------------------------------


def test_bad_input(gpt2_bridge: Any, native_model: Any, native_model_no_tokenizer: Any) -> None:
    with pytest.raises(ValueError, match="did you mean mlp.post"):
        mw.ActivationView(gpt2_bridge, "The cat", hook="mlp.pots")
    with pytest.raises(ValueError, match="did you mean blocks.1.mlp.hook_post"):
        mw.ActivationView(gpt2_bridge, "The cat", hook="blocks.1.mlp.hook_pots")
    with pytest.raises(ValueError, match="unknown hook name 'blocks.0.mlp.hook_post'"):
        mw.ActivationView(native_model, "The cat", hook="mlp.post")  # attention-only: no MLP
    with pytest.raises(ValueError, match="not one vector per token"):
        mw.ActivationView(gpt2_bridge, "The cat", hook="pattern")
    with pytest.raises(traitlets.TraitError, match=r"selected neuron must be in 0\.\.255, got 256"):
        mw.ActivationView(gpt2_bridge, "The cat", neuron=256)
    with pytest.raises(
        traitlets.TraitError, match=r"selected layer must be in 0\.\.1 \(the layers of hook 'mlp.post'\), got 2"
    ):
        mw.ActivationView(gpt2_bridge, "The cat", layer=2)
    with pytest.raises(traitlets.TraitError, match="selected layer must be 1 .*got 0"):
        mw.ActivationView(gpt2_bridge, "The cat", hook="blocks.1.mlp.hook_post", layer=0)
    with pytest.raises(ValueError, match=r"direction must have shape \[256\].*got shape \[64\]"):
        mw.ActivationView(gpt2_bridge, "The cat", direction=torch.ones(64))
    with pytest.raises(ValueError, match="NaN/inf"):
        mw.ActivationView(gpt2_bridge, "The cat", direction=torch.full((256,), float("nan")))
    with pytest.raises(
        ValueError, match=r"prompt 1: prompt is 200 tokens long but the model's context \(n_ctx\) is 128"
    ):
        mw.ActivationView(gpt2_bridge, ["The cat", list(range(1, 201))])
    with pytest.raises(ValueError, match="prompts is empty"):
        mw.ActivationView(gpt2_bridge, [])
    with pytest.raises(ValueError, match="prompts is an empty batch"):
        mw.ActivationView(gpt2_bridge, torch.zeros(0, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="prompt 1: prompt is empty"):
        mw.ActivationView(gpt2_bridge, ["The cat", "  "])
    with pytest.raises(ValueError, match="no tokenizer"):
        mw.ActivationView(native_model_no_tokenizer, "some text", hook="resid_post")
    with pytest.raises(TypeError, match="prompts must be a string"):
        mw.ActivationView(gpt2_bridge, 42)
    with pytest.raises(TypeError, match="expected a TransformerLens model"):
        mw.ActivationView(torch.nn.Linear(2, 2), "x")


def test_selection_is_validated_and_partial_updates_merge(gpt2_bridge: Any) -> None:
    view = mw.ActivationView(gpt2_bridge, PROMPTS)
    view.selected = {"neuron": 9, "prompt_index": 2, "position": 4}
    assert view.selected == {"layer": 0, "neuron": 9, "prompt_index": 2, "position": 4}
    n2 = len(view.tokens[2])
    for bad, message in [
        ({"neuron": -1}, r"selected neuron must be in 0\.\.255, got -1"),
        ({"neuron": None}, "this view has none"),
        ({"neuron": 2.5}, "selected neuron must be an integer"),
        ({"layer": 5}, r"layer must be in 0\.\.1"),
        ({"prompt_index": 3}, r"selected prompt_index must be in 0\.\.2 or None, got 3"),
        ({"position": n2}, rf"selected position must be in 0\.\.{n2 - 1} \(prompt 2\) or None, got {n2}"),
        ({"prompt_index": None, "position": 1}, "needs a prompt_index"),
        ({"head": 1}, "unknown"),
    ]:
        with pytest.raises(traitlets.TraitError, match=message):
            view.selected = bad
    assert view.selected == {"layer": 0, "neuron": 9, "prompt_index": 2, "position": 4}  # a bad value changes nothing
    view.selected = {"prompt_index": None, "position": None, "layer": np.int64(1)}
    assert view.selected == {"layer": 1, "neuron": 9, "prompt_index": None, "position": None}
    with pytest.raises(IndexError, match=rf"position must be in 0\.\.{len(view.tokens[0]) - 1}, got 99"):
        view.top_neurons(0, 99)
    with pytest.raises(IndexError, match=r"prompt must be in 0\.\.2"):
        view.top_neurons(3, 0)
    with pytest.raises(ValueError, match="has no direction"):
        view.values(neuron="direction")


def test_direction_can_be_set_and_cleared(gpt2_bridge: Any) -> None:
    view = mw.ActivationView(gpt2_bridge, PROMPTS[0], hook="resid_pre")
    assert not view.has_direction and view.direction is None and view.selected["neuron"] == 0
    revision = view.revision
    view.direction = [1.0] * 64
    assert view.has_direction and view.revision == revision + 1 and view.direction.dtype == torch.float32
    view.selected = {"neuron": None}
    assert torch.allclose(view.values()[0], view.activations[0][0].sum(-1), atol=1e-4)
    with pytest.raises(ValueError, match=r"shape \[64\]"):
        view.direction = torch.ones(3)
    view.direction = None
    assert not view.has_direction and view.selected["neuron"] == 0 and view.revision == revision + 2


# ----- requests ---------------------------------------------------------------------------------


def test_values_request_sends_float16_with_offsets_and_range(
    gpt2_bridge: Any, capture: Callable[[Any], Any], ask: Callable[..., str]
) -> None:
    direction = torch.randn(256, generator=torch.Generator().manual_seed(2))
    view = mw.ActivationView(gpt2_bridge, PROMPTS, direction=direction)
    sent = capture(view)
    rid = ask(view, "values", {"layer": 1, "neuron": 12})
    sent.wait(rid)
    content, buffers = sent.reply(rid)
    result = content["result"]
    assert content["ok"] and (result["layer"], result["neuron"], result["revision"]) == (1, 12, view.revision)
    assert result["values"]["dtype"] == "float16" and result["offsets"]["dtype"] == "int32"
    offsets = decode_array(result["offsets"], buffers)
    assert offsets.tolist() == [0, *np.cumsum([len(t) for t in view.tokens]).tolist()]
    flat = torch.tensor(decode_array(result["values"], buffers), dtype=torch.float32)
    expected = view.values(layer=1, neuron=12)
    assert torch.allclose(flat, torch.cat(expected), atol=2e-3, rtol=1e-3)
    assert result["range"] == pytest.approx(float(torch.cat(expected).abs().max()))

    rid = ask(view, "values", {"layer": 0, "neuron": None})  # the direction
    sent.wait(rid)
    content, buffers = sent.reply(rid)
    expected = torch.cat(view.values(layer=0, neuron="direction"))
    flat = torch.tensor(decode_array(content["result"]["values"], buffers), dtype=torch.float32)
    assert content["result"]["neuron"] is None and torch.allclose(flat, expected, rtol=2e-3, atol=2e-3)

    big = mw.ActivationView(gpt2_bridge, PROMPTS[0], direction=direction * 1e6)  # dot products beyond float16
    sent_big = capture(big)
    rid = ask(big, "values", {"layer": 0, "neuron": None})
    sent_big.wait(rid)
    content, buffers = sent_big.reply(rid)
    assert content["result"]["values"]["dtype"] == "float32"
    assert np.isfinite(decode_array(content["result"]["values"], buffers)).all()


def test_top_request_and_request_errors(
    gpt2_bridge: Any, capture: Callable[[Any], Any], ask: Callable[..., str]
) -> None:
    view = mw.ActivationView(gpt2_bridge, PROMPTS)
    sent = capture(view)
    rid = ask(view, "top", {"prompt_index": 1, "position": 3, "layer": 1, "k": 10})
    sent.wait(rid)
    content, buffers = sent.reply(rid)
    result = content["result"]
    assert content["ok"] and (result["prompt_index"], result["position"], result["layer"]) == (1, 3, 1)
    assert result["indices"]["dtype"] == "int32" and result["values"]["dtype"] == "float16"
    top = view.top_neurons(1, 3, k=10, layer=1)
    assert decode_array(result["indices"], buffers).tolist() == [n for n, _ in top]
    assert np.allclose(decode_array(result["values"], buffers), [v for _, v in top], rtol=1e-3, atol=1e-3)

    for method, params, message in [
        ("values", {"layer": 0, "neuron": 256}, r"neuron must be in 0\.\.255"),
        ("values", {"layer": 3, "neuron": 0}, r"layer must be in 0\.\.1"),
        ("values", {"layer": 0, "neuron": None}, "has no direction"),
        ("values", {"layer": "0", "neuron": 1}, "'layer' must be an integer"),
        ("top", {"prompt_index": 5, "position": 0, "layer": 0, "k": 10}, r"prompt must be in 0\.\.2"),
        (
            "top",
            {"prompt_index": 0, "position": 99, "layer": 0, "k": 10},
            rf"position must be in 0\.\.{len(view.tokens[0]) - 1}",
        ),
        ("top", {"prompt_index": 0, "position": 0, "layer": 0, "k": 0}, r"k must be in 1\.\.100"),
    ]:
        rid = ask(view, method, params)
        sent.wait(rid)
        content, _ = sent.reply(rid)
        assert not content["ok"], (method, params)
        assert re.search(message, content["error"]["message"]), content["error"]["message"]


def test_code_2l_on_held_out_stdlib_sources(capture: Callable[[Any], Any], ask: Callable[..., str]) -> None:
    from mi_widgets.zoo.code_2l import stdlib_texts

    model = mw.zoo.load("code-2l")
    texts = stdlib_texts("heldout", max_files=3)
    prompts = [model.to_tokens(text, truncate=False)[0, :n] for text, n in zip(texts, (256, 120, 60))]  # full n_ctx too
    view = mw.ActivationView(model, prompts, hook="mlp.post", neuron=100)
    assert view.layers == [0, 1] and view.d == 512 and [len(t) for t in view.tokens] == [256, 120, 60]
    names = ["blocks.0.mlp.hook_post", "blocks.1.mlp.hook_post"]
    neuron_100 = []
    for i, tokens in enumerate(prompts):
        cache = _cache(model, tokens[None], names)
        assert torch.allclose(view.activations[i], torch.stack([cache[n][0] for n in names]), atol=1e-5)
        assert view.top_neurons(i, 10, k=5, layer=1)[0][0] == int(cache[names[1]][0, 10].argmax())
        neuron_100.append(cache[names[1]][0, :, 100])
        assert torch.allclose(view.values(layer=1)[i], neuron_100[-1], atol=1e-5)
    expected = torch.cat(neuron_100)
    sent = capture(view)
    rid = ask(view, "values", {"layer": 1, "neuron": 100})
    sent.wait(rid)
    content, buffers = sent.reply(rid)
    assert content["result"]["range"] == pytest.approx(float(expected.abs().max()))
    assert torch.allclose(
        torch.tensor(decode_array(content["result"]["values"], buffers), dtype=torch.float32), expected, atol=5e-3
    )
    with pytest.raises(
        ValueError, match=r"prompt 1: prompt is 257 tokens long but the model's context \(n_ctx\) is 256"
    ):
        mw.ActivationView(model, [texts[0][:50], model.to_tokens(texts[0], truncate=False)[0, :257]])
