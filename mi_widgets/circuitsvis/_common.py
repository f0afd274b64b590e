"""Shared conversions for the CircuitsVis drop-in."""

from __future__ import annotations

from typing import Any

import torch

from ..capture.arrays import as_float_tensor


def data_range(values: torch.Tensor) -> tuple[float, float]:
    """CircuitsVis's default colour range, ``min(values)..max(values)``, widened to include 0 when it is empty."""
    lo, hi = float(values.min()), float(values.max())
    if not lo < hi:
        lo, hi = min(lo, 0.0), max(hi, 0.0)
    if not lo < hi:
        lo, hi = 0.0, 1.0
    return lo, hi


def floats(value: Any, name: str) -> torch.Tensor:
    return as_float_tensor(value, name)
