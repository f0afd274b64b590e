"""Pure tensor functions on attention patterns (no widgets, no I/O).

They run on whatever device the patterns live on, so only small results
(thumbnails, one head) ever leave a GPU.
"""

from __future__ import annotations

import math
import warnings

import torch
import torch.nn.functional as F

THUMBNAIL_SIZE = 32
FLOAT16_MAX = 65504.0  # one head's pattern travels to the view as float16


def pool_max(values: torch.Tensor, factor: int, *, signed: bool = False) -> torch.Tensor:
    """Max-pool the last two dimensions ``[..., rows, cols]`` of ``values`` by ``factor``, on their device.

    Partial blocks at the bottom and right edges pool over what they hold. NaN stays NaN (``amax`` keeps it: a
    broken block shows). ``signed``: each block keeps its value of largest magnitude, sign and all. Rows are
    reduced first (an elementwise max of ``factor`` contiguous rows), then columns on ``1 / factor`` of the data:
    2x faster than the other order on a 4096-token head.
    """
    if factor < 1:
        raise ValueError(f"pooling factor must be at least 1, got {factor}")
    values = values.float()
    if factor == 1:
        return values
    *lead, rows, cols = values.shape
    pr, pc = -(-rows // factor), -(-cols // factor)
    flat = values.reshape(-1, rows, cols)
    if (pr * factor, pc * factor) != (rows, cols):  # repeat the last row/column: the edge blocks' extremes stay
        flat = F.pad(flat[None], (0, pc * factor - cols, 0, pr * factor - rows), mode="replicate")[0]
    down = flat.reshape(-1, pr, factor, pc * factor)
    pooled = down.amax(2).reshape(-1, pr, pc, factor).amax(-1)
    if signed:
        lowest = down.amin(2).reshape(-1, pr, pc, factor).amin(-1)
        pooled = torch.where(-lowest > pooled.abs(), lowest, pooled)
    return pooled.reshape(*lead, pr, pc)


def pattern_thumbnails(
    patterns: list[torch.Tensor], size: int = THUMBNAIL_SIZE, *, signed: bool = False
) -> torch.Tensor:
    """Downsample per-layer patterns ``[heads, query, key]`` to ``[layers, heads, s, s]``.

    Max-pooling, not averaging: a sharp previous-token diagonal or induction
    stripe one token wide must survive a 1024 -> 32 reduction, where a mean
    would fade it to 1/32. ``s = min(size, seq)``. NaN stays NaN. ``signed``: each block keeps its value of
    largest magnitude, sign and all (for scales with negative values).
    """
    if not patterns:
        raise ValueError("expected at least one layer of patterns, got none")
    out = []
    for layer in patterns:
        if layer.ndim != 3:
            raise ValueError(f"expected each layer as [heads, query, key], got shape {list(layer.shape)}")
        heads, q, k = layer.shape
        s_q, s_k = min(size, q), min(size, k)
        values = layer.float()
        if q % s_q == 0 and k % s_k == 0:  # whole blocks: one reshape and amax (which keeps NaN), 3x faster
            blocks = values.reshape(heads, s_q, q // s_q, s_k, k // s_k)
            pooled = blocks.amax(dim=(2, 4))
            if signed:
                lowest = blocks.amin(dim=(2, 4))
                pooled = torch.where(-lowest > pooled.abs(), lowest, pooled)
            pooled[torch.isnan(pooled).any(dim=(1, 2))] = torch.nan  # a broken head shows whole
            out.append(pooled)
            continue
        pooled = F.adaptive_max_pool2d(values, (s_q, s_k))
        if signed:
            lowest = -F.adaptive_max_pool2d(-values, (s_q, s_k))
            pooled = torch.where(-lowest > pooled.abs(), lowest, pooled)
        nan = torch.isnan(values).any(dim=(1, 2))  # max-pool may drop NaN: keep broken heads visible
        if bool(nan.any()):
            pooled[nan] = torch.nan
        out.append(pooled)
    return torch.stack(out)


def check_patterns(
    attention: torch.Tensor,
    n_tokens: int | None = None,
    *,
    finite: bool = True,
    allow_negative: bool = False,
    warn_above: bool = True,
) -> torch.Tensor:
    """Validate user-supplied patterns and return them as ``[layers, heads, query, key]``.

    Accepts CircuitsVis's ``[heads, query, key]`` (one layer) or ``[layers, heads, query, key]``.
    Weights must be non-negative (rows need not sum to 1, as in CircuitsVis); the view's colour
    scale is fixed at 0..1, so larger values are drawn at full colour (a warning says so) and
    values beyond float16 cannot be shown at all. ``finite=False`` lets NaN/inf through, for
    patterns a model computed (``from_cache``): there a non-finite weight is a broken head the
    view must show, not a typo to refuse. ``allow_negative`` lets negative values through (a colour scale that
    goes below zero); ``warn_above=False`` drops the warning above 1 (a scale with its own maximum).
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
    _check_weights(attention, finite, allow_negative, warn_above)
    return attention


def _check_weights(
    attention: torch.Tensor, finite: bool, allow_negative: bool = False, warn_above: bool = True
) -> None:
    """Refuse NaN/inf (when ``finite``), negative and float16-overflowing weights, naming the first one; warn above 1.

    One layer at a time, so the masks stay a layer's size on the patterns' device.
    """
    largest = 0.0
    for layer, weights in enumerate(attention):
        # One pass for the common case (every weight finite and in range): NaN or inf anywhere shows in the
        # min/max, and then the masks below find and name the first bad weight.
        lo, hi = (float(v) for v in torch.aminmax(weights))
        if math.isfinite(lo) and math.isfinite(hi) and (allow_negative or lo >= 0) and max(-lo, hi) <= FLOAT16_MAX:
            largest = max(largest, hi)
            continue
        real = torch.isfinite(weights)
        checks = [(~real, "is not finite", "finite weights")] if finite else []
        if not allow_negative:
            checks.append(
                (
                    real & (weights < 0),
                    "is negative",
                    "non-negative attention weights (rows need not sum to 1; give min_value < 0 for signed values)",
                )
            )
        checks += [
            (
                real & (weights.abs() > FLOAT16_MAX),
                "is too large to show",
                f"weights up to {FLOAT16_MAX:g} (the view gets float16)",
            ),
        ]
        for mask, problem, expected in checks:
            if bool(mask.any()):
                head, query, key = (int(i) for i in mask.nonzero()[0])
                raise ValueError(
                    f"attention weight at layer {layer}, head {head}, query {query}, key {key} {problem} "
                    f"({float(weights[head, query, key]):g}; {int(mask.sum())} such value(s) in layer {layer}): "
                    f"expected {expected}"
                )
        if bool(real.any()):
            largest = max(largest, float(weights[real].max()))
    if warn_above and largest > 1 + 1e-3:
        warnings.warn(
            f"attention weights go up to {largest:g}, but the view's colour scale is 0..1: every value above 1 is "
            "drawn at full colour (hovering a cell shows its value); normalise the patterns to see their shape",
            UserWarning,
            stacklevel=4,
        )
