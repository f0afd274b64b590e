"""Per-token activations read through one unit or one direction (ActivationView's maths).

A *unit* is one coordinate of a hooked space (an MLP neuron for ``mlp.post``, one residual
dimension for ``resid_post``); a *direction* is any vector of that space (a probe, an SAE
decoder row, a difference of means), read as the plain dot product ``acts @ direction`` —
**not normalised**, so a unit-norm direction gives the projection length and a probe's own
weights give its logit. Everything here is pure tensor maths on whatever device the
activations live on; nothing is moved to the CPU.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from typing import Any

import torch

# Hooks whose activations are not one vector per token (``[batch, heads, query, key]``).
_NOT_PER_TOKEN = ("hook_pattern", "hook_attn_scores")


def check_per_token_hook(hook: str) -> str:
    """Refuse hooks that are per (query, key) pair, not per token (attention patterns and scores)."""
    if hook.endswith(_NOT_PER_TOKEN):
        raise ValueError(
            f"{hook} holds one value per (head, query, key), not one vector per token; pick a per-token hook "
            "such as 'mlp.post', 'resid_post', 'attn_out' or 'z'"
        )
    return hook


def per_token(activation: torch.Tensor, seq: int, hook: str = "activation") -> torch.Tensor:
    """``[batch, seq, ...]`` -> ``[batch, seq, d]``: trailing axes (e.g. ``hook_z``'s heads x d_head) flattened."""
    check_per_token_hook(hook)
    if activation.ndim < 3 or activation.shape[1] != seq:
        raise ValueError(
            f"expected {hook} as [batch, seq={seq}, d] (or [batch, seq, heads, d_head]), got shape {list(activation.shape)}"
        )
    return activation.reshape(*activation.shape[:2], -1)


def check_neuron(neuron: Any, d: int) -> int:
    """``neuron`` as an ``int`` in ``0..d-1``, or an error naming the valid range."""
    if isinstance(neuron, bool):
        raise TypeError(f"neuron must be an integer in 0..{d - 1}, got {neuron!r}")
    try:
        index = operator.index(neuron)
    except TypeError:
        raise TypeError(f"neuron must be an integer in 0..{d - 1}, got {neuron!r}") from None
    if not 0 <= index < d:
        raise IndexError(f"neuron must be in 0..{d - 1}, got {index}")
    return index


def check_direction(direction: Any, d: int, device: torch.device | str | None = None) -> torch.Tensor:
    """A direction ``[d]`` as float32 on ``device``; refuses other widths and NaN/inf."""
    if isinstance(direction, torch.Tensor):
        vector = direction.detach()
    else:
        try:
            vector = torch.as_tensor(direction)
        except (TypeError, ValueError, RuntimeError) as exc:
            raise TypeError(f"direction must be a [d={d}] tensor, got {type(direction).__name__}: {exc}") from None
    if vector.dtype == torch.bool or vector.dtype.is_complex:
        raise TypeError(f"direction must hold real numbers, got dtype {vector.dtype}")
    if vector.ndim == 2 and 1 in vector.shape:  # a [1, d] or [d, 1] probe weight
        vector = vector.reshape(-1)
    if vector.ndim != 1 or vector.shape[0] != d:
        raise ValueError(
            f"direction must have shape [{d}] (the width of the hooked activations), got shape {list(vector.shape)}"
        )
    vector = vector.to(device=device, dtype=torch.float32)
    if not bool(torch.isfinite(vector).all()):
        bad = int((~torch.isfinite(vector)).sum())
        raise ValueError(f"direction has {bad} NaN/inf entr{'y' if bad == 1 else 'ies'}: expected finite numbers")
    return vector


def unit_values(acts: torch.Tensor, neuron: int | None = None, direction: torch.Tensor | None = None) -> torch.Tensor:
    """Values of one unit or one direction: ``acts [..., d]`` -> ``[...]`` in float32, on ``acts``' device.

    Give exactly one of ``neuron`` (an index along ``d``) or ``direction`` (a ``[d]`` vector; the
    value is ``acts @ direction``, not normalised).
    """
    if acts.ndim < 1:
        raise ValueError("expected activations [..., d], got a scalar")
    d = int(acts.shape[-1])
    if (neuron is None) == (direction is None):
        raise ValueError("give exactly one of neuron (an index) or direction (a [d] vector)")
    if direction is None:
        return acts[..., check_neuron(neuron, d)].to(torch.float32)
    vector = check_direction(direction, d, acts.device)
    return acts.to(torch.float32) @ vector


def top_units(acts_at_position: torch.Tensor, k: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` most active units of one vector ``[d]``: ``(values, indices)``, largest value first.

    Ranked by signed value (what "most active" means for a neuron); ``k`` larger than ``d`` gives ``d``.
    """
    if acts_at_position.ndim != 1:
        raise ValueError(f"expected the activations at one position as [d], got shape {list(acts_at_position.shape)}")
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    values, indices = torch.topk(acts_at_position.to(torch.float32), min(k, int(acts_at_position.shape[0])))
    return values, indices


def symmetric_range(values: Sequence[torch.Tensor]) -> float:
    """``max |value|`` over all finite entries of all tensors (0.0 when there are none): the colour scale's half-width."""
    flat = torch.cat([v.reshape(-1).to(torch.float32) for v in values]) if values else torch.zeros(0)
    magnitude = torch.where(torch.isfinite(flat), flat.abs(), torch.zeros_like(flat))
    return float(magnitude.max()) if magnitude.numel() else 0.0  # one reduction, one device sync


def activation_nbytes(n_tokens: int, n_layers: int, d: int, dtype: torch.dtype = torch.float32) -> int:
    """Bytes needed to keep ``[layers, tokens, d]`` activations: ``tokens x layers x d x itemsize``.

    gpt2-small ``mlp.post`` (d = 3072) over 1024 tokens and 12 layers in float32 is 151 MB.
    """
    itemsize = torch.empty((), dtype=dtype).element_size()
    return int(n_tokens) * int(n_layers) * int(d) * itemsize
