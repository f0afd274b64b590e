"""A running histogram of many units' positive activations, in bounded memory, without a first pass.

Each unit gets ``bins`` equal bins on ``[0, hi)``, where ``hi`` is a power of two that starts at
the first value seen and doubles when a larger one comes. Doubling merges pairs of neighbouring
bins, which is exact (bin ``j`` of ``[0, hi)`` lies inside bin ``j // 2`` of ``[0, 2 hi)``), so
the result equals a histogram of all values on the final range, computed in one streamed pass.
"""

from __future__ import annotations

import torch


class RunningHistogram:
    """``counts [n_units, bins]`` of the positive values seen per unit, on ``[0, hi[unit])``.

    ``update(values [..., n_units])`` once per batch (zeros and negatives are not counted: for
    sparse features they mean "did not fire"); ``bins`` must be a power of two.
    """

    def __init__(self, n_units: int, bins: int = 32, device: torch.device | str = "cpu") -> None:
        if n_units < 1:
            raise ValueError(f"n_units must be at least 1, got {n_units}")
        if bins < 2 or bins & (bins - 1):
            raise ValueError(f"bins must be a power of two >= 2, got {bins}")
        self.n_units, self.bins = int(n_units), int(bins)
        self.counts = torch.zeros((self.n_units, self.bins), dtype=torch.long, device=device)
        self.hi = torch.zeros(self.n_units, device=device)  # 0 until the unit's first positive value

    def update(self, values: torch.Tensor) -> None:
        if values.shape[-1] != self.n_units:
            raise ValueError(f"expected values [..., {self.n_units}], got shape {list(values.shape)}")
        v = values.detach().reshape(-1, self.n_units).float()
        v = torch.where(torch.isfinite(v), v, torch.zeros((), device=v.device))
        self._grow(v.max(0).values)
        rows, units = torch.nonzero(v > 0, as_tuple=True)
        if units.numel() == 0:
            return
        x = v[rows, units]
        index = (x / self.hi[units] * self.bins).long().clamp_(0, self.bins - 1)
        self.counts.view(-1).index_add_(0, units * self.bins + index, torch.ones_like(index))

    def edges(self, unit: int) -> tuple[float, float]:
        """``(lo, hi)`` of ``unit``'s bins (``(0, 0)`` before it has a positive value)."""
        return 0.0, float(self.hi[unit])

    def _grow(self, batch_max: torch.Tensor) -> None:
        """Raise ``hi`` to a power of two above ``batch_max`` where needed, merging bins to match."""
        need = batch_max >= self.hi
        need &= batch_max > 0
        if not bool(need.any()):
            return
        target = torch.exp2(torch.floor(torch.log2(batch_max[need])) + 1)
        old = self.hi[need]
        fresh = old == 0
        shifts = (
            torch.where(fresh, torch.zeros_like(old), torch.log2(target / torch.where(fresh, target, old)))
            .round()
            .long()
        )
        units = torch.nonzero(need, as_tuple=True)[0]
        for shift in torch.unique(shifts).tolist():
            if shift == 0:
                continue
            chosen = units[shifts == shift]
            counts = self.counts[chosen]
            if (1 << shift) >= self.bins:
                merged = torch.zeros_like(counts)
                merged[:, 0] = counts.sum(1)
            else:
                group = 1 << shift
                merged = torch.zeros_like(counts)
                merged[:, : self.bins // group] = counts.view(len(chosen), self.bins // group, group).sum(-1)
            self.counts[chosen] = merged
        self.hi[units] = target
