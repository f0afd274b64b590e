"""Head scores: our definitions, the identity with TransformerLens's detect_head, running sums."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from transformer_lens.head_detector import detect_head

from mi_widgets import zoo
from mi_widgets.analysis.head_scores import (
    HEAD_TYPES,
    RunningHeadScores,
    check_detection_pattern,
    detection_patterns,
    head_scores,
)

SEQ = "The cat sat on the mat. The cat sat on the mat. The cat sat on the mat."
TL_NAMES = {
    "previous_token": "previous_token_head",
    "duplicate_token": "duplicate_token_head",
    "induction": "induction_head",
}


@pytest.fixture(scope="module")
def model() -> Any:
    return zoo.load("induction-2l")


def _patterns(model: Any, tokens: torch.Tensor) -> list[torch.Tensor]:
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens, names_filter=lambda name: name.endswith("hook_pattern"))
    return [cache["pattern", layer] for layer in range(model.cfg.n_layers)]


@pytest.mark.parametrize("head_type", HEAD_TYPES)
def test_matches_detect_head_under_its_mul_measure(model: Any, head_type: str) -> None:
    tokens = model.to_tokens(SEQ)
    ours = head_scores(_patterns(model, tokens), tokens)[head_type]
    rows = float((detection_patterns(tokens)[head_type][0].sum(-1) > 0).sum())
    assert rows > 0
    theirs = detect_head(model, SEQ, TL_NAMES[head_type], error_measure="mul")
    # detect_head divides by all attention (seq rows summing to 1); we divide by rows with a target.
    torch.testing.assert_close(ours * rows / tokens.shape[-1], theirs.float(), atol=1e-4, rtol=1e-4)


def test_custom_detection_pattern_matches_detect_head(model: Any) -> None:
    tokens = model.to_tokens(SEQ)
    seq = tokens.shape[-1]
    custom = torch.zeros(seq, seq)
    custom[:, 0] = 1.0  # a "BOS sink" detector
    target = check_detection_pattern(custom, seq)
    running = RunningHeadScores(model.cfg.n_layers, model.cfg.n_heads, ("custom",))
    for layer, pattern in enumerate(_patterns(model, tokens)):
        running.update(layer, pattern, {"custom": target})
    theirs = detect_head(model, SEQ, custom, error_measure="mul")
    torch.testing.assert_close(running.scores()["custom"], theirs.float(), atol=1e-4, rtol=1e-4)


def test_bundled_model_shows_the_induction_circuit(model: Any) -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.randint(1, model.cfg.d_vocab, (16, 20), generator=gen)
    tokens = torch.cat([torch.zeros(16, 1, dtype=torch.long), x, x], dim=1)  # [BOS, x, x]
    scores = head_scores(_patterns(model, tokens), tokens)
    assert scores["induction"][1].min() > 0.9  # a perfect induction head scores 1 here (detect_head: ~0.5)
    assert scores["induction"][0].max() < 0.1
    assert scores["previous_token"][0].max() > 0.8
    assert scores["previous_token"][1].max() < 0.2


def test_running_sums_over_batches_equal_one_big_batch(model: Any) -> None:
    gen = torch.Generator().manual_seed(1)
    x = torch.randint(1, model.cfg.d_vocab, (6, 12), generator=gen)
    tokens = torch.cat([torch.zeros(6, 1, dtype=torch.long), x, x], dim=1)
    whole = head_scores(_patterns(model, tokens), tokens)
    running = RunningHeadScores(model.cfg.n_layers, model.cfg.n_heads, HEAD_TYPES)
    for part in (tokens[:2], tokens[2:]):
        targets = detection_patterns(part)
        for layer, pattern in enumerate(_patterns(model, part)):
            running.update(layer, pattern, targets)
    for name in HEAD_TYPES:
        torch.testing.assert_close(running.scores()[name], whole[name])
        assert running.hits[name].shape == (model.cfg.n_layers, model.cfg.n_heads)  # O(layers x heads), not O(batches)


def test_detection_patterns_by_hand() -> None:
    t = detection_patterns(torch.tensor([7, 1, 2, 1, 2]))
    prev, dup, ind = (t[n][0] for n in HEAD_TYPES)
    assert prev.nonzero().tolist() == [[1, 0], [2, 1], [3, 2], [4, 3]]
    assert dup.nonzero().tolist() == [[3, 1], [4, 2]]
    assert ind.nonzero().tolist() == [[3, 2], [4, 3]]  # token after the earlier occurrence


def test_no_target_rows_give_nan_not_a_crash() -> None:
    running = RunningHeadScores(1, 2, ("duplicate_token",))
    tokens = torch.tensor([[1, 2, 3]])  # no repeats: no duplicate-token targets
    running.update(0, torch.full((1, 2, 3, 3), 1 / 3).tril(), detection_patterns(tokens))
    assert torch.isnan(running.scores()["duplicate_token"]).all()


@pytest.mark.parametrize(
    ("pattern", "match"),
    [
        (torch.zeros(4, 5), r"shape \[6, 6\]"),
        (torch.ones(6, 6), "above the diagonal"),
        (torch.full((6, 6), float("nan")), "NaN or inf"),
    ],
)
def test_bad_detection_patterns(pattern: torch.Tensor, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        check_detection_pattern(pattern, 6)


@pytest.mark.parametrize("tokens", [torch.tensor([5]), torch.zeros(2, 2, 2, dtype=torch.long)])
def test_bad_tokens(tokens: torch.Tensor) -> None:
    with pytest.raises(ValueError, match=r"\[batch, seq\]"):
        detection_patterns(tokens)
