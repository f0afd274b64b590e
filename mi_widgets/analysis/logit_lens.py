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

The vocabulary projection is the expensive part (``rows x seq x d_vocab`` logits: 2.7 GB at
gpt2's 13 x 1024 x 50257 in float32), so it runs in chunks of positions and keeps only what a
view shows: the top-k tokens with their probabilities, and one target token's probability
and rank, per cell. Everything stays on the model's device.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch

from ..capture.adapter import ModelAdapter, model_lock

RESID_PRE = "blocks.{layer}.hook_resid_pre"
RESID_POST = "blocks.{layer}.hook_resid_post"

# Logits held at once: 2**24 float32 = 64 MiB (~330 positions of a 50k vocabulary).
DEFAULT_CHUNK_ELEMENTS = 1 << 24


@dataclass(frozen=True)
class LensResult:
    """Per cell ``[rows, seq]`` of the lens: top-k tokens and, with a target, its probability and rank."""

    top_ids: torch.Tensor  # [rows, seq, k] int64
    top_probs: torch.Tensor  # [rows, seq, k] float32, descending
    target_probs: torch.Tensor | None  # [rows, seq] float32
    target_ranks: torch.Tensor | None  # [rows, seq] int64, 1 = the most likely token


def lens_hooks(n_layers: int) -> list[str]:
    """The residual stream before every block, then after the last: ``n_layers + 1`` hook names."""
    if n_layers < 1:
        raise ValueError(f"expected a model with at least one layer, got n_layers={n_layers}")
    return [RESID_PRE.format(layer=l) for l in range(n_layers)] + [RESID_POST.format(layer=n_layers - 1)]


def lens_row_labels(n_layers: int) -> list[str]:
    """Row names: ``embed`` (before block 0), then ``L{l} out`` (after block ``l``)."""
    return ["embed"] + [f"L{l} out" for l in range(n_layers)]


def residual_streams(adapter: ModelAdapter, tokens: torch.Tensor) -> torch.Tensor:
    """The residual stream ``[n_layers + 1, seq, d_model]`` of batch item 0, on the model's device.

    Small next to the logits (13 x 1024 x 768 floats = 40 MB for gpt2): kept so a new target
    can be read off without running the model again.
    """
    names = lens_hooks(adapter.n_layers)
    rows: list[torch.Tensor | None] = [None] * len(names)

    def keep(index: int, resid: torch.Tensor) -> None:
        rows[index] = resid[0].detach().clone()

    adapter.each_activation(tokens, names, keep)
    return torch.stack([r for r in rows if r is not None])


def logit_lens(
    unembed: Callable[[torch.Tensor], torch.Tensor],
    resid: torch.Tensor,
    *,
    k: int = 5,
    target: int | None = None,
    chunk_elements: int = DEFAULT_CHUNK_ELEMENTS,
    on_row: Callable[[int], None] | None = None,
) -> LensResult:
    """Top-``k`` next-token predictions and the ``target``'s probability and rank per cell.

    ``unembed`` maps residual vectors ``[n, d_model]`` to logits ``[n, d_vocab]`` (the model's
    own final norm and unembedding, e.g. :meth:`ModelAdapter.unembed`); ``resid`` is
    ``[rows, seq, d_model]``. At most ``chunk_elements`` logits exist at a time. ``k=0`` skips
    the top-k (when only the target changed). ``on_row(row)`` runs after each row (progress,
    cancellation).
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
                logprobs = torch.log_softmax(unembed(resid[row, start:stop]).float(), dim=-1)
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


def model_unembed(adapter: ModelAdapter) -> Callable[[torch.Tensor], torch.Tensor]:
    """``[n, d_model] -> [n, d_vocab]`` through the model's own final norm and unembedding.

    TransformerLens 2.x modules want a batch axis, so vectors go in as one batch of ``n`` positions.
    Each call holds the model's lock, so no other view's hooks fire on these vectors.
    """

    def unembed(resid: torch.Tensor) -> torch.Tensor:
        with model_lock(adapter.model):
            return adapter.unembed(resid[None])[0]

    return unembed


def single_token_id(adapter: ModelAdapter, value: Any, what: str = "target") -> int:
    """The token id of ``value``: an id (int) or a string that must tokenize to exactly one token.

    Strings are tokenized without a BOS, as they would appear after a prompt, so a leading space
    matters (``" Mary"`` vs ``"Mary"``).
    """
    d_vocab = getattr(adapter.cfg, "d_vocab", None)
    if isinstance(value, torch.Tensor) and value.numel() == 1 and not value.dtype.is_floating_point:
        value = int(value.item())
    elif not isinstance(value, (str, bool)) and hasattr(value, "__index__"):  # numpy integers
        value = int(value.__index__())
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise TypeError(f"{what} must be a string of one token or a token id (int), got {type(value).__name__}: {value!r}")
    if isinstance(value, int):
        if value < 0 or (d_vocab is not None and value >= int(d_vocab)):
            top = f"0..{int(d_vocab) - 1}" if d_vocab is not None else ">= 0"
            raise ValueError(f"{what} token id must be in {top}, got {value}")
        return value
    if value == "":
        raise ValueError(f"{what} is an empty string: expected text that is exactly one token, or a token id")
    if not adapter.has_tokenizer:
        raise ValueError(
            f"this model has no tokenizer, so {what} {value!r} cannot be turned into a token: pass its token id (an int)"
        )
    ids = adapter.model.to_tokens(value, prepend_bos=False, truncate=False)[0]
    if ids.numel() != 1:
        pieces = adapter.token_labels(ids)
        raise ValueError(
            f"{what} {value!r} tokenizes to {ids.numel()} tokens {pieces}: expected exactly one token "
            "(try it with or without a leading space, or pass a token id)"
        )
    return int(ids[0])


def token_strings(adapter: ModelAdapter, ids: Sequence[int] | torch.Tensor) -> list[str]:
    """Readable labels of token ids (``<id>`` without a tokenizer)."""
    ids = torch.as_tensor(ids, dtype=torch.long).reshape(-1)
    if ids.numel() == 0:
        return []
    return adapter.token_labels(ids)
