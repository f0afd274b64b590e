"""The toy model of "Toy Models of Superposition" (Elhage et al. 2022), batched over instances.

``n`` features, each zero with probability ``sparsity`` and otherwise uniform in [0, 1], are
squeezed into ``m < n`` hidden dimensions and read back out: ``h = W x``, ``x' = ReLU(W^T h + b)``
with ``W`` of shape ``[m, n]``. The loss weights feature ``i``'s squared error by its importance
(``decay ** i``). Dense features give ``m`` dedicated directions and ignore the rest; sparse
ones are packed into superposition (5 features in 2 dimensions become a pentagon).

Several independent models ("instances"), one per sparsity value, train as one batched model,
so a side-by-side comparison costs one optimiser. Everything runs on the device it is given.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn


def check_toy_settings(
    n_features: int, n_hidden: int, sparsity: Sequence[float], importance_decay: float
) -> list[float]:
    """Validate the toy's shape and settings; returns the sparsities as floats (one per instance)."""
    for name, value in (("n_features", n_features), ("n_hidden", n_hidden)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    values = [sparsity] if isinstance(sparsity, (int, float)) else list(sparsity)
    if not values:
        raise ValueError("sparsity is empty: give one value in [0, 1) per model to train, e.g. [0.0, 0.7, 0.9]")
    out = []
    for s in values:
        if isinstance(s, bool) or not isinstance(s, (int, float)) or not math.isfinite(s) or not 0 <= s < 1:
            raise ValueError(f"sparsity values must be in [0, 1) (the probability that a feature is zero), got {s!r}")
        out.append(float(s))
    d = importance_decay
    if isinstance(d, bool) or not isinstance(d, (int, float)) or not math.isfinite(d) or not 0 < d <= 1:
        raise ValueError(f"importance_decay must be in (0, 1] (feature i has importance decay**i), got {d!r}")
    return out


def feature_importance(n_features: int, decay: float, device: torch.device | str = "cpu") -> torch.Tensor:
    """``[n]``: importance ``decay ** i`` of feature ``i``."""
    return decay ** torch.arange(n_features, dtype=torch.float32, device=device)


def sample_features(
    batch: int, sparsity: torch.Tensor, n_features: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """``[batch, instances, n]`` synthetic inputs: each feature is 0 with its instance's ``sparsity``, else U[0, 1]."""
    shape = (batch, sparsity.shape[0], n_features)
    device = sparsity.device
    values = torch.rand(shape, generator=generator, device=device)
    present = torch.rand(shape, generator=generator, device=device) >= sparsity[None, :, None]
    return values * present


class ToyModel(nn.Module):
    """``instances`` independent ReLU output models, ``W: [instances, m, n]``, ``b: [instances, n]``."""

    def __init__(
        self,
        instances: int,
        n_features: int,
        n_hidden: int,
        generator: torch.Generator | None = None,
        device: torch.device | str = "cpu",
    ) -> None:
        super().__init__()
        bound = math.sqrt(6 / (n_features + n_hidden))  # Xavier-uniform, as in the paper's code
        w = (torch.rand((instances, n_hidden, n_features), generator=generator, device=device) * 2 - 1) * bound
        self.W = nn.Parameter(w)
        self.b = nn.Parameter(torch.zeros((instances, n_features), device=device))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x: [batch, instances, n]`` -> reconstruction ``[batch, instances, n]``."""
        hidden = torch.einsum("imn,bin->bim", self.W, x)
        return torch.relu(torch.einsum("imn,bim->bin", self.W, hidden) + self.b)


def toy_loss(model: ToyModel, x: torch.Tensor, importance: torch.Tensor) -> torch.Tensor:
    """``[instances]``: importance-weighted squared error, summed over features, averaged over the batch."""
    err = (model(x) - x) ** 2 * importance
    return err.sum(-1).mean(0)


def feature_dimensionality(W: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """``[..., n]``: how many dimensions each feature gets, ``||W_i||^2 / sum_j (W_i_hat . W_j)^2``.

    1 for a feature with a dedicated direction, 1/2 for an antipodal pair, 2/5 in a pentagon,
    0 for a feature that is not represented. ``W`` is ``[..., m, n]`` (features are columns).
    """
    norms_sq = (W**2).sum(-2)
    unit = W / (norms_sq.sqrt()[..., None, :] + eps)
    overlaps = torch.einsum("...mi,...mj->...ij", unit, W) ** 2
    return norms_sq / (overlaps.sum(-1) + eps)
