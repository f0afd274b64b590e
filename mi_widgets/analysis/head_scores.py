"""Head scores: how much each head attends where a known head type would.

Definitions (shared by every view and the tutorials), for a query position ``i`` and key ``j``:

* **previous_token**: target key ``j = i - 1``.
* **duplicate_token**: target keys ``j < i`` holding the same token as position ``i``.
* **induction**: target keys ``j`` whose *previous* token equals token ``i`` (``tokens[j-1] == tokens[i]``,
  ``1 <= j <= i``): the token that followed an earlier occurrence of the current one.

A head's score is the attention it puts on target keys, averaged over the query rows that
**have** a target (rows without one, such as the first copy of a repeated sequence, do not
dilute it), so a perfect head scores 1. BOS is an ordinary key: a head parked on BOS scores low.

TransformerLens's ``detect_head(..., error_measure="mul")`` uses the same target patterns
(also for a user's own ``[seq, seq]`` pattern) but divides by *all* attention in the pattern,
so its value equals ``score * rows_with_target / total_attention`` (about 0.5 for a perfect
induction head on ``[BOS, x, x]``); ``tests/test_head_scores.py`` checks that identity.

Everything here is batched, stays on the patterns' device, and keeps only running sums.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

HEAD_TYPES: tuple[str, ...] = ("previous_token", "duplicate_token", "induction")


def detection_patterns(tokens: torch.Tensor) -> dict[str, torch.Tensor]:
    """Target patterns ``[batch, query, key]`` (0/1 floats) for each built-in head type."""
    if tokens.ndim == 1:
        tokens = tokens[None]
    if tokens.ndim != 2 or tokens.shape[-1] < 2:
        raise ValueError(f"expected tokens of shape [batch, seq] with seq >= 2, got shape {list(tokens.shape)}")
    seq = tokens.shape[-1]
    strictly_lower = torch.ones(seq, seq, dtype=torch.bool, device=tokens.device).tril(-1)
    previous = torch.zeros(seq, seq, dtype=torch.bool, device=tokens.device)
    previous[1:, :-1] = torch.eye(seq - 1, dtype=torch.bool, device=tokens.device)
    duplicate = (tokens[:, :, None] == tokens[:, None, :]) & strictly_lower
    induction = torch.zeros_like(duplicate)
    induction[:, :, 1:] = duplicate[:, :, :-1]  # key j is a target when key j-1 repeats the query token
    batch = tokens.shape[0]
    return {
        "previous_token": previous.float().expand(batch, seq, seq),  # one [seq, seq] shared by the batch
        "duplicate_token": duplicate.float(),
        "induction": induction.float(),
    }


def check_detection_pattern(pattern: torch.Tensor, seq: int) -> torch.Tensor:
    """Validate a user's own detection pattern ``[seq, seq]`` (or ``[batch, seq, seq]``)."""
    if pattern.ndim == 2:
        pattern = pattern[None]
    if pattern.ndim != 3 or tuple(pattern.shape[-2:]) != (seq, seq):
        raise ValueError(
            f"expected a detection pattern of shape [{seq}, {seq}] (query x key, matching the sequence), "
            f"got shape {list(pattern.shape)}"
        )
    if not torch.isfinite(pattern).all():
        raise ValueError("the detection pattern contains NaN or inf")
    if (pattern.triu(1) != 0).any():
        raise ValueError("the detection pattern puts weight above the diagonal, where causal attention is always 0")
    return pattern.float()


class RunningHeadScores:
    """Accumulates head scores batch by batch in O(layers x heads) memory."""

    def __init__(self, n_layers: int, n_heads: int, names: tuple[str, ...], device: torch.device | str = "cpu") -> None:
        self.names = names
        self.hits = {n: torch.zeros(n_layers, n_heads, dtype=torch.float64, device=device) for n in names}
        self.rows = {n: torch.zeros(n_layers, dtype=torch.float64, device=device) for n in names}

    def update(self, layer: int, pattern: torch.Tensor, targets: Mapping[str, torch.Tensor]) -> None:
        """Add one layer's patterns ``[batch, heads, query, key]`` against target patterns ``[batch, q, k]``."""
        if pattern.ndim != 4:
            raise ValueError(f"expected patterns [batch, heads, query, key], got shape {list(pattern.shape)}")
        p = pattern.float()
        for name in self.names:
            target = targets[name].to(p.device)
            self.hits[name][layer] += torch.einsum("bhqk,bqk->h", p, target).double()
            self.rows[name][layer] += (target.sum(-1) > 0).sum().double()

    def scores(self) -> dict[str, torch.Tensor]:
        """Scores ``[layers, heads]`` so far (NaN where no row had a target yet)."""
        return {n: (self.hits[n] / self.rows[n][:, None]).float() for n in self.names}


def head_scores(patterns: list[torch.Tensor], tokens: torch.Tensor) -> dict[str, torch.Tensor]:
    """Scores ``[layers, heads]`` of every built-in head type for per-layer patterns ``[batch, heads, q, k]``."""
    targets = detection_patterns(tokens)
    running = RunningHeadScores(len(patterns), int(patterns[0].shape[1]), HEAD_TYPES, patterns[0].device)
    for layer, pattern in enumerate(patterns):
        running.update(layer, pattern, targets)
    return running.scores()
