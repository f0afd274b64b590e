"""The nnsight backend: views on ``nnsight.LanguageModel``s of random-weight HF models, checked against the HF
model's own outputs (``output_attentions``, ``output_hidden_states``, logits), and the refusals.

Offline: GPT-2, Llama with grouped-query attention (2 KV heads for 4 query heads), GPT-NeoX (parallel residual),
Gemma 2 (scaled embeddings, extra norms, soft caps, sliding window), OPT, Phi (parallel) and Phi-3 (fused gate/up),
built from configs by ``tests/hf_tiny.py`` (as ``tests/test_architectures.py`` builds them), eager attention;
post-LN OPT (OPT-350m) is refused, a pre-LN OPT with ``project_in``/``project_out`` is read exactly. The remote path (``NNsightAdapter(lm, remote=True)``) cannot
reach a hosted engine here: a test checks that the flag reaches ``trace(..., remote=True)`` and that the
path it takes (activations saved in the trace, read after it) gives the local numbers.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import pytest
import torch

import mi_widgets as mw
from mi_widgets.capture import ModelAdapter, NNsightAdapter, adapter_for
from mi_widgets.capture.nnsight_adapter import BackendUnsupported

from .hf_tiny import FAMILIES, GEMMA2_SOFTCAP, tiny_model

nnsight = pytest.importorskip("nnsight")

PROMPT = "When Mary and John went to the store, John gave a drink to"


PARALLEL = {"neox", "phi"}  # attention and MLP both read the block's input: no hook_resid_mid


def _hf(name: str, vocab: int, bos: int, attn: str = "eager") -> Any:
    """``tests/hf_tiny.py``'s model, with eager attention unless asked (the views read patterns from it)."""
    return tiny_model(name, vocab, bos, attn)


def _blocks(hf: Any) -> Any:
    for path in ("transformer.h", "gpt_neox.layers", "model.decoder.layers", "model.layers"):
        module = hf
        try:
            for part in path.split("."):
                module = getattr(module, part)
        except AttributeError:
            continue
        return module
    raise AssertionError(f"no decoder layers in {type(hf).__name__}")


def _out_proj(block: Any) -> Any:
    """The attention output projection: its input is the heads' outputs side by side."""
    for attn, proj in (("attn", "c_proj"), ("attention", "dense"), ("self_attn", "out_proj"), ("self_attn", "dense"),
                       ("self_attn", "o_proj")):  # fmt: skip
        module = getattr(getattr(block, attn, None), proj, None)
        if module is not None:
            return module
    raise AssertionError(f"no attention output projection in {type(block).__name__}")


def _readout(hf: Any, resid: torch.Tensor) -> torch.Tensor:
    """The HF model's own final norm, (project_out,) head and (Gemma 2's) final soft cap, by hand."""
    kind = hf.config.model_type
    with torch.no_grad():
        if kind == "gpt2":
            x = hf.transformer.ln_f(resid)
        elif kind == "gpt_neox":
            x = hf.gpt_neox.final_layer_norm(resid)
        elif kind == "opt":
            x = hf.model.decoder.final_layer_norm(resid)
            if hf.model.decoder.project_out is not None:
                x = hf.model.decoder.project_out(x)
        elif kind == "phi":
            x = hf.model.final_layernorm(resid)
        else:
            x = hf.model.norm(resid)
        logits = hf.lm_head(x)
        if kind == "gemma2":
            logits = GEMMA2_SOFTCAP * torch.tanh(logits / GEMMA2_SOFTCAP)
        return logits


def _wrap(hf: Any, tokenizer: Any) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return nnsight.LanguageModel(hf, tokenizer=tokenizer)


@pytest.fixture(scope="module")
def models(tokenizer: Any) -> dict[str, tuple[Any, Any]]:
    bos = int(tokenizer.bos_token_id)
    out = {}
    for name in FAMILIES:
        hf = _hf(name, len(tokenizer), bos)
        out[name] = (_wrap(hf, tokenizer), hf)
    return out


@pytest.fixture(params=FAMILIES)
def pair(request: pytest.FixtureRequest, models: dict[str, tuple[Any, Any]]) -> tuple[Any, Any]:
    return models[request.param]


def hf_run(hf: Any, tokens: torch.Tensor) -> Any:
    """The HF model's own outputs, in eval mode (its training flag put back)."""
    was = hf.training
    hf.eval()
    try:
        with torch.no_grad():
            return hf(tokens, output_attentions=True, output_hidden_states=True)
    finally:
        hf.train(was)


def test_adapter_for_picks_the_backend(pair: tuple[Any, Any], native_model: Any) -> None:
    lm, hf = pair
    adapter = adapter_for(lm)
    assert isinstance(adapter, NNsightAdapter) and adapter.backend == "nnsight"
    assert adapter_for(adapter) is adapter
    assert isinstance(adapter_for(native_model), ModelAdapter)
    assert (adapter.n_layers, adapter.n_heads, adapter.n_ctx) == (2, 4, 128)
    assert adapter.device == torch.device("cpu") and adapter.dtype == torch.float32
    tokens = adapter.to_tokens(PROMPT)
    assert int(tokens[0, 0]) == adapter.bos_id  # BOS in front, as TransformerLens's to_tokens
    assert "".join(adapter.token_labels(tokens[0, 1:])) == PROMPT


def test_attention_patterns_are_the_models_output_attentions(pair: tuple[Any, Any]) -> None:
    lm, hf = pair
    view = mw.AttentionView(lm, PROMPT)
    tokens = adapter_for(lm).to_tokens(PROMPT)
    expected = torch.stack([a[0] for a in hf_run(hf, tokens).attentions])
    assert view.patterns.shape == expected.shape == (2, 4, tokens.shape[1], tokens.shape[1])
    torch.testing.assert_close(view.patterns, expected, atol=1e-6, rtol=1e-5)
    assert view.tokens == adapter_for(lm).token_labels(tokens[0])


def test_the_users_model_is_left_as_it_was(pair: tuple[Any, Any]) -> None:
    lm, hf = pair
    hooks = [len(m._forward_hooks) + len(m._forward_pre_hooks) for m in hf.modules()]
    mw.AttentionView(lm, PROMPT)
    mw.ActivationView(lm, PROMPT, hook="resid_post")
    assert hf.training and all(m.training for m in hf.modules())  # dropout stays on for the user, off for views
    assert hooks == [len(m._forward_hooks) + len(m._forward_pre_hooks) for m in hf.modules()]
    tokens = adapter_for(lm).to_tokens(PROMPT)
    with torch.no_grad(), lm.trace(tokens):  # the user's own traces still work
        out = lm.output.logits.save()
    assert out.shape[:2] == tokens.shape


def test_logit_lens_last_row_is_the_models_next_token_distribution(pair: tuple[Any, Any]) -> None:
    lm, hf = pair
    lens = mw.LogitLens(lm, PROMPT, target=" Mary", k=5)
    adapter = adapter_for(lm)
    tokens = adapter.to_tokens(PROMPT)
    out = hf_run(hf, tokens)
    real = out.logits[0].softmax(-1)
    values, ids = real.topk(5, dim=-1)
    torch.testing.assert_close(lens.top_probs[-1], values, atol=1e-6, rtol=1e-5)
    assert torch.equal(lens.top_ids[-1, :, 0], ids[:, 0])
    target = int(adapter.text_ids(" Mary")[0])
    torch.testing.assert_close(lens.target_probs[-1], real[:, target], atol=1e-7, rtol=1e-5)
    # every earlier row: that layer's residual stream through the model's own final norm and lm_head
    for row in range(adapter.n_layers):
        probs = _readout(hf, out.hidden_states[row][0]).softmax(-1)
        torch.testing.assert_close(lens.target_probs[row], probs[:, target], atol=1e-6, rtol=1e-5)


def test_activation_view_values_are_the_models_hidden_states(pair: tuple[Any, Any]) -> None:
    lm, hf = pair
    prompts = [PROMPT, "The cat sat on the mat."]
    view = mw.ActivationView(lm, prompts, hook="resid_pre")
    assert view.hooks == ["blocks.0.hook_resid_pre", "blocks.1.hook_resid_pre"]
    adapter = adapter_for(lm)
    for acts, prompt in zip(view.activations, prompts, strict=True):
        hidden = hf_run(hf, adapter.to_tokens(prompt)).hidden_states
        expected = torch.stack([hidden[l][0] for l in range(adapter.n_layers)])
        torch.testing.assert_close(acts, expected, atol=1e-6, rtol=1e-5)
    mlp = mw.ActivationView(lm, PROMPT, hook="mlp.post", layer=1)
    assert mlp.d == (256 if hasattr(hf, "transformer") else 128)
    if hf.config.model_type in ("gpt_neox", "phi"):  # parallel blocks: no residual stream between attention and MLP
        with pytest.raises(
            BackendUnsupported, match=r"hook_resid_mid is not defined .*(GPT-NeoX|Phi) blocks.*parallel"
        ):
            mw.ActivationView(lm, PROMPT, hook="resid_mid")
    else:
        assert mw.ActivationView(lm, PROMPT, hook="resid_mid").activations[0].shape[0] == 2


def test_head_scan_runs(pair: tuple[Any, Any]) -> None:
    lm, _ = pair
    scan = mw.HeadScan(lm, n_batches=2, batch_size=3, autostart=False)
    scan.start()
    scan.wait()
    assert scan.status == "done", scan.error
    for scores in scan.scores.values():
        assert scores.shape == (2, 4) and torch.isfinite(scores).all()
        assert float(scores.min()) >= 0 and float(scores.max()) <= 1
    scan.selected = {"score": "induction", "layer": 1, "head": 2}
    assert scan.attention.selected["head"] == 2


def _pair_prompts(vocab: int, bos: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    clean = torch.randint(1, vocab, (3, 8), generator=gen)
    clean[:, 0] = bos
    corrupted = clean.clone()
    corrupted[:, 2:4] = torch.randint(1, vocab, (3, 2), generator=gen)
    return clean, corrupted, torch.randint(1, vocab, (3,), generator=gen), torch.randint(1, vocab, (3,), generator=gen)


def _logit_diff(logits: torch.Tensor, answers: torch.Tensor, wrong: torch.Tensor) -> float:
    last = logits[:, -1]
    return float((last.gather(-1, answers[:, None]) - last.gather(-1, wrong[:, None])).mean())


def test_patching_metric_and_a_patch_equal_a_manual_computation(pair: tuple[Any, Any], tokenizer: Any) -> None:
    lm, hf = pair
    clean, corrupted, answers, wrong = _pair_prompts(len(tokenizer), int(tokenizer.bos_token_id))
    patch = mw.Patching(
        lm, clean, corrupted, mw.logit_diff(answers, wrong), components=["resid_pre", "head_out", "mlp_out"],
        autostart=False,
    )  # fmt: skip
    assert patch.clean_metric == pytest.approx(_logit_diff(hf_run(hf, clean).logits, answers, wrong), abs=1e-5)
    assert patch.corrupted_metric == pytest.approx(_logit_diff(hf_run(hf, corrupted).logits, answers, wrong), abs=1e-5)
    patch.start()
    patch.wait()
    assert patch.status == "done", patch.error
    assert patch.raw["head_out"].shape == (2, 4) and patch.raw["resid_pre"].shape == (2, 8)
    # by hand: block 1's input at position 3 from the clean run, into the corrupted run (plain torch hooks)
    block = _blocks(hf)[1]
    kept: dict[str, torch.Tensor] = {}

    def keep(module: Any, args: tuple[Any, ...]) -> None:
        kept["x"] = args[0].detach().clone()

    def put(module: Any, args: tuple[Any, ...]) -> tuple[Any, ...]:
        x = args[0].clone()
        x[:, 3] = kept["x"][:, 3]
        return (x, *args[1:])

    for fn, tokens in ((keep, clean), (put, corrupted)):
        handle = block.register_forward_pre_hook(fn)
        try:
            logits = hf_run(hf, tokens).logits
        finally:
            handle.remove()
    assert float(patch.raw["resid_pre"][1, 3]) == pytest.approx(_logit_diff(logits, answers, wrong), abs=1e-5)
    assert patch.logit_attribution is None and "nnsight" in patch.logit_attribution_error


def test_attribution_patching_runs_with_gradients(models: dict[str, tuple[Any, Any]], tokenizer: Any) -> None:
    lm, _ = models["gpt2"]
    clean, corrupted, answers, wrong = _pair_prompts(len(tokenizer), int(tokenizer.bos_token_id))
    patch = mw.Patching(
        lm, clean, corrupted, mw.logit_diff(answers, wrong), components=["resid_pre", "mlp_out"], method="attribution",
        autostart=False,
    )  # fmt: skip
    patch.start()
    patch.wait()
    assert patch.status == "done", patch.error
    assert torch.isfinite(patch.results["resid_pre"]).all()
    assert all(p.grad is None for p in lm._module.parameters())  # nothing lands in the model's .grad


# ----- bad input and refusals -------------------------------------------------------------------


def test_unknown_hook_lists_what_exists(models: dict[str, tuple[Any, Any]]) -> None:
    lm, _ = models["llama"]
    with pytest.raises(ValueError, match=r"unknown hook name 'blocks.0.hook_foo'.*nnsight.*hook_resid_post"):
        mw.ActivationView(lm, PROMPT, hook="blocks.0.hook_foo")
    with pytest.raises(ValueError, match="unknown hook 'nope'"):
        mw.ActivationView(lm, PROMPT, hook="nope")


def test_prompt_longer_than_the_context_is_refused(models: dict[str, tuple[Any, Any]]) -> None:
    lm, _ = models["gpt2"]
    with pytest.raises(ValueError, match=r"130 tokens long but the model's context \(n_ctx\) is 128"):
        mw.AttentionView(lm, list(range(130)))
    with pytest.raises(ValueError, match="token ids must be in"):
        mw.AttentionView(lm, [0, 10**6])


def test_sdpa_attention_is_refused_where_patterns_are_needed(tokenizer: Any) -> None:
    hf = _hf("llama", len(tokenizer), int(tokenizer.bos_token_id), attn="sdpa")
    lm = _wrap(hf, tokenizer)
    for make in (lambda: mw.AttentionView(lm, PROMPT), lambda: mw.HeadScan(lm, autostart=False)):
        with pytest.raises(ValueError, match=r"attn_implementation='sdpa'.*attn_implementation=\"eager\""):
            make()
    view = mw.ActivationView(lm, PROMPT, hook="resid_post")  # what needs no pattern still runs
    assert view.activations[0].shape[0] == 2


def test_views_that_read_transformer_lens_weights_are_refused_by_name(models: dict[str, tuple[Any, Any]]) -> None:
    lm, _ = models["gpt2"]
    for make, what in (
        (lambda: mw.CompositionView(lm), "CompositionView"),
        (lambda: mw.LogitAttribution(lm, PROMPT, answer=" Mary", wrong=" John"), "LogitAttribution"),
    ):
        with pytest.raises(BackendUnsupported, match=rf"{what}.*nnsight backend.*TransformerBridge"):
            make()


def test_read_only_hooks_cannot_be_patched(models: dict[str, tuple[Any, Any]], tokenizer: Any) -> None:
    lm, _ = models["gpt2"]
    clean, corrupted, answers, wrong = _pair_prompts(len(tokenizer), int(tokenizer.bos_token_id))
    with pytest.raises(BackendUnsupported, match="hook_pattern can be read but not patched"):
        mw.Patching(lm, clean, corrupted, mw.logit_diff(answers, wrong), components=["pattern"], autostart=False)
    with pytest.raises(ValueError, match="unknown hook name 'blocks.0.attn.hook_q'"):
        mw.Patching(lm, clean, corrupted, mw.logit_diff(answers, wrong), components=["q"], autostart=False)
    patch = mw.Patching(lm, clean, corrupted, mw.logit_diff(answers, wrong), autostart=False)
    assert [c["name"] for c in patch.components] == ["resid_pre", "head_out", "attn_out", "mlp_out", "head_out_pos"]


def test_an_unmapped_architecture_is_refused(tokenizer: Any) -> None:
    import transformers

    config = transformers.GPTJConfig(vocab_size=len(tokenizer), n_embd=64, n_layer=1, n_head=4, rotary_dim=8)
    lm = _wrap(transformers.GPTJForCausalLM(config), tokenizer)
    with pytest.raises(BackendUnsupported, match=r"model_type is 'gptj'.*TransformerBridge"):
        mw.AttentionView(lm, PROMPT)


def test_post_ln_opt_is_refused_by_name(tokenizer: Any) -> None:
    lm = _wrap(_hf("opt350m", len(tokenizer), int(tokenizer.bos_token_id)), tokenizer)
    with pytest.raises(BackendUnsupported, match=r"OPT with pre-LN blocks only.*do_layer_norm_before=False"):
        mw.LogitLens(lm, PROMPT, target=" Mary")


def test_opt_with_project_in_and_out_reads_exactly(tokenizer: Any) -> None:
    """A pre-LN OPT with a 32-wide embedding: hook_embed is project_in's output, the lens reads through project_out."""
    hf = _hf("opt_proj", len(tokenizer), int(tokenizer.bos_token_id))
    lm = _wrap(hf, tokenizer)
    adapter = adapter_for(lm)
    tokens = adapter.to_tokens(PROMPT)
    out = hf_run(hf, tokens)
    lens = mw.LogitLens(lm, PROMPT, target=" Mary", k=5)
    torch.testing.assert_close(lens.top_probs[-1], out.logits[0].softmax(-1).topk(5).values, atol=1e-6, rtol=1e-5)
    embed = adapter.capture(tokens, ["hook_embed", "blocks.0.hook_resid_pre"])
    assert embed["hook_embed"].shape[-1] == 64
    with torch.no_grad():
        expected = hf.model.decoder.project_in(hf.model.decoder.embed_tokens(tokens))
    torch.testing.assert_close(embed["hook_embed"], expected)
    torch.testing.assert_close(embed["blocks.0.hook_resid_pre"], out.hidden_states[0])


# ----- remote ------------------------------------------------------------------------------------


def test_remote_flag_reaches_the_trace(tokenizer: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Untestable for real here (no hosted engine): the flag reaches ``trace`` and the remote path's numbers match."""
    hf = _hf("gpt2", len(tokenizer), int(tokenizer.bos_token_id)).eval()  # a hosted model runs in eval mode
    lm = _wrap(hf, tokenizer)
    local = mw.AttentionView(lm, PROMPT).patterns
    calls: list[Any] = []
    original: Callable[..., Any] = type(lm).trace

    def trace(self: Any, *args: Any, **kwargs: Any) -> Any:
        calls.append(kwargs.get("remote"))
        kwargs["remote"] = False  # run here what would go to the engine
        return original(self, *args, **kwargs)

    monkeypatch.setattr(type(lm), "trace", trace)
    adapter = NNsightAdapter(lm, remote=True)
    view = mw.AttentionView(adapter, PROMPT)
    assert calls and all(c is True for c in calls)
    torch.testing.assert_close(view.patterns, local)
    acts = mw.ActivationView(adapter, PROMPT, hook="resid_post").activations[0]
    assert acts.shape[0] == 2
    assert all(c is True for c in calls)
    with pytest.raises(BackendUnsupported, match="patching on a remote engine is not supported"):
        adapter.run_patched(adapter.to_tokens(PROMPT), {"blocks.0.hook_resid_post": lambda t: t})


def test_top_examples_maxima_are_the_models_mlp_neurons(models: dict[str, tuple[Any, Any]]) -> None:
    lm, hf = models["gpt2"]
    corpus = ["The cat sat on the mat.", "The mat sat on the cat. The cat.", "Hello world! Numbers like 1, 2, 3."]
    ex = mw.TopExamples(lm, corpus, hook="mlp.post", layer=1, neurons=[0, 5], k=3, batch_size=2).wait(60)
    assert ex.status == "done", ex.error
    adapter = adapter_for(lm)
    got: list[torch.Tensor] = []
    handle = hf.transformer.h[1].mlp.c_proj.register_forward_pre_hook(lambda m, args: got.append(args[0][0]))
    try:
        for text in corpus:
            hf_run(hf, adapter.to_tokens(text))
    finally:
        handle.remove()
    acts = torch.cat(got)  # [all positions, d_mlp]
    for neuron in (0, 5):
        assert ex.examples[neuron][0].value == pytest.approx(float(acts[:, neuron].max()), abs=1e-5)


def test_path_patching_to_the_logits_equals_freezing_heads_by_hand(pair: tuple[Any, Any], tokenizer: Any) -> None:
    lm, hf = pair
    clean, corrupted, answers, wrong = _pair_prompts(len(tokenizer), int(tokenizer.bos_token_id))
    pp = mw.PathPatching(lm, clean=clean, corrupted=corrupted, metric=mw.logit_diff(answers, wrong), autostart=False)
    pp.start()
    pp.wait()
    assert pp.status == "done", pp.error
    outs = [_out_proj(b) for b in _blocks(hf)]
    d_head = 16

    def z_of(tokens: torch.Tensor) -> list[torch.Tensor]:  # every layer's head outputs, o_proj's input
        got: list[torch.Tensor] = []
        handles = [m.register_forward_pre_hook(lambda m, args: got.append(args[0].clone())) for m in outs]
        try:
            hf_run(hf, tokens)
        finally:
            for h in handles:
                h.remove()
        return got

    clean_z, corrupted_z = z_of(clean), z_of(corrupted)
    sender_layer, sender_head = 0, 2
    cols = slice(sender_head * d_head, (sender_head + 1) * d_head)

    def freeze(layer: int) -> Callable[..., tuple[Any, ...]]:
        def fn(module: Any, args: tuple[Any, ...]) -> tuple[Any, ...]:
            z = clean_z[layer].clone()
            if layer == sender_layer:
                z[..., cols] = corrupted_z[layer][..., cols]
            return (z, *args[1:])

        return fn

    handles = [m.register_forward_pre_hook(freeze(l)) for l, m in enumerate(outs)]
    try:
        value = _logit_diff(hf_run(hf, clean).logits, answers, wrong)
    finally:
        for h in handles:
            h.remove()
    expected = (value - pp.corrupted_metric) / (pp.clean_metric - pp.corrupted_metric)
    assert float(pp.results["path"][sender_layer, sender_head]) == pytest.approx(expected, abs=1e-4)
    with pytest.raises(ValueError, match="unknown hook name 'blocks.1.attn.hook_q'"):
        mw.PathPatching(lm, clean=clean, corrupted=corrupted, metric=mw.logit_diff(answers, wrong),
                        receivers=[(1, 0, "q")], autostart=False)  # fmt: skip


def test_every_patchable_hook_round_trips_and_a_zeroed_mlp_pre_matches_by_hand(pair: tuple[Any, Any]) -> None:
    """Every hook put back as a new tensor leaves the logits as they were (OPT's flattened MLP, Phi-3's gate half);
    zeroing ``mlp.hook_pre`` equals zeroing, by hand, what the HF MLP's input projection gives (its gate half)."""
    lm, hf = pair
    adapter = adapter_for(lm)
    tokens = adapter.to_tokens(PROMPT)
    expected = hf_run(hf, tokens).logits
    names = [n for n in adapter.hook_names() if adapter._points[n].patchable]
    got = adapter.run_patched(tokens, {n: (lambda t: t + 0) for n in names})
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    seen = adapter.capture(tokens, [n for n in names if n.startswith("blocks.0.")])
    assert all(t.shape[:2] == tokens.shape for t in seen.values())
    # the residual stream adds up: hook_attn_out and hook_mlp_out are what the block adds (Gemma 2: after its norms)
    pre, attn, mlp, post = (seen[f"blocks.0.hook_{k}"] for k in ("resid_pre", "attn_out", "mlp_out", "resid_post"))
    if hf.config.model_type in ("gpt_neox", "phi"):
        torch.testing.assert_close(post, pre + attn + mlp, atol=1e-5, rtol=1e-5)
    else:
        mid = adapter.capture(tokens, ["blocks.0.hook_resid_mid"])["blocks.0.hook_resid_mid"]
        torch.testing.assert_close(mid, pre + attn, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(post, mid + mlp, atol=1e-5, rtol=1e-5)
    half = hf.config.model_type == "phi3"  # gate_up_proj: [gate, up] side by side
    mlp_in = adapter._module(f"{adapter.layout.layers}.0.{adapter.layout.mlp_in}")

    def zero(module: Any, args: Any, out: torch.Tensor) -> torch.Tensor:
        out = out.clone()
        out[..., : out.shape[-1] // 2 if half else None] = 0
        return out

    handle = mlp_in.register_forward_hook(zero)
    try:
        by_hand = hf_run(hf, tokens).logits
    finally:
        handle.remove()
    ours = adapter.run_patched(tokens, {"blocks.0.mlp.hook_pre": torch.zeros_like})
    torch.testing.assert_close(ours, by_hand, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(by_hand, expected)


def test_sequential_neox_reads_resid_mid(tokenizer: Any) -> None:
    """GPT-NeoX with ``use_parallel_residual=False``: the MLP's norm reads resid_pre + attn_out, so resid_mid exists."""
    hf = _hf("neox_seq", len(tokenizer), int(tokenizer.bos_token_id))
    adapter = adapter_for(_wrap(hf, tokenizer))
    tokens = adapter.to_tokens(PROMPT)
    got = adapter.capture(
        tokens, [f"blocks.1.hook_{k}" for k in ("resid_pre", "attn_out", "resid_mid", "mlp_out", "resid_post")]
    )
    pre, attn, mid, mlp, post = got.values()
    torch.testing.assert_close(mid, pre + attn, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(post, mid + mlp, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(pre, hf_run(hf, tokens).hidden_states[1], atol=1e-5, rtol=1e-5)
