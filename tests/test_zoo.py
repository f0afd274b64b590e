"""Tests for the bundled model zoo: offline loading and that induction-2l really has the circuit."""

from __future__ import annotations

import sys
from typing import Any

import pytest
import torch

from mi_widgets import zoo

NAME = "induction-2l"
L = 20


@pytest.fixture(scope="module")
def model() -> Any:
    return zoo.load(NAME)


def repeat_with_cache(model: Any, offset: int = 0) -> tuple[torch.Tensor, torch.Tensor, dict[int, torch.Tensor]]:
    """Fresh [BOS, r, x, x] (r: ``offset`` random tokens, x: L random tokens), logits, patterns."""
    gen = torch.Generator().manual_seed(2024 + offset)
    bos = model.tokenizer.bos_token_id
    r = torch.randint(0, model.cfg.d_vocab, (64, offset + L), generator=gen)
    r = torch.where(r == bos, torch.full_like(r, (bos + 1) % model.cfg.d_vocab), r)
    x = r[:, offset:]
    tokens = torch.cat([torch.full((64, 1), bos), r[:, :offset], x, x], dim=1)
    with torch.no_grad():
        logits, cache = model.run_with_cache(tokens, names_filter=lambda n: n.endswith("hook_pattern"))
    patterns = {layer: cache[f"blocks.{layer}.attn.hook_pattern"] for layer in range(model.cfg.n_layers)}
    return tokens[:, offset:], logits[:, offset:], {k: v[:, :, offset:, offset:] for k, v in patterns.items()}


@pytest.fixture(scope="module")
def repeated(model: Any) -> tuple[torch.Tensor, torch.Tensor, dict[int, torch.Tensor]]:
    return repeat_with_cache(model)


def induction_scores(pattern: torch.Tensor) -> torch.Tensor:
    """Per head: attention from query i in the second copy to key i-L+1."""
    q = torch.arange(L + 1, 2 * L + 1)
    return pattern[:, :, q, q - L + 1].mean(dim=(0, 2))


def prev_token_scores(pattern: torch.Tensor) -> torch.Tensor:
    """Per head: attention from query i >= 1 to key i-1."""
    q = torch.arange(1, 2 * L + 1)
    return pattern[:, :, q, q - 1].mean(dim=(0, 2))


def test_available() -> None:
    assert NAME in zoo.available()


def test_unknown_name() -> None:
    with pytest.raises(ValueError) as err:
        zoo.load("no-such-model")
    assert "no-such-model" in str(err.value)
    assert NAME in str(err.value)


def test_missing_transformer_lens(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "transformer_lens", None)
    with pytest.raises(ImportError, match="transformer-lens>=4"):
        zoo.load(NAME)


def test_load_shape_and_tokenizer(model: Any) -> None:
    assert model.cfg.n_layers == 2
    assert model.cfg.n_heads == 4
    assert not model.training
    prompt = "The cat sat on the mat. The cat sat on the"
    tokens = model.to_tokens(prompt)
    assert tokens.shape[0] == 1 and tokens.shape[1] > 2
    assert tokens[0, 0].item() == model.tokenizer.bos_token_id
    str_tokens = model.to_str_tokens(prompt)
    assert all(isinstance(s, str) for s in str_tokens)
    assert len(str_tokens) == tokens.shape[1]
    assert "".join(str_tokens[1:]) == prompt


def test_circuit(model: Any, repeated: Any) -> None:
    _, _, patterns = repeated
    ind0, ind1 = induction_scores(patterns[0]), induction_scores(patterns[1])
    prev0 = prev_token_scores(patterns[0])
    assert (ind1 > 0.7).sum() >= 2, ind1
    assert ind0.max() < 0.2, ind0
    assert prev0.max() > 0.4, prev0


def test_repeated_half_is_predicted(repeated: Any) -> None:
    tokens, logits, _ = repeated
    nll = -torch.log_softmax(logits, dim=-1)[:, :-1].gather(-1, tokens[:, 1:, None])[..., 0]
    loss_first = nll[:, :L].mean()
    loss_repeat = nll[:, L + 1 : 2 * L].mean()
    assert loss_first > 5.0
    assert loss_repeat < 1.0
    assert loss_repeat < loss_first / 5


def test_circuit_at_end_of_context(model: Any) -> None:
    """A ~100-token prompt must work: the repeat placed at the end of the context."""
    offset = model.cfg.n_ctx - 1 - 2 * L
    tokens, logits, patterns = repeat_with_cache(model, offset)
    assert (induction_scores(patterns[1]) > 0.7).sum() >= 2
    assert prev_token_scores(patterns[0]).max() > 0.4
    nll = -torch.log_softmax(logits, dim=-1)[:, :-1].gather(-1, tokens[:, 1:, None])[..., 0]
    assert nll[:, L + 1 : 2 * L].mean() < 1.0


def test_deterministic_load(model: Any) -> None:
    other = zoo.load(NAME, device="cpu")
    tokens = model.to_tokens("The cat sat on the mat. The cat sat on the")
    with torch.no_grad():
        assert torch.equal(model(tokens), other(tokens))
