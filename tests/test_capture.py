"""ModelAdapter on a TL-native bridge and on a GPT-2 bridge loaded from a local HF folder."""

from __future__ import annotations

import threading
from typing import Any

import pytest
import torch

from mi_widgets.capture import PATTERN_HOOK, ModelAdapter

PROMPT = "The cat sat on the mat. The cat sat on the"


def torch_hooks(model: Any) -> list[tuple[str, str, int]]:
    """Every torch-level forward (pre-)hook registered anywhere in the model."""
    out = []
    for name, module in model.named_modules():
        for kind in ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks"):
            out.extend((name, kind, key) for key in getattr(module, kind))
    return out


def hookpoints_in_use(model: Any) -> list[str]:
    return [
        name for name, hp in model.hook_dict.items() if getattr(hp, "fwd_hooks", None) or getattr(hp, "bwd_hooks", None)
    ]


def cached_patterns(model: Any, tokens: torch.Tensor) -> list[torch.Tensor]:
    names = [PATTERN_HOOK.format(layer=l) for l in range(model.cfg.n_layers)]
    _, cache = model.run_with_cache(tokens, names_filter=names)
    return [cache[name][0] for name in names]


@pytest.fixture
def warm(any_model: Any) -> Any:
    """The model after one plain forward (the bridge installs its own capture hooks lazily on the first)."""
    any_model(torch.tensor([[0, 1, 2]]))
    return any_model


# ----- attention patterns ------------------------------------------------------------------


def test_attention_patterns_shape_rows_causal_and_equal_to_cache(warm: Any) -> None:
    adapter = ModelAdapter(warm)
    tokens = adapter.to_tokens(PROMPT)
    seq = tokens.shape[-1]
    patterns = adapter.attention_patterns(tokens)
    assert len(patterns) == warm.cfg.n_layers == adapter.n_layers == 2
    expected = cached_patterns(warm, tokens)
    for layer, pattern in enumerate(patterns):
        assert pattern.shape == (warm.cfg.n_heads, seq, seq)
        assert not pattern.requires_grad and pattern.grad_fn is None
        assert pattern.device == next(warm.parameters()).device == adapter.device
        torch.testing.assert_close(pattern.sum(-1), torch.ones(warm.cfg.n_heads, seq), atol=1e-5, rtol=0)
        assert torch.all(pattern.triu(1) == 0), f"layer {layer} attends to the future"
        lower = torch.ones(seq, seq, dtype=torch.bool).tril()
        assert torch.all(pattern[:, lower] > 0)
        torch.testing.assert_close(pattern, expected[layer], atol=1e-6, rtol=1e-5)


def test_attention_patterns_subset_of_layers(warm: Any) -> None:
    adapter = ModelAdapter(warm)
    tokens = adapter.to_tokens(PROMPT)
    calls: list[int] = []
    [only] = adapter.attention_patterns(tokens, layers=[1], on_layer=calls.append)
    assert calls == [1]
    torch.testing.assert_close(only, cached_patterns(warm, tokens)[1])
    with pytest.raises(IndexError, match="layer must be in 0..1, got 5"):
        adapter.attention_patterns(tokens, layers=[5])


def test_hooks_are_removed_and_runs_repeat(warm: Any) -> None:
    adapter = ModelAdapter(warm)
    tokens = adapter.to_tokens(PROMPT)
    before = torch_hooks(warm)
    twin, _ = adapter.runner()
    during: list[tuple[int, int]] = []

    def count(layer: int) -> None:
        during.append((len(hookpoints_in_use(twin)), len(hookpoints_in_use(warm))))

    first = adapter.attention_patterns(tokens, on_layer=count)
    assert during[0][0] > 0, (
        "the pattern hooks were live on the twin during the run (so the checks below mean something)"
    )
    assert all(on_model == 0 for _, on_model in during), "no hook was ever put on the user's model"
    assert hookpoints_in_use(twin) == [] and hookpoints_in_use(warm) == []
    assert torch_hooks(warm) == before
    second = adapter.attention_patterns(tokens)
    for a, b in zip(first, second):
        assert torch.equal(a, b)
    # a later plain run is untouched: cache holds every hook, logits equal a fresh forward
    logits, cache = warm.run_with_cache(tokens)
    assert torch.equal(logits, warm(tokens))
    assert cache["blocks.1.attn.hook_pattern"].shape[-1] == tokens.shape[-1]


def test_on_layer_called_in_order(any_model: Any) -> None:
    adapter = ModelAdapter(any_model)
    calls: list[int] = []
    adapter.attention_patterns(adapter.to_tokens(PROMPT), on_layer=calls.append)
    assert calls == list(range(any_model.cfg.n_layers))


def test_exception_from_on_layer_aborts_and_model_stays_usable(warm: Any) -> None:
    adapter = ModelAdapter(warm)
    tokens = adapter.to_tokens(PROMPT)
    good = adapter.attention_patterns(tokens)
    before = torch_hooks(warm)
    calls: list[int] = []

    def stop(layer: int) -> None:
        calls.append(layer)
        raise RuntimeError("stop at layer 0")

    with pytest.raises(RuntimeError, match="stop at layer 0"):
        adapter.attention_patterns(tokens, on_layer=stop)
    assert calls == [0], "the run aborted at the first layer"
    assert hookpoints_in_use(warm) == [] and torch_hooks(warm) == before
    # the model lock was released: another thread can take it
    got = []
    lock = adapter.runner()[1]
    t = threading.Thread(target=lambda: got.append(lock.acquire(timeout=2) and lock.release() is None))
    t.start()
    t.join(5)
    assert got == [True]
    again = adapter.attention_patterns(tokens)
    for a, b in zip(good, again):
        assert torch.equal(a, b)


# ----- tokens and labels -------------------------------------------------------------------


def test_to_tokens_from_text_and_ids(any_model: Any) -> None:
    adapter = ModelAdapter(any_model)
    tokens = adapter.to_tokens(PROMPT)
    assert tokens.shape[0] == 1 and tokens.ndim == 2 and tokens.dtype == torch.long
    assert torch.equal(tokens, any_model.to_tokens(PROMPT))
    ids = tokens[0].tolist()
    for given in (tokens[0], tokens, ids, torch.tensor(ids, dtype=torch.int32)):
        out = adapter.to_tokens(given)
        assert out.shape == (1, len(ids)) and out[0].tolist() == ids
        assert out.device == adapter.device


def test_token_labels_with_and_without_tokenizer(native_model: Any, native_model_no_tokenizer: Any) -> None:
    with_tok = ModelAdapter(native_model)
    tokens = with_tok.to_tokens("The cat sat")
    labels = with_tok.token_labels(tokens[0])
    assert labels == native_model.to_str_tokens("The cat sat")
    assert labels[0] == "<|endoftext|>" and "".join(labels[1:]) == "The cat sat"
    assert with_tok.token_labels(tokens) == labels  # [1, seq] works too
    without = ModelAdapter(native_model_no_tokenizer)
    assert not without.has_tokenizer and with_tok.has_tokenizer
    assert without.token_labels(torch.tensor([5, 0, 17])) == ["<5>", "<0>", "<17>"]


def test_model_without_tokenizer_runs_on_ids(native_model_no_tokenizer: Any) -> None:
    adapter = ModelAdapter(native_model_no_tokenizer)
    patterns = adapter.attention_patterns(adapter.to_tokens([0, 5, 6, 7]))
    assert [p.shape for p in patterns] == [(4, 4, 4)] * 2


# ----- bad input -------------------------------------------------------------------------


@pytest.mark.parametrize("prompt", ["", "   ", "\n\t "])
def test_empty_prompt(native_model: Any, prompt: str) -> None:
    with pytest.raises(ValueError, match="prompt is empty"):
        ModelAdapter(native_model).to_tokens(prompt)


def test_text_prompt_longer_than_context_names_both_numbers(any_model: Any) -> None:
    adapter = ModelAdapter(any_model)
    text = "The cat sat on the mat. " * 40
    seq = any_model.to_tokens(text, truncate=False).shape[-1]
    assert seq > adapter.n_ctx
    # TransformerLens's to_tokens truncates to n_ctx by default: the adapter must not hide that
    with pytest.raises(ValueError, match=rf"{seq} tokens long.*\(n_ctx\) is {adapter.n_ctx}"):
        adapter.to_tokens(text)


def test_token_ids_longer_than_context_names_both_numbers(any_model: Any) -> None:
    adapter = ModelAdapter(any_model)
    with pytest.raises(ValueError, match=rf"{adapter.n_ctx + 1} tokens long.*\(n_ctx\) is {adapter.n_ctx}"):
        adapter.to_tokens([1] * (adapter.n_ctx + 1))
    assert adapter.to_tokens([1] * adapter.n_ctx).shape == (1, adapter.n_ctx)  # exactly n_ctx is fine


def test_text_prompt_without_tokenizer(native_model_no_tokenizer: Any) -> None:
    with pytest.raises(ValueError, match="no tokenizer.*token ids"):
        ModelAdapter(native_model_no_tokenizer).to_tokens("hello")


@pytest.mark.parametrize(
    "ids, error, pattern",
    [
        (torch.tensor([1.0, 2.0]), TypeError, r"token ids must be integers, got dtype torch.float32"),
        ([1.5, 2.0], TypeError, r"must be integers"),
        (torch.tensor([True, False]), TypeError, r"must be integers, got dtype torch.bool"),
        ([0, 350], ValueError, r"token ids must be in 0..349, got 0..350"),
        ([-1, 3], ValueError, r"token ids must be in 0..349, got -1..3"),
        (torch.zeros(2, 3, dtype=torch.long), ValueError, r"shape \[seq\] or \[1, seq\], got shape \[2, 3\]"),
        (torch.zeros(1, 1, 3, dtype=torch.long), ValueError, r"got shape \[1, 1, 3\]"),
        (torch.tensor(3), ValueError, r"got shape \[\]"),
        (torch.tensor([], dtype=torch.long), ValueError, r"token ids are empty"),
    ],
)
def test_bad_token_ids(native_model: Any, ids: Any, error: type[Exception], pattern: str) -> None:
    assert native_model.cfg.d_vocab == 350
    with pytest.raises(error, match=pattern):
        ModelAdapter(native_model).to_tokens(ids)


def test_empty_list_of_ids_says_empty(native_model: Any) -> None:
    # torch.as_tensor([]) is float32, so an empty list is reported as "must be integers": misleading
    with pytest.raises(ValueError, match="token ids are empty"):
        ModelAdapter(native_model).to_tokens([])


@pytest.mark.parametrize(
    "thing, name", [(torch.nn.Linear(2, 2), r"torch\.nn\.modules\.linear\.Linear"), (object(), r"builtins\.object")]
)
def test_not_a_transformerlens_model(thing: Any, name: str) -> None:
    with pytest.raises(TypeError, match=rf"expected a TransformerLens model.*got {name}"):
        ModelAdapter(thing)


def test_resolve_hook(any_model: Any) -> None:
    adapter = ModelAdapter(any_model)
    assert adapter.resolve_hook("blocks.0.attn.hook_pattern") == "blocks.0.attn.hook_pattern"
    assert adapter.resolve_hook("blocks.1.hook_resid_pre") == "blocks.1.hook_resid_pre"  # legacy alias
    assert "blocks.0.attn.hook_pattern" in adapter.hook_names()
    with pytest.raises(
        ValueError, match=r"unknown hook name 'blocks.0.attn.hook_patern'.*did you mean.*blocks.0.attn.hook_pattern"
    ):
        adapter.resolve_hook("blocks.0.attn.hook_patern")
    with pytest.raises(ValueError, match=r"unknown hook name 'zzz'.*it has \d+ hooks, e.g."):
        adapter.resolve_hook("zzz")


@pytest.mark.parametrize(
    "layer, head, pattern",
    [
        (2, 0, r"layer must be in 0..1, got 2"),
        (-1, 0, r"layer must be in 0..1, got -1"),
        (0, 4, r"head must be in 0..3, got 4"),
        (1, -1, r"head must be in 0..3, got -1"),
    ],
)
def test_check_layer_head(native_model: Any, layer: int, head: int, pattern: str) -> None:
    adapter = ModelAdapter(native_model)
    adapter.check_layer_head(1, 3)  # the last valid pair passes
    with pytest.raises(IndexError, match=pattern):
        adapter.check_layer_head(layer, head)


# ----- general activations --------------------------------------------------------------------


def test_layer_hooks_shorthands_and_full_names(gpt2_bridge: Any) -> None:
    adapter = ModelAdapter(gpt2_bridge)
    assert adapter.layer_hooks("mlp.post") == ["blocks.0.mlp.hook_post", "blocks.1.mlp.hook_post"]
    assert adapter.layer_hooks("mlp_post") == adapter.layer_hooks("hook_mlp_post") == adapter.layer_hooks("mlp.post")
    assert adapter.layer_hooks("resid_post") == ["blocks.0.hook_resid_post", "blocks.1.hook_resid_post"]
    assert adapter.layer_hooks("blocks.1.hook_attn_out") == ["blocks.1.hook_attn_out"]
    with pytest.raises(ValueError, match="did you mean mlp.post"):
        adapter.layer_hooks("mlp.psot")
    with pytest.raises(ValueError, match="unknown hook name 'blocks.1.mlp.hook_pots'.*blocks.1.mlp.hook_post"):
        adapter.layer_hooks("blocks.1.mlp.hook_pots")
    with pytest.raises(TypeError, match="as a string"):
        adapter.layer_hooks(3)  # type: ignore[arg-type]


def test_capture_equals_run_with_cache_and_stops_early(gpt2_bridge: Any) -> None:
    adapter = ModelAdapter(gpt2_bridge)
    tokens = adapter.to_tokens(PROMPT)
    names = ["blocks.0.mlp.hook_post", "blocks.0.hook_resid_post"]
    got = adapter.capture(tokens, names)
    _, cache = gpt2_bridge.run_with_cache(tokens)
    for name in names:
        assert torch.allclose(got[name], cache[name], atol=1e-6), name
    before = torch_hooks(gpt2_bridge)
    fired: list[str] = []
    later = gpt2_bridge.hook_dict["blocks.1.hook_resid_post"]
    later.add_hook(lambda t, hook: fired.append(hook.name))
    try:
        adapter.capture(tokens, names)
    finally:
        later.remove_hooks()
    assert fired == [], "the forward pass should stop once every requested hook has fired"
    assert torch_hooks(gpt2_bridge) == before
    with pytest.raises(ValueError, match="distinct"):
        adapter.capture(tokens, names + names[:1])


def test_unembed_reproduces_the_logits(any_model: Any) -> None:
    adapter = ModelAdapter(any_model)
    tokens = adapter.to_tokens(PROMPT)
    last = f"blocks.{adapter.n_layers - 1}.hook_resid_post"
    resid = adapter.capture(tokens, [last])[last]
    with torch.no_grad():
        logits = any_model(tokens)
    assert torch.allclose(adapter.unembed(resid), logits, atol=1e-4)


def test_hooks_ignore_forward_passes_of_other_threads(any_model: Any) -> None:
    """A background scan's hooks must not fire on (or stop) a forward pass the user runs meanwhile."""
    adapter = ModelAdapter(any_model)
    hook = "blocks.0.hook_resid_post"
    inside, release = threading.Event(), threading.Event()
    seen: list[tuple[int, ...]] = []

    def slow(_: int, activation: torch.Tensor) -> None:
        seen.append(tuple(activation.shape[:2]))
        inside.set()
        assert release.wait(30)

    mine = torch.arange(1, 6)[None]
    worker = threading.Thread(target=adapter.each_activation, args=(mine, [hook], slow))
    worker.start()
    try:
        assert inside.wait(30)
        theirs = torch.arange(1, 10).repeat(3, 1)  # the user's own call, while the scan's hook is registered
        with torch.no_grad():
            logits = any_model(theirs)
        assert logits.shape[:2] == (3, 9)  # ran to the end: not stopped by the scan's hook
    finally:
        release.set()
        worker.join(30)
    assert seen == [(1, 5)]
