"""Pure tensor functions on attention patterns (no widgets, no I/O).

They run on whatever device the patterns live on, so only small results
(thumbnails, one head) ever leave a GPU.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

THUMBNAIL_SIZE = 32


def pattern_thumbnails(patterns: list[torch.Tensor], size: int = THUMBNAIL_SIZE) -> torch.Tensor:
    """Downsample per-layer patterns ``[heads, query, key]`` to ``[layers, heads, s, s]``.

    Max-pooling, not averaging: a sharp previous-token diagonal or induction
    stripe one token wide must survive a 1024 -> 32 reduction, where a mean
    would fade it to 1/32. ``s = min(size, seq)``. NaN stays NaN.
    """
    if not patterns:
        raise ValueError("expected at least one layer of patterns, got none")
    out = []
    for layer in patterns:
        if layer.ndim != 3:
            raise ValueError(f"expected each layer as [heads, query, key], got shape {list(layer.shape)}")
        s_q, s_k = min(size, layer.shape[1]), min(size, layer.shape[2])
        pooled = F.adaptive_max_pool2d(layer.float(), (s_q, s_k))
        nan = torch.isnan(layer.float()).any(dim=(1, 2))  # max-pool may drop NaN: keep broken heads visible
        if bool(nan.any()):
            pooled[nan] = torch.nan
        out.append(pooled)
    return torch.stack(out)


def check_patterns(attention: torch.Tensor, n_tokens: int | None = None) -> torch.Tensor:
    """Validate user-supplied patterns and return them as ``[layers, heads, query, key]``.

    Accepts CircuitsVis's ``[heads, query, key]`` (one layer) or ``[layers, heads, query, key]``.
    """
    if attention.ndim == 3:
        attention = attention[None]
    if attention.ndim != 4:
        raise ValueError(
            "expected attention of shape [heads, query, key] or [layers, heads, query, key], "
            f"got shape {list(attention.shape)}"
        )
    if not attention.dtype.is_floating_point:
        raise TypeError(f"expected floating-point attention weights, got dtype {attention.dtype}")
    _, heads, queries, keys = attention.shape
    if heads == 0 or queries == 0:
        raise ValueError(f"attention has no heads or no positions: shape {list(attention.shape)}")
    if queries != keys:
        raise ValueError(f"expected square patterns (query == key positions), got {queries} queries and {keys} keys")
    if n_tokens is not None and n_tokens != keys:
        raise ValueError(f"attention covers {keys} positions but {n_tokens} tokens were given")
    return attention
