"""Attention visualisations: CircuitsVis's ``circuitsvis.attention``, returning :class:`AttentionView`.

Differences from CircuitsVis: the view shows every head as a thumbnail and one head's pattern large (CircuitsVis's
``AttentionHeads`` layout); a click selects a head (``view.selected["layer"/"head"]``) or locks a cell
(``["query"/"key"]``). Without ``min_value`` the scale starts at 0 for non-negative patterns (at CircuitsVis's
default -1 when some weight is negative), and without colours the notebook theme's own maps are used (CircuitsVis:
``positive_color="blue"``, ``negative_color="red"``, mixed with white); any CSS colour given is used as CircuitsVis
uses it. Values must be finite.
"""

from __future__ import annotations

import numpy as np
import torch

from ..widgets.attention import AttentionView
from ._common import floats

__all__ = ["attention_heads", "attention_patterns", "attention_pattern"]


def _view(
    attention: torch.Tensor,
    tokens: list[str],
    *,
    head_names: list[str] | None = None,
    max_value: float | None = None,
    min_value: float | None = None,
    negative_color: str | None = None,
    positive_color: str | None = None,
    mask_upper_tri: bool,
    show_axis_labels: bool = True,
) -> AttentionView:
    if min_value is None and attention.numel() and bool((attention < 0).any()):
        min_value = -1.0  # CircuitsVis's default minimum
    return AttentionView.from_patterns(
        attention,
        tokens,
        head_names=head_names,
        min_value=min_value,
        max_value=max_value,
        negative_color=negative_color,
        positive_color=positive_color,
        mask_upper_tri=mask_upper_tri,
        show_axis_labels=show_axis_labels,
    )


def _rank(attention: torch.Tensor, ranks: tuple[int, ...], shape: str) -> torch.Tensor:
    if attention.ndim not in ranks:
        raise ValueError(f"expected attention of shape {shape}, got shape {list(attention.shape)}")
    return attention


def attention_heads(
    attention: list | np.ndarray | torch.Tensor,
    tokens: list[str],
    attention_head_names: list[str] | None = None,
    max_value: float | None = None,
    min_value: float | None = None,
    negative_color: str | None = None,
    positive_color: str | None = None,
    mask_upper_tri: bool | None = None,
) -> AttentionView:
    """Attention patterns from destination to source tokens, for a group of heads: ``[heads, dest, src]``
    (also ``[layers, heads, dest, src]``). ``attention_head_names`` names each head (default ``L0H3``);
    ``mask_upper_tri`` (default True, as CircuitsVis) draws cells above the diagonal empty."""
    pattern = _rank(floats(attention, "attention"), (3, 4), "[heads, dest_tokens, src_tokens]")
    return _view(
        pattern,
        tokens,
        head_names=attention_head_names,
        max_value=max_value,
        min_value=min_value,
        negative_color=negative_color,
        positive_color=positive_color,
        mask_upper_tri=True if mask_upper_tri is None else mask_upper_tri,
    )


def attention_patterns(
    tokens: list[str],
    attention: list | np.ndarray | torch.Tensor,
) -> AttentionView:
    """Attention head patterns ``[heads, dest, src]`` (CircuitsVis deprecated this for ``attention_heads``).
    Nothing is masked, as in CircuitsVis's ``AttentionPatterns``."""
    pattern = _rank(floats(attention, "attention"), (3, 4), "[num_heads, dest_tokens, src_tokens]")
    return _view(pattern, tokens, mask_upper_tri=False)


def attention_pattern(
    tokens: list[str],
    attention: list | np.ndarray | torch.Tensor,
    max_value: float | None = None,
    min_value: float | None = None,
    negative_color: str | None = None,
    show_axis_labels: bool | None = None,
    positive_color: str | None = None,
    mask_upper_tri: bool | None = None,
) -> AttentionView:
    """One head's pattern ``[dest, src]`` as a heatmap (hover for the values; click to lock a cell).
    ``show_axis_labels`` and ``mask_upper_tri`` default to True, as in CircuitsVis."""
    pattern = _rank(floats(attention, "attention"), (2,), "[dest_tokens, src_tokens]")
    return _view(
        pattern[None],
        tokens,
        max_value=max_value,
        min_value=min_value,
        negative_color=negative_color,
        positive_color=positive_color,
        mask_upper_tri=True if mask_upper_tri is None else mask_upper_tri,
        show_axis_labels=True if show_axis_labels is None else show_axis_labels,
    )
