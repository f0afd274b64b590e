"""LogitAttribution: exact parts, per-head values against TransformerLens, the model left alone, bad input."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import traitlets

import mi_widgets as mw
from mi_widgets.transport.codec import decode_array

PROMPT = "When Mary and John went to the store, John gave a drink to"
IOI = dict(answer=" Mary", wrong=" John")
INDUCTION_PROMPT = "The cat sat on the mat. The cat sat on the"


def load_gpt2(folder: Path) -> Any:
    from transformer_lens import TransformerBridge

    return TransformerBridge.boot_transformers(str(folder), device="cpu")


@pytest.fixture(scope="module")
def perturbed_folder(tmp_path_factory: pytest.TempPathFactory, tokenizer: Any, vocab_size: int) -> Path:
    """A random GPT-2 whose norms and biases are not the identity and zero, so every term is exercised."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(1)
    hf = GPT2LMHeadModel(GPT2Config(n_layer=2, n_head=4, n_embd=64, n_positions=128, vocab_size=vocab_size))
    with torch.no_grad():
        for name, p in hf.named_parameters():
            if "ln" in name and name.endswith("weight"):
                p.copy_(1 + 0.3 * torch.randn_like(p))
            elif name.endswith("bias"):
                p.copy_(0.2 * torch.randn_like(p))
    folder = tmp_path_factory.mktemp("gpt2-perturbed")
    hf.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def perturbed(perturbed_folder: Path) -> Any:
    return load_gpt2(perturbed_folder)


def zoo_models() -> list[str]:
    """code-2l (MLPs, trained) once it is bundled, and induction-2l (attention-only)."""
    return [name for name in ("code-2l", "induction-2l") if name in mw.zoo.available()]


def real_logit_diff(model: Any, prompt: Any, answer: int, wrong: int, position: int = -1) -> float:
    logits = model(prompt)[0, position].detach()
    return float(logits[answer] - logits[wrong])


def independent_parts(model: Any, prompt: Any, answer: int, wrong: int, position: int) -> dict[str, torch.Tensor]:
    """The same attribution from ``run_with_cache``: TL's per-head results and cached final LN scale, by hand."""
    _, cache = model.run_with_cache(prompt)
    d = model.W_U[:, answer] - model.W_U[:, wrong]

    def dla(stack: torch.Tensor) -> torch.Tensor:  # [n, batch, d_model] at the position
        normed = cache.apply_ln_to_stack(stack, layer=-1, pos_slice=position)  # centred, / cached ln_final scale
        return ((normed * model.ln_final.w) @ d)[:, 0].detach()

    L = model.cfg.n_layers
    heads = dla(cache.stack_head_results(layer=-1, pos_slice=position)).reshape(L, model.cfg.n_heads)
    mlps = dla(torch.stack([cache[f"blocks.{l}.hook_mlp_out"][:, position] for l in range(L)]))
    embed = dla(cache["hook_embed"][None, :, position])
    return {"heads": heads, "mlps": mlps, "embed": embed, "ln_bias": (model.ln_final.b @ d).detach()}


# ----- the maths ------------------------------------------------------------------------------


@pytest.mark.parametrize("which", ["gpt2_bridge", "perturbed"])
def test_parts_sum_exactly_and_match_an_independent_computation(which: str, request: pytest.FixtureRequest) -> None:
    model = request.getfixturevalue(which)
    for position in (-1, 6):
        attr = mw.LogitAttribution(model, PROMPT, position=position, **IOI)
        real = real_logit_diff(model, PROMPT, attr.answer_id, attr.wrong_id, position)
        assert attr.total == pytest.approx(real, abs=1e-5)
        assert sum(attr.parts.values()) == pytest.approx(real, abs=1e-4)
        ref = independent_parts(model, PROMPT, attr.answer_id, attr.wrong_id, position)
        assert torch.allclose(attr.heads, ref["heads"], atol=1e-5)
        assert torch.allclose(attr.mlps, ref["mlps"], atol=1e-5)
        assert attr.parts["embed"] == pytest.approx(float(ref["embed"][0]), abs=1e-5)
        assert attr.parts["ln_final bias"] == pytest.approx(float(ref["ln_bias"]), abs=1e-6)
        b_o = torch.tensor([attr.parts[f"L{l} b_O"] for l in range(2)])
        assert torch.allclose(attr.attn, attr.heads.sum(-1) + b_o, atol=1e-6)
        assert set(attr.parts) >= {"embed", "pos_embed", "L0H0", "L1H3", "L0 b_O", "L1 mlp", "ln_final bias", "b_U"}
    if which == "perturbed":  # non-trivial norm and biases: every bias term is really there
        assert abs(attr.parts["ln_final bias"]) > 1e-3 and abs(attr.parts["L0 b_O"]) > 1e-3


def test_heads_equal_transformer_lens_logit_attrs_on_a_compatibility_mode_copy(
    perturbed_folder: Path, perturbed: Any
) -> None:
    """TL's own DLA needs folded, centred weights: on such a copy (ours, built from the same files) the
    per-head numbers agree exactly; on the unfolded model the totals agree and the split moves (b_V, biases)."""
    copy = load_gpt2(perturbed_folder)
    copy.enable_compatibility_mode()
    attr_copy = mw.LogitAttribution(copy, PROMPT, **IOI)
    _, cache = copy.run_with_cache(PROMPT)
    stack = cache.stack_head_results(layer=-1, pos_slice=-1)
    answer, wrong = torch.tensor([attr_copy.answer_id]), torch.tensor([attr_copy.wrong_id])
    tl = cache.logit_attrs(stack, tokens=answer, incorrect_tokens=wrong, pos_slice=-1).detach().reshape(2, 4)
    assert torch.allclose(attr_copy.heads, tl, atol=1e-6)
    attr = mw.LogitAttribution(perturbed, PROMPT, **IOI)
    assert attr.total == pytest.approx(attr_copy.total, abs=1e-5)
    assert sum(attr.parts.values()) == pytest.approx(sum(attr_copy.parts.values()), abs=1e-4)
    assert not torch.allclose(attr.heads, attr_copy.heads, atol=1e-3)


@pytest.mark.parametrize("name", zoo_models())
def test_zoo_models_sum_exactly(name: str) -> None:
    model = mw.zoo.load(name)
    answer, wrong = (" -", " +") if name == "code-2l" else (" mat", " sat")
    prompt = (
        "def add(a, b):\n    return a + b\n\ndef sub(a, b):\n    return a" if name == "code-2l" else INDUCTION_PROMPT
    )
    attr = mw.LogitAttribution(model, prompt, answer, wrong)
    assert sum(attr.parts.values()) == pytest.approx(
        real_logit_diff(model, prompt, attr.answer_id, attr.wrong_id), abs=1e-4
    )
    assert attr.has_mlp == (not model.cfg.attn_only)
    if model.cfg.attn_only:
        assert torch.count_nonzero(attr.mlps) == 0 and not any("mlp" in k for k in attr.parts)
    # learned positions get their own term; with rotary ones everything entering block 0 is "embed"
    assert ("pos_embed" in attr.parts) == ("hook_pos_embed" in model.hook_dict)


def test_the_model_is_left_as_it_was(perturbed: Any) -> None:
    before = {k: v.clone() for k, v in perturbed.state_dict().items()}
    hooks_before = sum(len(h.fwd_hooks) for h in perturbed.hook_dict.values() if hasattr(h, "fwd_hooks"))
    mw.LogitAttribution(perturbed, PROMPT, **IOI)
    after = perturbed.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert sum(len(h.fwd_hooks) for h in perturbed.hook_dict.values() if hasattr(h, "fwd_hooks")) == hooks_before
    assert perturbed.cfg.normalization_type == "LN"  # not folded into LNPre by a compatibility mode


# ----- bad input ------------------------------------------------------------------------------


def test_bad_input(gpt2_bridge: Any, native_model_no_tokenizer: Any) -> None:
    pieces = gpt2_bridge.to_str_tokens(gpt2_bridge.to_tokens(" Marylebone", prepend_bos=False)[0])
    with pytest.raises(ValueError, match=rf"answer ' Marylebone' tokenizes to {len(pieces)} tokens \[' Mary'"):
        mw.LogitAttribution(gpt2_bridge, PROMPT, " Marylebone", " John")
    with pytest.raises(ValueError, match=r"wrong ' John went' tokenizes to 3 tokens \[' John', ' w', 'ent'\]"):
        mw.LogitAttribution(gpt2_bridge, PROMPT, " Mary", " John went")
    with pytest.raises(ValueError, match="same token"):
        mw.LogitAttribution(gpt2_bridge, PROMPT, " Mary", int(gpt2_bridge.to_tokens(" Mary", prepend_bos=False)[0, 0]))
    with pytest.raises(IndexError, match=r"position must be in -\d+..\d+ for this \d+-token prompt, got 99"):
        mw.LogitAttribution(gpt2_bridge, PROMPT, " Mary", " John", position=99)
    with pytest.raises(ValueError, match="n_ctx"):
        mw.LogitAttribution(gpt2_bridge, PROMPT * 20, " Mary", " John")
    with pytest.raises(ValueError, match="token id must be in 0..349"):
        mw.LogitAttribution(gpt2_bridge, PROMPT, 1000, " John")
    with pytest.raises(ValueError, match="no tokenizer, so answer ' Mary' cannot"):
        mw.LogitAttribution(native_model_no_tokenizer, torch.arange(1, 9), " Mary", 3)
    attr = mw.LogitAttribution(native_model_no_tokenizer, torch.arange(1, 9), 5, 3, position=2)
    assert (attr.answer_token, attr.wrong_token, attr.position) == ("<5>", "<3>", 2)
    assert sum(attr.parts.values()) == pytest.approx(
        real_logit_diff(native_model_no_tokenizer, torch.arange(1, 9)[None], 5, 3, 2), abs=1e-4
    )


# ----- the widget -----------------------------------------------------------------------------


def test_attribution_request_sends_float32_arrays(
    perturbed: Any, capture: Callable[[Any], Any], ask: Callable[..., str]
) -> None:
    attr = mw.LogitAttribution(perturbed, PROMPT, **IOI)
    sent = capture(attr)
    rid = ask(attr, "attribution")
    sent.wait(rid, 10)
    content, buffers = sent.reply(rid)
    assert content["ok"], content
    r = content["result"]
    assert (r["n_layers"], r["n_heads"], r["has_mlp"], r["revision"]) == (2, 4, True, attr.revision)
    assert r["total"] == pytest.approx(attr.total)
    assert r["softcap"] is None and r["output_total"] == pytest.approx(attr.total, abs=1e-5)  # no soft cap: one total
    for name, expected in [("heads", attr.heads), ("attn", attr.attn), ("mlps", attr.mlps)]:
        assert r[name]["dtype"] == "float32"
        assert np.allclose(decode_array(r[name], buffers), expected.numpy(), atol=1e-7)
    terms = dict(zip(r["terms"], decode_array(r["term_values"], buffers).tolist()))
    assert list(terms) == ["embed", "pos_embed", "attention biases (b_O)", "ln_final bias", "b_U"]
    assert terms["attention biases (b_O)"] == pytest.approx(attr.parts["L0 b_O"] + attr.parts["L1 b_O"], abs=1e-6)
    assert float(decode_array(r["heads"], buffers).sum() + decode_array(r["mlps"], buffers).sum()) + sum(
        v for k, v in terms.items() if k != "attention biases (b_O)"
    ) + terms["attention biases (b_O)"] == pytest.approx(attr.total, abs=1e-4)


def test_selection_forms(gpt2_bridge: Any) -> None:
    attr = mw.LogitAttribution(gpt2_bridge, PROMPT, **IOI)
    assert attr.selected == {"layer": None, "head": None, "component": None}
    attr.selected = {"layer": 1, "head": 2}
    assert attr.selected == {"layer": 1, "head": 2, "component": "head"}
    attr.selected = {"layer": 0, "component": "mlp"}
    assert attr.selected == {"layer": 0, "head": None, "component": "mlp"}
    for bad, message in [
        ({"layer": 2, "head": 0}, "layer must be in 0..1"),
        ({"layer": 0, "head": 4}, "head must be in 0..3"),
        ({"layer": 0, "component": "attn", "head": 1}, "whole layer"),
        ({"layer": 0, "component": "ln"}, "selected is"),
        ({"head": 1}, "selected is"),
        ({"neuron": 1}, "unknown"),
    ]:
        with pytest.raises(traitlets.TraitError, match=message):
            attr.selected = bad
    assert attr.selected == {"layer": 0, "head": None, "component": "mlp"}
    attr.selected = {}
    assert attr.selected == {"layer": None, "head": None, "component": None}


def test_attention_only_models_have_no_mlp_to_select() -> None:
    model = mw.zoo.load("induction-2l")
    attr = mw.LogitAttribution(model, INDUCTION_PROMPT, " mat", " sat")
    assert not attr.has_mlp
    with pytest.raises(traitlets.TraitError, match="attention-only"):
        attr.selected = {"layer": 0, "component": "mlp"}
    attr.selected = {"layer": 1, "component": "attn"}
    assert attr.selected == {"layer": 1, "head": None, "component": "attn"}


class _Disguised(torch.nn.Module):
    """The same model behind a different config, or with an attribute hidden: layouts this attribution cannot read.

    A torch module that holds the model, so the adapter's analysis twin (a copy sharing the weights) can be made of it.
    """

    def __init__(self, model: Any, hide: tuple[str, ...] = (), **cfg: Any) -> None:
        import copy

        super().__init__()
        self.inner = model
        self.__dict__["_hide"] = hide
        self.__dict__["cfg"] = copy.copy(model.cfg)
        for name, value in cfg.items():
            setattr(self.cfg, name, value)

    def __getattr__(self, name: str) -> Any:
        if (
            name.startswith("__")
            or name in ("_hide", "_modules", "_parameters", "_buffers")
            or name in self.__dict__.get("_hide", ())
        ):
            raise AttributeError(name)
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self._modules["inner"], name)


def test_layouts_it_cannot_read_raise_clear_errors(perturbed: Any) -> None:
    with pytest.raises(RuntimeError, match="final norm read as RMS .* does not reproduce the model's ln_final"):
        mw.LogitAttribution(_Disguised(perturbed, normalization_type="RMS"), PROMPT, **IOI)
    with pytest.raises(ValueError, match="cannot attribute through a final norm of type 'BatchNorm'"):
        mw.LogitAttribution(_Disguised(perturbed, normalization_type="BatchNorm"), PROMPT, **IOI)
    with pytest.raises(ValueError, match=r"cannot read the unembedding W_U \[d_model, d_vocab\]"):
        mw.LogitAttribution(_Disguised(perturbed, hide=("W_U",)), PROMPT, **IOI)
    with pytest.raises(ValueError, match="cannot read the attention output weights W_O"):
        mw.LogitAttribution(_Disguised(perturbed, hide=("W_O", "blocks")), PROMPT, **IOI)
    # a wrong eps is caught by the same self-check, so a silently wrong split cannot happen
    with pytest.raises(RuntimeError, match="does not reproduce"):
        mw.LogitAttribution(_Disguised(perturbed, eps=1.0), PROMPT, **IOI)
