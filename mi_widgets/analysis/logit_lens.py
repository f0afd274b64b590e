"""The logit lens: read every layer's residual stream as if it were the last one.

This is nostalgebraist's logit lens: the residual stream before each block (and after the
last one) goes through the model's *own* final norm and unembedding, computed afresh for that
vector, and a softmax, so every row is a real next-token distribution and the last row is
exactly the model's output. The other reading, long the default of TransformerLens's
``cache.accumulated_resid(apply_ln=True)`` and still that of ``cache.apply_ln_to_stack`` (with
``recompute_ln=False``), divides every layer's residual by the final norm's scale cached for the
*last* layer (the one the model actually used there), so early layers are scaled as if they had
the final residual's norm. Recent releases (2.18 and 4.3 checked) recompute the final norm per
layer in ``accumulated_resid(apply_ln=True)`` and agree with this lens.

"The model's own" includes what some architectures do after the unembedding: Gemma 2's soft cap
``c * tanh(logits / c)`` (``final_logit_softcapping``), a logit scale (TransformerLens 4.x declares it
on the bridge's architecture adapter; see :meth:`ModelAdapter.logits_transform`). Every lens is
checked on its own run: the last row must reproduce the probabilities the model itself returned
(the forward pass that captures the residual streams runs on to the logits), else the lens raises,
naming the difference, instead of showing a last row that is not the model's output. A model whose
readout has a step the lens does not apply (OPT-350m's ``project_out``, stacked residual streams)
is refused up front, by name. That run and its checks are capture's
(:func:`mi_widgets.capture.readout.checked_logit_lens`, :func:`~mi_widgets.capture.readout.residual_streams`);
this module reads the residual streams it returns, through the ``unembed`` function it is given
(:func:`mi_widgets.capture.readout.model_unembed`), and hands capture the last row's logits to check.

The vocabulary projection is the expensive part (``rows x seq x d_vocab`` logits: 2.7 GB at
gpt2's 13 x 1024 x 50257 in float32), so it runs in chunks of positions and keeps only what a
view shows: the top-k tokens with their probabilities, and one target token's probability
and rank, per cell. Everything stays on the model's device. The check of the last row adds no projection
in :func:`~mi_widgets.capture.readout.checked_logit_lens`: the forward pass's own ``seq x d_vocab``
logits are held until the lens reaches its last row and compared, chunk by chunk, with the logits it
computes there (``on_last_row``). :func:`~mi_widgets.capture.readout.residual_streams` checks before
any lens is read, so it projects the last row through ``ln_final`` and the unembedding once more.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

# Logits held at once: 2**24 float32 = 64 MiB (~330 positions of a 50k vocabulary).
DEFAULT_CHUNK_ELEMENTS = 1 << 24


@dataclass(frozen=True)
class LensResult:
    """Per cell ``[rows, seq]`` of the lens: top-k tokens and, with a target, its probability and rank."""

    top_ids: torch.Tensor  # [rows, seq, k] int64
    top_probs: torch.Tensor  # [rows, seq, k] float32, descending
    target_probs: torch.Tensor | None  # [rows, seq] float32
    target_ranks: torch.Tensor | None  # [rows, seq] int64, 1 = the most likely token


def logit_lens(
    unembed: Callable[[torch.Tensor], torch.Tensor],
    resid: torch.Tensor,
    *,
    k: int = 5,
    target: int | None = None,
    chunk_elements: int = DEFAULT_CHUNK_ELEMENTS,
    on_row: Callable[[int], None] | None = None,
    on_last_row: Callable[[int, torch.Tensor], None] | None = None,
) -> LensResult:
    """Top-``k`` next-token predictions and the ``target``'s probability and rank per cell.

    ``unembed`` maps residual vectors ``[n, d_model]`` to logits ``[n, d_vocab]`` (the model's
    own final norm and unembedding, e.g. :meth:`ModelAdapter.unembed`); ``resid`` is
    ``[rows, seq, d_model]``. At most ``chunk_elements`` logits exist at a time. ``k=0`` skips
    the top-k (when only the target changed). ``on_row(row)`` runs after each row (progress,
    cancellation). ``on_last_row(start, logits)`` gets each chunk of the last row's logits
    (positions ``start..``) before they are dropped: capture checks them against the model's output.
    """
    if resid.ndim != 3:
        raise ValueError(f"expected residual streams as [rows, seq, d_model], got shape {list(resid.shape)}")
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    rows, seq, _ = resid.shape
    device = resid.device
    top_ids = torch.zeros(rows, seq, k, dtype=torch.long, device=device)
    top_probs = torch.zeros(rows, seq, k, dtype=torch.float32, device=device)
    t_probs = torch.zeros(rows, seq, dtype=torch.float32, device=device) if target is not None else None
    t_ranks = torch.zeros(rows, seq, dtype=torch.long, device=device) if target is not None else None
    with torch.no_grad():
        d_vocab = int(unembed(resid[0, :1]).shape[-1])  # one vector: size the chunks by the real vocabulary
        if k > d_vocab:
            raise ValueError(f"k must be at most the vocabulary size {d_vocab}, got {k}")
        if target is not None and not 0 <= target < d_vocab:
            raise ValueError(f"target token id must be in 0..{d_vocab - 1}, got {target}")
        step = max(1, chunk_elements // d_vocab)
        for row in range(rows):
            for start in range(0, seq, step):
                stop = min(seq, start + step)
                logits = unembed(resid[row, start:stop])
                if on_last_row is not None and row == rows - 1:
                    on_last_row(start, logits)
                logprobs = torch.log_softmax(logits.float(), dim=-1)
                del logits
                if k:
                    values, ids = logprobs.topk(k, dim=-1)
                    top_ids[row, start:stop] = ids
                    top_probs[row, start:stop] = values.exp()
                if t_probs is not None and t_ranks is not None:
                    t_logprob = logprobs[:, target]
                    t_probs[row, start:stop] = t_logprob.exp()
                    t_ranks[row, start:stop] = (logprobs > t_logprob[:, None]).sum(-1) + 1
                del logprobs
            if on_row is not None:
                on_row(row)
    return LensResult(top_ids, top_probs, t_probs, t_ranks)
