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
is refused up front, by name.

The vocabulary projection is the expensive part (``rows x seq x d_vocab`` logits: 2.7 GB at
gpt2's 13 x 1024 x 50257 in float32), so it runs in chunks of positions and keeps only what a
view shows: the top-k tokens with their probabilities, and one target token's probability
and rank, per cell. Everything stays on the model's device. The check of the last row costs what
``model(prompt)`` costs: the forward pass produces its ``seq x d_vocab`` logits once, and they are
compared chunk by chunk, then dropped.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ..capture.adapter import ModelAdapter
from ..capture.inputs import check_text

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


def residual_streams(adapter: ModelAdapter, tokens: torch.Tensor, *, check: bool = True) -> torch.Tensor:
    """The residual stream ``[n_layers + 1, seq, d_model]`` of batch item 0, on the model's device.

    Small next to the logits (13 x 1024 x 768 floats = 40 MB for gpt2): kept so a new target
    can be read off without running the model again. With ``check`` (the default) the forward
    pass runs on to the model's logits and :func:`check_last_row` compares them with the lens's
    last row, so a lens never shows a "model output" that is not the model's output.
    """
    names = lens_hooks(adapter.n_layers)
    rows: list[torch.Tensor | None] = [None] * len(names)

    def keep(index: int, resid: torch.Tensor) -> None:
        rows[index] = resid[0].detach().clone()

    if not check:
        adapter.each_activation(tokens, names, keep)
        return torch.stack([r for r in rows if r is not None])
    check_readout(adapter, "the logit lens")
    logits = adapter.run_to_logits(tokens, names, keep)
    resid = torch.stack([r for r in rows if r is not None])
    check_last_row(adapter, resid[-1], logits[0])
    return resid


# Modules some bridges mount between the last residual stream and the logits, which ln_final -> unembed
# would skip (the same list TransformerLens 4.3's own logit lens refuses): OPT-350m's project_out,
# BERT-style heads, DeepSeek-V4's hc_head, BD3LM's sigma_map, AST's classifier norm.
READOUT_TRANSFORM_COMPONENTS = ("project_out", "mlm_head", "prediction_head", "hc_head", "sigma_map", "classifier_ln")


def check_readout(adapter: ModelAdapter, what: str) -> None:
    """Refuse, by name, a model whose logits are not ``transform(unembed(ln_final(last hook_resid_post)))``."""
    model = adapter.model
    modules = getattr(model, "_modules", None) or {}
    mounted = [name for name in READOUT_TRANSFORM_COMPONENTS if name in modules]
    if mounted:
        raise ValueError(
            f"{what} reads the residual stream through the model's ln_final and unembed, but this "
            f"{type(model).__qualname__} has {', '.join(mounted)} on the way from its last residual stream to its "
            "logits, which that path would skip: this architecture's readout is not supported"
        )
    for layer, block in enumerate(getattr(model, "blocks", None) or []):
        if getattr(block, "hook_out_is_single_residual_stream", True) is False:
            raise ValueError(
                f"{what} needs one residual stream [batch, position, d_model] per block, but blocks.{layer} "
                f"({type(block).__name__}) carries several that the model combines before ln_final: "
                "this architecture's residual stream is not supported"
            )


def last_row_tolerance(dtype: torch.dtype) -> float:
    """Largest difference in probability allowed between the lens's last row and the model's output.

    The same modules on the same vector differ only by rounding: ~1e-7 in float32. Half precision
    and TF32 matmuls (``torch.set_float32_matmul_precision`` below "highest") round far more.
    """
    if dtype in (torch.float32, torch.float64) and torch.get_float32_matmul_precision() == "highest":
        return 1e-4
    return 2e-2


def check_last_row(
    adapter: ModelAdapter, resid: torch.Tensor, logits: torch.Tensor, chunk_elements: int = DEFAULT_CHUNK_ELEMENTS
) -> None:
    """Raise unless ``softmax(unembed(resid))`` equals ``softmax(logits)`` at every position.

    ``resid [seq, d_model]`` is the last block's output and ``logits [seq, d_vocab]`` what the model
    returned on the same run; compared in chunks of positions, like the lens itself.
    """
    unembed = model_unembed(adapter)
    seq = int(resid.shape[0])
    if tuple(logits.shape[:1]) != (seq,):
        raise RuntimeError(f"the model returned logits of shape {list(logits.shape)} for a {seq}-token run")
    tol = last_row_tolerance(logits.dtype)
    step = max(1, chunk_elements // max(1, int(logits.shape[-1])))
    worst, where = 0.0, 0
    with torch.no_grad():
        for start in range(0, seq, step):
            stop = min(seq, start + step)
            try:
                ours = unembed(resid[start:stop])
            except RuntimeError as exc:
                raise RuntimeError(
                    f"the logit lens reads the last residual stream through the model's ln_final and unembed, and "
                    f"that failed on this model ({exc}): its readout is not one the lens reproduces"
                ) from exc
            if ours.shape != logits[start:stop].shape:
                raise RuntimeError(
                    f"the logit lens reads the last residual stream through ln_final and unembed into logits of shape "
                    f"{list(ours.shape)}, but the model returned {list(logits[start:stop].shape)} for those positions: "
                    "its readout is not one the lens reproduces"
                )
            diff = (ours.float().softmax(-1) - logits[start:stop].float().softmax(-1)).abs().amax(-1)
            diff = torch.nan_to_num(diff, nan=float("inf"))
            top = float(diff.max())
            if top > worst:
                worst, where = top, start + int(diff.argmax())
    if not worst <= tol:
        cap = adapter.logit_softcap
        applied = "ln_final, unembed and post-unembedding step" + (f" (soft cap {cap:g})" if cap is not None else "")
        raise RuntimeError(
            f"the logit lens's last row (the last residual stream through the model's {applied}) differs from the "
            f"model's own output by up to {worst:.3g} in probability at position {where} (expected at most {tol:g}): "
            "this model does something between its last residual stream and its logits that the lens does not "
            "reproduce, so no row of it would be the prediction it claims to be"
        )


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
    """

    def unembed(resid: torch.Tensor) -> torch.Tensor:
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
        raise TypeError(
            f"{what} must be a string of one token or a token id (int), got {type(value).__name__}: {value!r}"
        )
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
    check_text(value, what)
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
