"""Q-, K- and V-composition between heads of different layers (Elhage et al. 2021).

TransformerLens computes them (``all_composition_scores``, 2.x and 4.x alike); this wrapper
checks the mode, detaches the result (it carries grad) and keeps it on the model's device.
Score ``[l1, h1, l2, h2]`` is how much head ``(l2, h2)`` reads, through its queries, keys or
values, what head ``(l1, h1)`` writes: ``||W_OV^{l1h1} W^{l2h2}|| / (||W_OV|| ||W||)``; it is
0 unless ``l1 < l2``.
"""

from __future__ import annotations

from typing import Any

import torch

COMPOSITION_MODES: tuple[str, ...] = ("Q", "K", "V")


def composition_scores(model: Any, mode: str = "K") -> torch.Tensor:
    """Composition scores ``[layers, heads, layers, heads]`` of one mode (``"Q"``, ``"K"`` or ``"V"``)."""
    if mode not in COMPOSITION_MODES:
        raise ValueError(f"mode must be one of {', '.join(COMPOSITION_MODES)}, got {mode!r}")
    compute = getattr(model, "all_composition_scores", None)
    if not callable(compute):
        raise TypeError(
            "expected a TransformerLens model with all_composition_scores (TransformerBridge or "
            f"HookedTransformer), got {type(model).__qualname__}"
        )
    with torch.no_grad():
        return compute(mode).detach()
