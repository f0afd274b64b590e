"""Activation, attribution and path patching: equal to TransformerLens's patching functions and to
brute-force single patches, attribution exact where the metric is linear, clear errors on bad input."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import pytest
import torch

import mi_widgets as mw
from mi_widgets.analysis.patching import agreement, attribution_scores, component, normalise, patch_mask
from mi_widgets.capture.adapter import ModelAdapter
from mi_widgets.capture.patching import PatchingRun

N, SEQ = 4, 10


def prompts(model: Any, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Clean [BOS, x, x]-like prompts, corrupted with positions 2 and 3 changed, answers and wrong tokens."""
    gen = torch.Generator().manual_seed(seed)
    vocab = int(model.cfg.d_vocab)
    clean = torch.randint(1, vocab, (N, SEQ), generator=gen)
    clean[:, 0] = 0
    corrupted = clean.clone()
    corrupted[:, 2:4] = torch.randint(1, vocab, (N, 2), generator=gen)
    answers = torch.randint(1, vocab, (N,), generator=gen)
    wrong = torch.randint(1, vocab, (N,), generator=gen)
    return clean, corrupted, answers, wrong


TL_FUNCTIONS = {
    "resid_pre": "get_act_patch_resid_pre",
    "attn_out": "get_act_patch_attn_out",
    "mlp_out": "get_act_patch_mlp_out",
    "head_out": "get_act_patch_attn_head_out_all_pos",
    "head_out_pos": "get_act_patch_attn_head_out_by_pos",
    "q": "get_act_patch_attn_head_q_all_pos",
    "k": "get_act_patch_attn_head_k_all_pos",
    "v": "get_act_patch_attn_head_v_all_pos",
    "pattern": "get_act_patch_attn_head_pattern_all_pos",
}


@pytest.fixture(params=["native_model", "gpt2_bridge"])
def patched(request: pytest.FixtureRequest) -> tuple[Any, Any, tuple[torch.Tensor, ...]]:
    """A finished exact sweep of every component the model has, with its model and inputs."""
    model = request.getfixturevalue(request.param)
    data = prompts(model)
    clean, corrupted, answers, wrong = data
    patch = mw.Patching(model, clean, corrupted, mw.logit_diff(answers, wrong), batch_size=7, autostart=False)
    patch.start()
    patch.wait()
    assert patch.status == "done", patch.error
    return model, patch, data


def test_exact_patching_equals_transformer_lens(patched: Any) -> None:
    model, patch, (clean, corrupted, answers, wrong) = patched
    metric = mw.logit_diff(answers, wrong)
    was_training = model.training  # TransformerLens's patching refuses a model in training mode; ours never needs it
    model.eval()
    try:
        _compare_with_transformer_lens(model, patch, clean, corrupted, metric)
    finally:
        model.train(was_training)
    assert patch.results["resid_pre"][0].isfinite().all()
    # Normalised: the clean run is 1, the corrupted run 0.
    expected = (patch.raw["head_out"] - patch.corrupted_metric) / (patch.clean_metric - patch.corrupted_metric)
    torch.testing.assert_close(patch.results["head_out"], expected)


def _compare_with_transformer_lens(model: Any, patch: Any, clean: torch.Tensor, corrupted: torch.Tensor,
                                   metric: Any) -> None:  # fmt: skip
    import transformer_lens.patching as tl_patching

    with torch.no_grad():
        _, cache = model.run_with_cache(clean)
        names = list(patch.raw)
        assert {"resid_pre", "head_out", "head_out_pos", "q", "k", "v", "pattern", "attn_out"} <= set(names)
        for name in names:
            ours = patch.raw[name]
            theirs = getattr(tl_patching, TL_FUNCTIONS[name])(model, corrupted, cache, metric)
            assert ours.shape == theirs.shape, name
            torch.testing.assert_close(ours, theirs.float().cpu(), atol=2e-5, rtol=1e-4, msg=name)


def _brute_force(model: Any, hook: str, index: tuple[Any, ...], clean: torch.Tensor, corrupted: torch.Tensor,
                 metric: Callable[[torch.Tensor], torch.Tensor]) -> float:  # fmt: skip
    """One forward pass on the corrupted prompts with one clean activation put back by hand."""
    name = hook
    with torch.no_grad():
        _, cache = model.run_with_cache(clean, names_filter=hook)

        def put_back(act: torch.Tensor, hook: Any) -> torch.Tensor:
            act = act.clone()
            act[(slice(None), *index)] = cache[name][(slice(None), *index)]
            return act

        return float(metric(model.run_with_hooks(corrupted, fwd_hooks=[(hook, put_back)])))


def test_exact_patching_equals_one_patch_at_a_time(patched: Any) -> None:
    model, patch, (clean, corrupted, answers, wrong) = patched
    metric = mw.logit_diff(answers, wrong)
    checks = [
        ("resid_pre", "blocks.1.hook_resid_pre", (3,), (1, 3)),
        ("head_out", "blocks.0.attn.hook_z", (slice(None), 2), (0, 2)),
        ("head_out_pos", "blocks.1.attn.hook_z", (5, 1), (1, 5, 1)),
        ("v", "blocks.0.attn.hook_v", (slice(None), 3), (0, 3)),
        ("pattern", "blocks.1.attn.hook_pattern", (0,), (1, 0)),
    ]
    for name, hook, index, at in checks:
        expected = _brute_force(model, hook, index, clean, corrupted, metric)
        assert float(patch.raw[name][at]) == pytest.approx(expected, abs=2e-5), name


def test_per_prompt_effects_average_to_the_result(patched: Any) -> None:
    _, patch, _ = patched
    per = patch.per_prompt("resid_pre", 1, position=3)["exact"]
    assert per.shape == (N,)
    assert float(per.mean()) == pytest.approx(float(patch.results["resid_pre"][1, 3]), abs=1e-5)
    with pytest.raises(ValueError, match="needs a position"):
        patch.per_prompt("resid_pre", 1)
    with pytest.raises(ValueError, match="unknown component"):
        patch.per_prompt("resid_mid", 1, position=0)


def test_patching_the_changed_position_at_layer_0_restores_the_clean_run(native_model: Any) -> None:
    clean, corrupted, answers, wrong = prompts(native_model)
    patch = mw.Patching(native_model, clean, corrupted, mw.logit_diff(answers, wrong), components=["resid_pre"],
                        autostart=False)  # fmt: skip
    patch.start()
    patch.wait()
    corrupted_one = clean.clone()
    corrupted_one[:, 2:4] = corrupted[:, 2:4]
    assert patch.differing_positions == [2, 3]
    # Only positions 2 and 3 differ: patching both is the clean run; an unchanged position changes nothing.
    assert float(patch.results["resid_pre"][0, 0]) == pytest.approx(0.0, abs=1e-4)
    assert float(patch.results["resid_pre"][0, 9]) == pytest.approx(0.0, abs=1e-4)


def test_attribution_is_exact_where_the_metric_is_linear(tokenizer: Any, vocab_size: int) -> None:
    """Without a final norm the logits are linear in the last layer's attention output, so the
    attribution of ``attn_out`` there is exact: (clean - corrupted) . (W_U[:, a] - W_U[:, w]) / n."""
    from transformer_lens import TransformerBridge
    from transformer_lens.config import TransformerBridgeConfig

    cfg = TransformerBridgeConfig(d_model=32, d_head=8, n_heads=4, n_layers=2, n_ctx=32, d_vocab=vocab_size,
                                  attn_only=True, normalization_type=None, seed=1)  # fmt: skip
    model = TransformerBridge.boot_native(cfg, tokenizer=tokenizer)
    clean, corrupted, answers, wrong = prompts(model, seed=3)
    patch = mw.Patching(model, clean, corrupted, mw.logit_diff(answers, wrong), components=["attn_out", "head_out"],
                        method="attribution", autostart=False)  # fmt: skip
    patch.start()
    patch.wait()
    assert patch.status == "done", patch.error
    span = patch.clean_metric - patch.corrupted_metric
    last = SEQ - 1
    with torch.no_grad():
        _, c_cache = model.run_with_cache(clean)
        _, x_cache = model.run_with_cache(corrupted)
        diff = c_cache["blocks.1.hook_attn_out"][:, last] - x_cache["blocks.1.hook_attn_out"][:, last]
        direction = model.W_U[:, answers].T - model.W_U[:, wrong].T
        known = float((diff * direction).sum(-1).mean()) / span
    assert float(patch.attribution["attn_out"][1, last]) == pytest.approx(known, rel=1e-4, abs=1e-6)
    assert float(patch.results["attn_out"][1, last]) == pytest.approx(known, rel=1e-4, abs=1e-6)
    # Earlier positions of the last layer cannot reach the last position's logits: zero, both ways.
    assert float(patch.attribution["attn_out"][1, 0]) == pytest.approx(0.0, abs=1e-6)
    report = patch.agreement("head_out")
    assert report["correlation"] is not None and -1.0 <= report["correlation"] <= 1.0
    assert len(report["disagree"]) == 5 and {"layer", "head", "exact", "attribution"} <= set(report["disagree"][0])


def test_attribution_matches_transformer_lens_style_backward_hooks(native_model: Any) -> None:
    """The attribution of each head's output equals (clean - corrupted) x gradient from TL's own backward hooks."""
    model = native_model
    clean, corrupted, answers, wrong = prompts(model, seed=5)
    metric = mw.logit_diff(answers, wrong)
    run = PatchingRun(ModelAdapter(model), clean, corrupted, metric)
    ours, per_prompt = run.attribution(["head_out"])["head_out"]
    grads: dict[str, torch.Tensor] = {}

    def keep_grad(name: str, grad: torch.Tensor, hook: Any) -> None:
        grads[name] = grad.detach()  # `hook.name` may be the canonical name, not the alias asked for

    names = [f"blocks.{layer}.attn.hook_z" for layer in range(model.cfg.n_layers)]
    model.reset_hooks()
    with torch.no_grad():
        _, c_cache = model.run_with_cache(clean, names_filter=names)
        _, x_cache = model.run_with_cache(corrupted, names_filter=names)
    for name in names:
        model.add_hook(name, partial(keep_grad, name), "bwd")
    try:
        metric(model(corrupted)).backward()
    finally:
        model.reset_hooks()
        model.zero_grad(set_to_none=True)
    expected = torch.stack([((c_cache[n] - x_cache[n]) * grads[n]).sum((0, 1, 3)) for n in names])
    torch.testing.assert_close(ours, expected, atol=1e-5, rtol=1e-4)
    assert per_prompt is not None and per_prompt.shape == (N, model.cfg.n_layers, model.cfg.n_heads)
    assert all(p.grad is None for p in model.parameters()), "attribution must not leave gradients in the model"


def test_path_patching_to_the_logits_and_to_a_query_by_hand(native_model: Any) -> None:
    """Senders patched with every other head frozen at clean outputs, against a hand-written version."""
    model = native_model
    clean, corrupted, answers, wrong = prompts(model, seed=7)
    metric = mw.logit_diff(answers, wrong)
    names = [f"blocks.{layer}.attn.hook_z" for layer in range(model.cfg.n_layers)]
    with torch.no_grad():
        _, c_cache = model.run_with_cache(clean, names_filter=names)
        _, x_cache = model.run_with_cache(corrupted, names_filter=names)

    def frozen(sender: tuple[int, int], name: str, act: torch.Tensor, hook: Any) -> torch.Tensor:
        out = c_cache[name].clone()
        if name == f"blocks.{sender[0]}.attn.hook_z":
            out[:, :, sender[1]] = x_cache[name][:, :, sender[1]]
        return out

    def by_hand(sender: tuple[int, int], receiver: tuple[int, int, str] | None) -> float:
        with torch.no_grad():
            hooks = [(n, partial(frozen, sender, n)) for n in names]
            if receiver is None:
                return float(metric(model.run_with_hooks(clean, fwd_hooks=hooks)))
            got: dict[str, torch.Tensor] = {}
            hook_name = f"blocks.{receiver[0]}.attn.hook_{receiver[2]}"
            hooks.append((hook_name, lambda act, hook: got.__setitem__("r", act.clone())))
            model.run_with_hooks(clean, fwd_hooks=hooks)

            def put(act: torch.Tensor, hook: Any) -> torch.Tensor:
                act = act.clone()
                act[:, :, receiver[1]] = got["r"][:, :, receiver[1]]
                return act

            return float(metric(model.run_with_hooks(clean, fwd_hooks=[(hook_name, put)])))

    to_logits = mw.PathPatching(model, clean=clean, corrupted=corrupted, metric=metric, autostart=False)
    to_query = mw.PathPatching(model, clean=clean, corrupted=corrupted, metric=metric, receivers=[(1, 2, "q")],
                               batch_size=3, autostart=False)  # fmt: skip
    for path in (to_logits, to_query):
        path.start()
        path.wait()
        assert path.status == "done", path.error
    span = to_logits.clean_metric - to_logits.corrupted_metric
    for sender in [(0, 1), (1, 3)]:
        expected = (by_hand(sender, None) - to_logits.corrupted_metric) / span
        assert float(to_logits.results["path"][sender]) == pytest.approx(expected, abs=1e-4)
    for sender in [(0, 0), (0, 3)]:
        expected = (by_hand(sender, (1, 2, "q")) - to_query.corrupted_metric) / span
        assert float(to_query.results["path"][sender]) == pytest.approx(expected, abs=1e-4)
    assert to_query.results["path"][1].isnan().all(), "heads in the receivers' layer are not senders"
    to_logits.close()
    to_query.close()


def test_a_function_metric_and_answer_prob(native_model: Any) -> None:
    clean, corrupted, answers, wrong = prompts(native_model)

    def last_logit_sum(logits: torch.Tensor) -> torch.Tensor:
        return logits[:, -1, answers].diagonal().sum()

    fn = mw.Patching(native_model, clean, corrupted, last_logit_sum, components=["head_out"], autostart=False)
    prob = mw.Patching(
        native_model, clean, corrupted, mw.answer_prob(answers), components=["head_out"], autostart=False
    )
    for p in (fn, prob):
        p.start()
        p.wait()
        assert p.status == "done", p.error
        assert p.results["head_out"].isfinite().all()
    with pytest.raises(ValueError, match="no per-prompt values"):
        fn.per_prompt("head_out", 0, head=1)
    assert prob.per_prompt("head_out", 0, head=1)["exact"].shape == (N,)


# ----- bad input ---------------------------------------------------------------------------------


def test_bad_input_is_a_clear_error(native_model: Any) -> None:
    clean, corrupted, answers, wrong = prompts(native_model)
    metric = mw.logit_diff(answers, wrong)
    with pytest.raises(
        ValueError,
        match="clean prompts are 10 tokens long and corrupted prompts 9; prompt 0 first differs at position 2",
    ):
        mw.Patching(native_model, clean, corrupted[:, :9], metric, autostart=False)
    with pytest.raises(ValueError, match="one corrupted prompt per clean prompt"):
        mw.Patching(native_model, clean, corrupted[:2], metric, autostart=False)
    with pytest.raises(ValueError, match="clean is empty"):
        mw.Patching(native_model, [], [], metric, autostart=False)
    with pytest.raises(ValueError, match="unknown component 'resid_mid'"):
        mw.Patching(native_model, clean, corrupted, metric, components=["resid_mid"], autostart=False)
    with pytest.raises(ValueError, match="attention-only"):
        mw.Patching(native_model, clean, corrupted, metric, components=["mlp_out"], autostart=False)
    with pytest.raises(ValueError, match="must return a scalar"):
        mw.Patching(native_model, clean, corrupted, lambda logits: logits[:, -1, 0], autostart=False)
    with pytest.raises(ValueError, match="expected a finite number"):
        mw.Patching(native_model, clean, corrupted, lambda logits: logits.sum() * float("nan"), autostart=False)
    with pytest.raises(ValueError, match="tells them apart"):
        mw.Patching(native_model, clean, clean.clone(), metric, autostart=False)
    with pytest.raises(ValueError, match="method must be one of"):
        mw.Patching(native_model, clean, corrupted, metric, method="gradient", autostart=False)
    with pytest.raises(ValueError, match="one token per prompt each"):
        mw.logit_diff(answers, wrong[:2])
    with pytest.raises(ValueError, match="is not before the receivers"):
        mw.PathPatching(native_model, clean=clean, corrupted=corrupted, metric=metric, receivers=[(0, 1, "q")],
                        senders=[(0, 0)], autostart=False)  # fmt: skip
    with pytest.raises(ValueError, match="receiver is"):
        mw.PathPatching(native_model, clean=clean, corrupted=corrupted, metric=metric, receivers=[(1, 1, "z")])


def test_selected_is_checked_per_component(native_model: Any) -> None:
    import traitlets

    clean, corrupted, answers, wrong = prompts(native_model)
    patch = mw.Patching(native_model, clean, corrupted, mw.logit_diff(answers, wrong), autostart=False)
    patch.selected = {"component": "head_out_pos", "layer": 1, "head": 2, "position": 4}
    assert patch.selected == {"component": "head_out_pos", "layer": 1, "head": 2, "position": 4}
    assert patch.attention.selected["layer"] == 1 and patch.attention.selected["head"] == 2
    # ... and its direct logit attribution on the first clean prompt, for the metric's answer and wrong token.
    assert patch.logit_attribution.selected == {"layer": 1, "head": 2, "component": "head"}
    direct = mw.LogitAttribution(native_model, clean[0], answer=int(answers[0]), wrong=int(wrong[0]))
    torch.testing.assert_close(patch.logit_attribution.heads, direct.heads)
    direct.close()
    patch.selected = {"component": "resid_pre", "layer": 0, "position": 9, "head": 3}
    assert patch.selected["head"] is None, "resid_pre has no head"
    for bad in ({"component": "resid_pre", "layer": 0, "position": 10}, {"component": "nope", "layer": 0},
                {"component": "head_out", "layer": 0, "head": 1.5}):  # fmt: skip
        with pytest.raises(traitlets.TraitError):
            patch.selected = bad
    patch.close()


def test_endpoints_send_grids_and_per_prompt_values(native_model: Any, capture: Any, ask: Any) -> None:
    from mi_widgets.transport.codec import decode_array

    clean, corrupted, answers, wrong = prompts(native_model)
    patch = mw.Patching(native_model, clean, corrupted, mw.logit_diff(answers, wrong), method="attribution",
                        components=["resid_pre", "head_out_pos"], autostart=False)  # fmt: skip
    patch.start()
    patch.wait()
    sent = capture(patch)
    rid = ask(patch, "results")
    sent.wait(rid)
    content, buffers = sent.reply(rid)
    assert content["ok"], content
    result = content["result"]
    assert result["names"] == ["resid_pre", "head_out_pos"]
    grid = decode_array(result["values"]["head_out_pos"], buffers)
    # [layers, pos, heads] is shown as rows L0H0, L0H1, ... by positions.
    expected = patch.results["head_out_pos"].permute(0, 2, 1).reshape(8, SEQ)
    torch.testing.assert_close(torch.tensor(grid.copy()), expected)
    assert set(result["attribution"]) == {"resid_pre", "head_out_pos"}
    assert result["agreement"]["resid_pre"]["correlation"] is not None
    rid = ask(patch, "per_prompt", {"component": "resid_pre", "layer": 1, "head": None, "position": 2})
    sent.wait(rid)
    content, buffers = sent.reply(rid)
    result = content["result"]
    assert len(result["prompts"]) == N
    values = torch.tensor(decode_array(result["values"], buffers).copy())
    torch.testing.assert_close(values, patch.per_prompt("resid_pre", 1, position=2)["exact"])
    rid = ask(patch, "per_prompt", {"component": "resid_pre", "layer": 7, "position": 2})
    sent.wait(rid)
    content, _ = sent.reply(rid)
    assert not content["ok"] and "selected layer must be in 0..1" in content["error"]["message"]
    patch.close()


def test_pure_helpers() -> None:
    comp = component("head_out_pos")
    mask = patch_mask(comp, [(1, 2), None, (0, 0)], (5, 3, 4))
    assert mask.shape == (3, 5, 3, 1)
    assert mask[0, 1, 2, 0] and int(mask[0].sum()) == 1 and not mask[1].any() and mask[2, 0, 0, 0]
    diff = torch.ones(2, 5, 3, 4)
    grad = torch.arange(4.0).expand(2, 5, 3, 4)
    scores = attribution_scores(comp, diff, grad)
    assert scores.shape == (2, 5, 3) and torch.all(scores == 6.0)
    assert normalise(torch.tensor([1.0, 3.0]), clean=3.0, corrupted=1.0).tolist() == [0.0, 1.0]
    corr, worst = agreement(torch.tensor([0.0, 1.0, 2.0, float("nan")]), torch.tensor([0.0, 1.0, 5.0, 1.0]), k=1)
    assert corr is not None and 0.9 < corr < 1.0 and worst == [(2, 2.0, 5.0)]
