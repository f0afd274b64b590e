"""Run inside a TransformerLens 2.x environment (``.venv-tl2``, made by ``.ci/setup-tl2``).

AttentionView, HeadScan, CompositionView, Patching, FourierView and others promise to work on TL 2.x ``HookedTransformer`` by duck typing; TL 2 and TL 4
cannot share one environment (transformers 4 vs 5), so this script is run by
``tests/test_tl2_compat.py`` with the other interpreter and prints ``TL2 OK`` at the end.
"""

from __future__ import annotations

import numpy as np
import torch
import transformer_lens
from transformer_lens import HookedTransformer, HookedTransformerConfig

import mi_widgets as mw
from mi_widgets.transport.codec import decode_array

assert not hasattr(transformer_lens, "TransformerBridge"), "this check must run under TransformerLens 2.x"

cfg = HookedTransformerConfig(
    d_model=64, d_head=16, n_heads=4, n_layers=2, n_ctx=64, d_vocab=300, attn_only=True, act_fn=None, seed=0
)
model = HookedTransformer(cfg)  # no tokenizer: token ids in, <id> labels out
tokens = torch.arange(1, 12)

view = mw.AttentionView(model, tokens, layer=1, head=2)
_, cache = model.run_with_cache(tokens[None], names_filter=lambda name: name.endswith("hook_pattern"))
expected = torch.stack([cache["pattern", layer][0] for layer in range(cfg.n_layers)])
assert torch.allclose(view.patterns, expected), "AttentionView patterns differ from TL 2.x run_with_cache"
assert view.tokens == [f"<{i}>" for i in range(1, 12)], view.tokens

sent: list[tuple[dict, list]] = []
view.send = lambda content, buffers=None: sent.append((content, buffers or []))
view._handle_custom_msg({"type": "request", "id": 1, "method": "pattern", "params": {"layer": 1, "head": 2}}, [])
content, buffers = sent[-1]
assert content["ok"], content
served = decode_array(content["result"]["pattern"], buffers)
assert np.allclose(served, expected[1, 2].numpy(), atol=1e-3), "served pattern differs"

from_cache = mw.AttentionView.from_cache(cache, [str(i) for i in range(11)])
assert (from_cache.n_layers, from_cache.n_heads) == (2, 4)

try:
    mw.AttentionView(model, "a text prompt")
except ValueError as exc:
    assert "no tokenizer" in str(exc), exc
else:
    raise AssertionError("a text prompt on a model without tokenizer must raise")

scan = mw.HeadScan(model, n_batches=2, batch_size=4).wait(60)
assert scan.status == "done", (scan.status, scan.error)
assert scan.scores["induction"].shape == (2, 4) and torch.isfinite(scan.scores["induction"]).all()

comp = mw.CompositionView(model)
processed = HookedTransformer(cfg)  # the same weights as from_pretrained loads them: LN folded, W_O centred
processed.load_state_dict(model.state_dict())
processed.process_weights_(fold_ln=True, center_writing_weights=True, center_unembed=True)
for mode in "QKV":
    assert torch.allclose(comp.scores(mode), processed.all_composition_scores(mode).detach(), atol=1e-6), mode
    assert torch.allclose(mw.CompositionView(processed).scores(mode), comp.scores(mode), atol=1e-6), mode
assert comp.top("K", k=1)[0][0] == 0

# ActivationView: a TL2 model with MLPs (no tokenizer), ragged token-id prompts, neuron and direction values
mlp_model = HookedTransformer(
    HookedTransformerConfig(
        d_model=64,
        d_head=16,
        n_heads=4,
        n_layers=2,
        n_ctx=64,
        d_vocab=300,
        d_mlp=128,
        act_fn="gelu",
        attn_only=False,
        seed=0,
    )
)
act_prompts = [torch.arange(1, 9), torch.arange(20, 25)]
act = mw.ActivationView(mlp_model, act_prompts, hook="mlp.post", layer=1, neuron=7)
for i, ids in enumerate(act_prompts):
    _, act_cache = mlp_model.run_with_cache(ids[None], names_filter=lambda name: name.endswith("mlp.hook_post"))
    expected_acts = torch.stack([act_cache[f"blocks.{l}.mlp.hook_post"][0] for l in range(2)])
    assert torch.allclose(act.activations[i], expected_acts, atol=1e-5), (
        "ActivationView differs from TL 2.x run_with_cache"
    )
    assert torch.allclose(act.values()[i], expected_acts[1, :, 7], atol=1e-5)
assert act.tokens[1] == [f"<{i}>" for i in range(20, 25)] and act.d == 128
probe = torch.randn(64)
resid = mw.ActivationView(mlp_model, act_prompts[0], hook="blocks.0.hook_resid_post", direction=probe)
_, act_cache = mlp_model.run_with_cache(act_prompts[0][None], names_filter="blocks.0.hook_resid_post")
assert torch.allclose(resid.values()[0], act_cache["blocks.0.hook_resid_post"][0] @ probe, atol=1e-4)
act.send = lambda content, buffers=None: sent.append((content, buffers or []))
act._handle_custom_msg(
    {"type": "request", "id": 2, "method": "top", "params": {"prompt_index": 0, "position": 3, "layer": 1, "k": 5}}, []
)
assert sent[-1][0]["ok"], sent[-1][0]
assert decode_array(sent[-1][0]["result"]["indices"], sent[-1][1]).tolist() == [
    n for n, _ in act.top_neurons(0, 3, k=5, layer=1)
]

# TopExamples: a TL2 model with MLPs (no tokenizer), a token-id corpus, against run_with_cache over all of it
tx_model = HookedTransformer(
    HookedTransformerConfig(
        d_model=32,
        d_head=8,
        n_heads=4,
        n_layers=2,
        n_ctx=32,
        d_vocab=300,
        d_mlp=64,
        act_fn="gelu",
        attn_only=False,
        seed=1,
    )
)
tx_corpus = torch.randint(1, 300, (5, 20), generator=torch.Generator().manual_seed(0))
tx = mw.TopExamples(tx_model, tx_corpus, hook="mlp.post", layer=1, neurons=range(16), k=3, batch_size=2).wait(60)
assert tx.status == "done" and tx.hook == "blocks.1.mlp.hook_post", (tx.status, tx.error)
_, tx_cache = tx_model.run_with_cache(tx_corpus, names_filter="blocks.1.mlp.hook_post")
tx_top = tx_cache["blocks.1.mlp.hook_post"][:, :, :16].reshape(-1, 16).topk(3, dim=0).values.T
assert torch.allclose(tx.maxima, tx_top[:, 0], atol=1e-5), "TopExamples differs from TL 2.x run_with_cache"
tx_best = tx.examples[4]
assert np.allclose([e.value for e in tx_best], tx_top[4].tolist(), atol=1e-5)
assert tx_best[0].tokens[tx_best[0].max_index] == f"<{int(tx_corpus[tx_best[0].window, tx_best[0].position])}>"
assert abs(float(tx_best[0].activations[tx_best[0].max_index]) - tx_best[0].value) < 1e-4

# --- LogitLens and LogitAttribution on a TL 2.x model with MLPs and a non-trivial final LayerNorm
ids = torch.arange(1, 12)
mlp_cfg = HookedTransformerConfig(
    d_model=64,
    d_head=16,
    n_heads=4,
    n_layers=2,
    n_ctx=64,
    d_vocab=300,
    d_mlp=128,
    act_fn="gelu",
    attn_only=False,
    seed=0,
)
mlp_model = HookedTransformer(mlp_cfg)
with torch.no_grad():
    for name, p in mlp_model.named_parameters():
        if name.endswith(".w") and "ln" in name:
            p.add_(0.3 * torch.randn_like(p))
        elif name.split(".")[-1].startswith("b"):  # every bias: b, b_O, b_V, b_in, b_U, ...
            p.add_(0.2 * torch.randn_like(p))
real = mlp_model(ids[None])[0].detach()
lens = mw.LogitLens(mlp_model, ids, target=7, k=3)
assert torch.allclose(lens.top_probs[-1], real.softmax(-1).topk(3).values, atol=1e-6), (
    "LogitLens last row != model output"
)
assert torch.allclose(lens.target_probs[-1], real.softmax(-1)[:, 7], atol=1e-7, rtol=1e-5)
_, mlp_cache = mlp_model.run_with_cache(ids[None])
lens_probs = lambda normed: (normed @ mlp_model.W_U + mlp_model.b_U).softmax(-1).max(-1).values.detach()  # noqa: E731
recomputed = lens_probs(mlp_cache.accumulated_resid(apply_ln=True)[:, 0])  # the final LN applied per layer
assert torch.allclose(lens.top_probs[..., 0], recomputed, atol=1e-5), "LogitLens differs from TL 2.x accumulated_resid"
cached = mlp_cache.apply_ln_to_stack(mlp_cache.accumulated_resid(), recompute_ln=False)[:, 0]  # the final layer's scale
old_reading = lens_probs(cached * mlp_model.ln_final.w + mlp_model.ln_final.b)
assert torch.allclose(lens.top_probs[-1, :, 0], old_reading[-1], atol=1e-5)
assert not torch.allclose(lens.top_probs[0, :, 0], old_reading[0], atol=1e-3), "the cached-scale reading differs early"
attr = mw.LogitAttribution(mlp_model, ids, 5, 9, position=-2)
assert abs(sum(attr.parts.values()) - float(real[-2, 5] - real[-2, 9])) < 1e-4, (
    sum(attr.parts.values()),
    real[-2, 5] - real[-2, 9],
)
assert attr.heads.shape == (2, 4) and attr.mlps.shape == (2,) and abs(attr.parts["ln_final bias"]) > 1e-4
d = mlp_model.W_U[:, 5] - mlp_model.W_U[:, 9]
stack = mlp_cache.stack_head_results(layer=-1, pos_slice=-2)
by_hand = ((mlp_cache.apply_ln_to_stack(stack, layer=-1, pos_slice=-2) * mlp_model.ln_final.w) @ d)[:, 0]
assert torch.allclose(attr.heads.flatten(), by_hand.detach(), atol=1e-5), "LogitAttribution heads differ from TL 2.x"
try:
    mw.LogitAttribution(mlp_model, ids, "text", 9)
except ValueError as exc:
    assert "no tokenizer" in str(exc), exc
else:
    raise AssertionError("a text answer on a model without tokenizer must raise")

# Patching and PathPatching: equal to TL 2.x's own patching functions on a HookedTransformer
import transformer_lens.patching as tl_patching  # noqa: E402

gen = torch.Generator().manual_seed(0)
clean_ids = torch.randint(1, 300, (3, 9), generator=gen)
corrupted_ids = clean_ids.clone()
corrupted_ids[:, 3] = torch.randint(1, 300, (3,), generator=gen)
patch_metric = mw.logit_diff(torch.tensor([5, 6, 7]), torch.tensor([8, 9, 10]))
patch = mw.Patching(model, clean_ids, corrupted_ids, patch_metric, components=["resid_pre", "head_out", "pattern"])
assert patch.wait(60).status == "done", (patch.status, patch.error)
model.eval()
with torch.no_grad():
    _, clean_cache = model.run_with_cache(clean_ids)
    for name, fn in [
        ("resid_pre", tl_patching.get_act_patch_resid_pre),
        ("head_out", tl_patching.get_act_patch_attn_head_out_all_pos),
        ("pattern", tl_patching.get_act_patch_attn_head_pattern_all_pos),
    ]:
        theirs = fn(model, corrupted_ids, clean_cache, patch_metric)
        assert torch.allclose(patch.raw[name], theirs.float(), atol=2e-5), (name, patch.raw[name], theirs)
attr = mw.Patching(model, clean_ids, corrupted_ids, patch_metric, components=["head_out"], method="attribution")
assert attr.wait(60).status == "done" and attr.agreement("head_out")["correlation"] is not None, attr.error
path = mw.PathPatching(model, clean=clean_ids, corrupted=corrupted_ids, metric=patch_metric, receivers=[(1, 0, "v")])
assert path.wait(60).status == "done" and torch.isfinite(path.results["path"][0]).all(), path.error

# FourierView on a TL 2.x modular-addition model of the paper's shape (d_vocab p+1, d_vocab_out p, no LayerNorm)
P = 13
modadd_model = HookedTransformer(
    HookedTransformerConfig(
        d_model=32,
        d_head=8,
        n_heads=4,
        n_layers=1,
        n_ctx=3,
        d_vocab=P + 1,
        d_vocab_out=P,
        d_mlp=64,
        act_fn="relu",
        normalization_type=None,
        seed=0,
    )
)
fourier_view = mw.FourierView(modadd_model)
pairs = torch.stack([torch.arange(P).repeat_interleave(P), torch.arange(P).repeat(P), torch.full((P * P,), P)], dim=1)
with torch.no_grad():
    ref_logits, modadd_cache = modadd_model.run_with_cache(pairs)
assert torch.allclose(fourier_view.logits, ref_logits[:, -1], atol=1e-5), "FourierView logits differ from TL 2.x"
assert torch.allclose(fourier_view.run.neurons, modadd_cache["post", 0][:, -1], atol=1e-5)
assert torch.allclose(fourier_view.run.attention, modadd_cache["pattern", 0][:, :, -1, 0], atol=1e-6)
assert fourier_view.p == P and fourier_view.n_neurons == 64

print(f"TL2 OK (transformer_lens 2.x, {len(sent)} reply)")
