"""Streams of activation vectors for training on them: captured from a model over a corpus, or drawn from a tensor.

Both give ``take(n) -> [n, d_in]`` float32 on the training device and count ``epochs``. Only
:class:`ActivationStream` runs the model (through the :class:`~.adapter.ModelAdapter`: one hook,
the forward pass stops there); :class:`TensorStream` samples activations the user already has.
"""

from __future__ import annotations

import torch

from .adapter import ModelAdapter
from .corpus import text_batch


class ActivationStream:
    """Shuffled batches of one hook's per-token activations ``[batch, d_in]``, captured on demand.

    Windows are run ``windows_per_batch`` at a time (cycling over the corpus); padding and the
    BOS position are left out (BOS activations are outliers that would dominate the loss).
    Captured vectors wait in a buffer of about ``buffer_size`` on the device and leave it in a
    random order.
    """

    def __init__(
        self,
        adapter: ModelAdapter,
        hook: str,
        rows: list[torch.Tensor],
        *,
        windows_per_batch: int,
        buffer_size: int,
        generator: torch.Generator,
        device: torch.device,
    ) -> None:
        self._adapter, self._hook, self._rows = adapter, hook, rows
        self._windows = windows_per_batch
        self._buffer_size = buffer_size
        self._generator = generator
        self._device = device
        self._next_row = 0
        self._buffer = torch.zeros((0, 0), device=device)
        self.epochs = 0

    def take(self, n: int) -> torch.Tensor:
        if self._buffer.shape[0] < n:
            self._refill(n)
        out, self._buffer = self._buffer[:n], self._buffer[n:]
        return out

    def _capture(self) -> torch.Tensor:
        start = self._next_row
        rows = self._rows[start : start + self._windows]
        self._next_row = start + len(rows)
        if self._next_row >= len(self._rows):
            self._next_row = 0
            self.epochs += 1
        tokens, mask = text_batch(self._adapter, rows)
        got: list[torch.Tensor] = []
        self._adapter.each_activation(
            tokens.to(self._adapter.device),
            [self._hook],
            lambda _, a: got.append(a.reshape(a.shape[0], a.shape[1], -1)),
        )
        return got[0][mask.to(got[0].device)].float().to(self._device)

    def _refill(self, n: int) -> None:
        parts = [self._buffer] if self._buffer.numel() else []
        have = self._buffer.shape[0] if self._buffer.numel() else 0
        while have < max(n, self._buffer_size):
            more = self._capture()
            parts.append(more)
            have += more.shape[0]
        merged = torch.cat(parts)
        order = torch.randperm(merged.shape[0], generator=self._generator, device="cpu").to(merged.device)
        self._buffer = merged[order]


class TensorStream:
    """Random batches (with replacement) from activations given as a tensor ``[n, d_in]``."""

    def __init__(self, activations: torch.Tensor, generator: torch.Generator, device: torch.device) -> None:
        self._data = activations
        self._generator = generator
        self._device = device
        self.epochs = 0

    def take(self, n: int) -> torch.Tensor:
        index = torch.randint(0, self._data.shape[0], (n,), generator=self._generator)
        return self._data[index.to(self._data.device)].float().to(self._device)
