"""Token visualisations: CircuitsVis's ``circuitsvis.tokens``, returning :class:`ActivationView`.

The tokens are one prompt of an :class:`ActivationView` built from arrays (one layer; one unit per kind of value).
Hover a token for its value and the values of every kind; click it to select it (``view.selected``); pick another
kind in the view or with ``view.selected = {"neuron": k}``.
"""

from __future__ import annotations

import numpy as np
import torch

from ..widgets.activation import ActivationView
from ._common import data_range, floats

__all__ = ["colored_tokens", "colored_tokens_multi", "visualize_model_performance"]


def colored_tokens(
    tokens: list[str],
    values: list[float] | np.ndarray | torch.Tensor,
    min_value: float | None = None,
    max_value: float | None = None,
    negative_color: str | None = None,
    positive_color: str | None = None,
) -> ActivationView:
    """Tokens coloured by ``values`` (one per token). As in CircuitsVis the scale defaults to
    ``min(values)..max(values)`` and is anchored at zero (0 = background, ``max_value`` = full ``positive_color``,
    ``min_value`` = full ``negative_color``); without colours the theme's own blue/red map is used (CircuitsVis:
    red below zero, blue above)."""
    v = floats(values, "values")
    if v.ndim != 1:
        raise ValueError(f"values must have one value per token, shape [{len(tokens)}], got shape {list(v.shape)}")
    lo, hi = data_range(v) if v.numel() else (0.0, 1.0)
    return ActivationView.from_activations(
        tokens,
        v[:, None, None],
        unit_name="value",
        min_value=lo if min_value is None else min_value,
        max_value=hi if max_value is None else max_value,
        negative_color=negative_color,
        positive_color=positive_color,
    )


def colored_tokens_multi(
    tokens: list[str],
    values: torch.Tensor,
    labels: list[str] | None = None,
) -> ActivationView:
    """Tokens coloured by one of ``K`` kinds of value, ``values [S, K]`` (``labels`` names the kinds). Each kind is
    coloured over +-its largest magnitude; hovering a token lists its values of every kind."""
    v = floats(values, "values")
    if v.ndim != 2:
        raise ValueError(f"values must be [tokens, kinds] = [{len(tokens)}, K], got shape {list(v.shape)}")
    if len(tokens) != v.shape[0]:
        raise ValueError(
            f"Number of tokens ({len(tokens)}) must equal first dimension of values tensor, shape {list(v.shape)}"
        )
    return ActivationView.from_activations(
        tokens, v[:, None, :], layer_name="", unit_name="value", unit_labels=labels or None
    )


def visualize_model_performance(
    tokens: torch.Tensor,
    str_tokens: list[str],
    logits: torch.Tensor,
):
    """How well the model predicted each token from the ones before: its logit, log prob and prob, as three kinds of
    value on ``str_tokens[1:]`` (the first token is predicted by nothing). ``tokens [S]`` (or ``[1, S]``) are the
    ids, ``logits [S, d_vocab]`` (or ``[1, S, d_vocab]``)."""
    ids = torch.as_tensor(tokens)
    if ids.ndim == 2:
        if ids.shape[0] != 1:
            raise ValueError(f"tokens must be rank 1, or rank 2 with a dummy batch dimension. Shape: {list(ids.shape)}")
        ids = ids[0]
    if ids.ndim != 1 or ids.dtype.is_floating_point or ids.dtype == torch.bool:
        raise ValueError(f"tokens must be integer token ids of shape [S], got {ids.dtype} of shape {list(ids.shape)}")
    scores = floats(logits, "logits")
    if scores.ndim == 3:
        if scores.shape[0] != 1:
            raise ValueError(
                f"logits must be rank 2, or rank 3 with a dummy batch dimension. Shape: {list(scores.shape)}"
            )
        scores = scores[0]
    if scores.ndim != 2:
        raise ValueError(f"logits must be [S, d_vocab], got shape {list(scores.shape)}")
    if len(str_tokens) != len(ids):
        raise ValueError(f"Must have same number of tokens and str_tokens: {len(ids)} ids, {len(str_tokens)} strings")
    if len(ids) != scores.shape[0]:
        raise ValueError(f"Must have the same number of tokens and logit vectors: {len(ids)} and {scores.shape[0]}")
    if len(ids) < 2:
        raise ValueError("need at least two tokens: the first one is predicted by nothing")
    ids = ids.to(scores.device).long()
    if bool(((ids < 0) | (ids >= scores.shape[1])).any()):
        raise ValueError(f"token ids must be in 0..{scores.shape[1] - 1} (the logits' vocabulary)")
    scores = scores[:-1].float()
    nxt = ids[1:, None]
    values = torch.stack(
        [
            scores.gather(-1, nxt)[:, 0],
            scores.log_softmax(-1).gather(-1, nxt)[:, 0],
            scores.softmax(-1).gather(-1, nxt)[:, 0],
        ],
        dim=1,
    )
    return colored_tokens_multi(str_tokens[1:], values, ["logits", "log_probs", "probs"])
