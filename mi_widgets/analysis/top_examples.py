"""Top-activating examples: a running top-k per neuron over a corpus, in bounded memory.

A scan over a corpus sees ``tokens x neurons`` activations, far too many to keep. Each batch
is reduced on the device to its own top-k per neuron and merged into the running top-k, so
the state stays ``[n_units, k]`` (values and where they occurred) however long the corpus.

Ties are deterministic: among equal values the candidate seen first wins (an earlier
``update``, then a lower batch row, then a lower position), so with windows fed in order the
result equals a stable descending sort of all activations, whatever ``torch.topk`` does with ties.
NaN activations and masked (padding) positions never count; a slot that holds nothing yet has
value ``-inf`` and window/position ``-1``.

The corpus helpers cut token sequences into windows a model can read (at most ``n_ctx`` tokens,
each starting with BOS) and pad rows of different lengths into one batch with a mask.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

EMPTY = -1


class RunningTopK:
    """The ``k`` largest activations of each of ``n_units`` units seen so far, with (window, position).

    ``update(values [batch, seq, n_units], window_ids [batch], mask [batch, seq])`` once per batch;
    ``snapshot()`` gives ``(values, windows, positions)``, each ``[n_units, k]``, sorted by value
    (descending). Memory is O(n_units x k) regardless of how many tokens were seen.
    """

    def __init__(self, n_units: int, k: int, device: torch.device | str = "cpu") -> None:
        if int(n_units) < 1 or int(k) < 1:
            raise ValueError(f"n_units and k must be at least 1, got n_units={n_units} and k={k}")
        self.n_units = int(n_units)
        self.k = int(k)
        self.updates = 0
        shape = (self.n_units, self.k)
        self._state = (
            torch.full(shape, float("-inf"), device=device),
            torch.full(shape, EMPTY, dtype=torch.long, device=device),
            torch.full(shape, EMPTY, dtype=torch.long, device=device),
        )

    def snapshot(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(values, windows, positions)`` ``[n_units, k]`` as of the last finished update (one consistent triple)."""
        return self._state

    @property
    def values(self) -> torch.Tensor:
        return self._state[0]

    @property
    def docs(self) -> torch.Tensor:
        """The window id of each slot ``[n_units, k]`` (the name ``docs`` is kept for existing callers)."""
        return self._state[1]

    @property
    def positions(self) -> torch.Tensor:
        return self._state[2]

    def update(
        self, values: torch.Tensor, window_ids: torch.Tensor | Sequence[int], mask: torch.Tensor | None = None
    ) -> None:
        """Merge one batch's activations ``[batch, seq, n_units]`` of windows ``window_ids [batch]``.

        ``mask [batch, seq]`` (bool, True for real tokens) leaves padding out. Runs on the
        activations' device; only ``[k, n_units]`` candidates per batch outlive the call.
        """
        if values.ndim != 3 or values.shape[-1] != self.n_units:
            raise ValueError(f"expected activations [batch, seq, {self.n_units}], got shape {list(values.shape)}")
        batch, seq, units = values.shape
        device = values.device
        windows = torch.as_tensor(window_ids, device=device)
        if windows.shape != (batch,) or windows.dtype.is_floating_point or windows.dtype == torch.bool:
            raise ValueError(
                f"expected {batch} integer doc ids (window ids, one per batch row), got {windows.dtype} of shape "
                f"{list(windows.shape)}"
            )
        v = values.detach().float()
        invalid = torch.isnan(v)
        if mask is not None:
            if tuple(mask.shape) != (batch, seq):
                raise ValueError(f"expected a mask [batch, seq] = [{batch}, {seq}], got shape {list(mask.shape)}")
            invalid |= ~mask.to(device=device, dtype=torch.bool)[..., None]
        flat = v.masked_fill(invalid, float("-inf")).reshape(batch * seq, units)
        if flat.shape[0] == 0:
            return
        idx, vals = _batch_topk(flat, min(self.k, flat.shape[0]))
        cand_windows = windows.long()[idx // seq]
        cand_pos = idx % seq

        old_v, old_w, old_p = (t.to(device) for t in self._state)
        all_v = torch.cat([old_v.T, vals])  # running first: among ties the earlier candidate wins
        order = torch.sort(all_v, dim=0, descending=True, stable=True).indices[: self.k]
        new_v = all_v.gather(0, order)
        new_w = torch.cat([old_w.T, cand_windows]).gather(0, order)
        new_p = torch.cat([old_p.T, cand_pos]).gather(0, order)
        empty = new_v == float("-inf")
        new_w = new_w.masked_fill(empty, EMPTY)
        new_p = new_p.masked_fill(empty, EMPTY)
        self._state = (new_v.T.contiguous(), new_w.T.contiguous(), new_p.T.contiguous())
        self.updates += 1

    def filled(self) -> torch.Tensor:
        """Number of slots holding an example, per unit ``[n_units]``."""
        return (self._state[1] != EMPTY).sum(-1)


def _batch_topk(flat: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices and values ``[k, units]`` of the ``k`` largest of each column of ``flat [n, units]``,
    ordered by value (descending) then index (ascending); ties at the cut go to the lowest indices.
    """
    top = torch.topk(flat, k, dim=0)
    idx = top.indices
    kth = top.values[-1]
    tied = ((flat >= kth).sum(0) > k).nonzero()[:, 0]  # columns where topk chose among equal values
    if tied.numel():
        idx = idx.clone()
        idx[:, tied] = _first_k(flat[:, tied], k, kth[tied])
    idx = idx.sort(dim=0).values
    vals = flat.gather(0, idx)
    order = torch.sort(vals, dim=0, descending=True, stable=True).indices
    return idx.gather(0, order), vals.gather(0, order)


def _first_k(flat: torch.Tensor, k: int, kth: torch.Tensor) -> torch.Tensor:
    """Indices of all values above ``kth`` plus the earliest ones equal to it, ``k`` per column."""
    above = flat > kth
    equal = flat == kth
    need = k - above.sum(0)
    chosen = above | (equal & (equal.cumsum(0) <= need))
    n = flat.shape[0]
    keys = torch.where(chosen, torch.arange(n, 0, -1, device=flat.device)[:, None], 0)  # distinct for chosen rows
    return torch.topk(keys, k, dim=0).indices


def split_windows(tokens: torch.Tensor, n_ctx: int, bos: int | None) -> list[torch.Tensor]:
    """Cut a 1-D token sequence (without BOS) into windows of at most ``n_ctx`` tokens, each led by ``bos``.

    Every window then looks like what the model was trained on (a BOS, then text), and no
    activation depends on a context the model never saw.
    """
    if tokens.ndim != 1:
        raise ValueError(f"expected a 1-D token sequence, got shape {list(tokens.shape)}")
    room = n_ctx - (bos is not None)
    if room < 1:
        raise ValueError(f"n_ctx={n_ctx} leaves no room for tokens after BOS")
    windows = []
    for start in range(0, int(tokens.shape[0]), room):
        body = tokens[start : start + room]
        windows.append(body if bos is None else torch.cat([body.new_tensor([bos]), body]))
    return windows


def pad_rows(rows: Sequence[torch.Tensor], pad: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad 1-D token rows into ``tokens [batch, longest]`` and ``mask [batch, longest]`` (True = real).

    Right padding is harmless under causal attention: no real position can see the pad tokens.
    """
    if not rows:
        raise ValueError("expected at least one row to pad")
    longest = max(int(r.shape[0]) for r in rows)
    tokens = torch.full((len(rows), longest), pad, dtype=torch.long, device=rows[0].device)
    mask = torch.zeros(len(rows), longest, dtype=torch.bool, device=rows[0].device)
    for i, row in enumerate(rows):
        tokens[i, : row.shape[0]] = row
        mask[i, : row.shape[0]] = True
    return tokens, mask
