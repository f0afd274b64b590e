"""Arrays a user already has (from nnsight, Hugging Face, a TransformerLens cache), checked for the views.

The array paths (``ActivationView.from_activations``, ``AttentionView.from_patterns``, ``mi_widgets.circuitsvis``)
take what CircuitsVis takes: torch tensors (any device; they stay there), numpy arrays and nested lists. Bad input
gets an error that says what was expected and what came.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from .inputs import visible_texts


def as_float_tensor(value: Any, name: str) -> torch.Tensor:
    """``value`` (tensor, numpy array, nested list of numbers) as a floating-point tensor; integers and bools become
    float32, bfloat16 stays (the views convert when they encode). A tensor keeps its device."""
    if isinstance(value, torch.Tensor):
        tensor = value.detach()
    elif isinstance(value, np.ndarray):
        if value.dtype.kind not in "biuf":
            raise TypeError(f"{name} must hold numbers, got a numpy array of dtype {value.dtype}")
        tensor = torch.from_numpy(np.ascontiguousarray(value))
    elif isinstance(value, (list, tuple)):
        try:
            array = np.asarray(value)
        except ValueError as exc:  # ragged
            raise ValueError(f"{name} must be a rectangular nested list of numbers: {exc}") from None
        if array.dtype == object:
            raise ValueError(f"{name} must be a rectangular nested list of numbers (rows of equal length)")
        if array.dtype.kind not in "biuf":
            raise TypeError(f"{name} must hold numbers, got {array.dtype} values such as {array.reshape(-1)[:1]}")
        tensor = torch.from_numpy(array)
    else:
        raise TypeError(
            f"{name} must be a torch.Tensor, a numpy array or a nested list of numbers, got {type(value).__name__}"
        )
    if tensor.is_meta:
        raise ValueError(f"{name} is on the meta device and holds no values: expected a tensor with data")
    if tensor.dtype.is_complex:
        raise TypeError(f"{name} must hold real numbers, got dtype {tensor.dtype}")
    if not tensor.dtype.is_floating_point:
        tensor = tensor.to(torch.float32)
    return tensor


def check_finite(tensor: torch.Tensor, name: str, axes: Sequence[str]) -> None:
    """Refuse NaN/inf, naming the first one's position along ``axes`` and how many there are."""
    bad = ~torch.isfinite(tensor)
    if bool(bad.any()):
        where = [int(i) for i in bad.nonzero()[0]]
        position = ", ".join(f"{axis} {i}" for axis, i in zip(axes, where))
        value = float(tensor[tuple(where)])
        raise ValueError(
            f"{name} at {position} is {value} ({int(bad.sum())} non-finite value(s)): expected finite numbers"
        )


def token_list(tokens: Any, name: str = "tokens") -> list[str]:
    """One prompt's token labels (a list of strings), as sendable strings."""
    if isinstance(tokens, str) or not isinstance(tokens, (Sequence, np.ndarray)):
        raise TypeError(f"{name} must be a list of strings (one per token), got {type(tokens).__name__}")
    bad = [t for t in tokens if not isinstance(t, str)]
    if bad:
        raise TypeError(f"{name} must be strings, got {type(bad[0]).__name__} {bad[0]!r}")
    return visible_texts(list(tokens))


def is_token_list(tokens: Any) -> bool:
    """True for one prompt's tokens (``["A", " person"]``), False for several (``[["A"], ["B"]]``)."""
    return isinstance(tokens, Sequence) and not isinstance(tokens, str) and all(isinstance(t, str) for t in tokens)


def labels(value: Any, n: int, name: str, what: str) -> list[str]:
    """``n`` labels (strings, or numbers shown as text), or [] for None."""
    if value is None:
        return []
    if isinstance(value, str) or not isinstance(value, (Sequence, np.ndarray)):
        raise TypeError(f"{name} must be a list of {n} strings ({what}), got {type(value).__name__}")
    if len(value) != n:
        raise ValueError(f"{name} must have {n} entries ({what}), got {len(value)}")
    return visible_texts([str(v) for v in value])
