"""Runs that read the model's output: the logit lens's residual streams, a direct logit attribution's inputs.

Each forward pass runs on to the model's logits, so what a view shows is checked against what the
model returned on that very run: :func:`residual_streams` compares the lens's last row with the
model's output (:func:`check_last_row`), :func:`checked_logit_lens` does so on the lens's own last
row, and :func:`attribution_inputs` hands
:func:`~mi_widgets.analysis.attribution.logit_attribution` the logits, the model's own final norm
and readout of the last residual stream, and the weights to split with. The maths on these
tensors is in :mod:`mi_widgets.analysis.logit_lens` and :mod:`mi_widgets.analysis.attribution`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from ..analysis.attribution import AttributionInputs, FinalNorm
from ..analysis.logit_lens import DEFAULT_CHUNK_ELEMENTS, LensResult, logit_lens
from .adapter import EMBED_HOOK, ModelAdapter
from .inputs import as_index, check_text

RESID_PRE = "blocks.{layer}.hook_resid_pre"
RESID_POST = "blocks.{layer}.hook_resid_post"
Z_HOOK = "blocks.{layer}.attn.hook_z"
MLP_OUT_HOOK = "blocks.{layer}.hook_mlp_out"
ATTN_OUT_HOOK = "blocks.{layer}.hook_attn_out"
RESID_PRE_0 = "blocks.0.hook_resid_pre"


# ----- the logit lens ----------------------------------------------------------------------------


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
    can be read off without running the model again. The forward pass runs on to the model's
    logits and :func:`check_last_row` compares them with the lens's last row, so a lens never
    shows a "model output" that is not the model's output. That check projects the last row onto
    the vocabulary once more; :func:`checked_logit_lens` does the same check on the lens's own
    projection of it instead.
    """
    resid, logits = _lens_run(adapter, tokens)
    check_last_row(adapter, resid[-1], logits)
    return resid


def checked_logit_lens(
    adapter: ModelAdapter,
    tokens: torch.Tensor,
    *,
    k: int = 5,
    target: int | None = None,
    chunk_elements: int = DEFAULT_CHUNK_ELEMENTS,
) -> tuple[torch.Tensor, LensResult]:
    """:func:`residual_streams` and their :func:`~mi_widgets.analysis.logit_lens.logit_lens`, from one run.

    The last row is checked against the model's logits as in :func:`residual_streams`, but on the
    logits the lens computes for that row anyway, so nothing is projected twice.
    """
    resid, logits = _lens_run(adapter, tokens)
    check = _LastRowCheck(adapter, int(resid.shape[1]), logits)
    result = logit_lens(
        check.unembed, resid, k=k, target=target, chunk_elements=chunk_elements, on_last_row=check.compare
    )
    check.finish()
    return resid, result


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
    seq = int(resid.shape[0])
    check = _LastRowCheck(adapter, seq, logits)
    step = max(1, chunk_elements // max(1, int(logits.shape[-1])))
    with torch.no_grad():
        for start in range(0, seq, step):
            check.compare(start, check.unembed(resid[start : start + step]))
    check.finish()


def model_unembed(adapter: ModelAdapter) -> Callable[[torch.Tensor], torch.Tensor]:
    """``[n, d_model] -> [n, d_vocab]`` through the model's own final norm and unembedding.

    TransformerLens 2.x modules want a batch axis, so vectors go in as one batch of ``n`` positions.
    """

    def unembed(resid: torch.Tensor) -> torch.Tensor:
        return adapter.unembed(resid[None])[0]

    return unembed


def _lens_run(adapter: ModelAdapter, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One forward pass on to the logits: the lens's residual streams and the logits ``[seq, d_vocab]`` of item 0."""
    names = lens_hooks(adapter.n_layers)
    rows: list[torch.Tensor | None] = [None] * len(names)

    def keep(index: int, resid: torch.Tensor) -> None:
        rows[index] = resid[0].detach().clone()

    adapter.check_readout("the logit lens")
    logits = adapter.run_to_logits(tokens, names, keep)
    return torch.stack([r for r in rows if r is not None]), logits[0]


class _LastRowCheck:
    """The lens's last row against the model's own logits ``[seq, d_vocab]``, one chunk of positions at a time.

    :meth:`unembed` is the model's readout with its failures named; :meth:`compare` takes the
    logits it gave for positions ``start..``; :meth:`finish` raises on the largest difference.
    """

    def __init__(self, adapter: ModelAdapter, seq: int, logits: torch.Tensor) -> None:
        if tuple(logits.shape[:1]) != (seq,):
            raise RuntimeError(f"the model returned logits of shape {list(logits.shape)} for a {seq}-token run")
        self._adapter = adapter
        self._unembed = model_unembed(adapter)
        self._logits = logits
        self._worst, self._where = 0.0, 0

    def unembed(self, resid: torch.Tensor) -> torch.Tensor:
        try:
            return self._unembed(resid)
        except RuntimeError as exc:
            raise RuntimeError(
                f"the logit lens reads residual streams through the model's ln_final and unembed, and "
                f"that failed on this model ({exc}): its readout is not one the lens reproduces"
            ) from exc

    def compare(self, start: int, ours: torch.Tensor) -> None:
        theirs = self._logits[start : start + int(ours.shape[0])]
        if ours.shape != theirs.shape:
            raise RuntimeError(
                f"the logit lens reads the last residual stream through ln_final and unembed into logits of shape "
                f"{list(ours.shape)}, but the model returned {list(theirs.shape)} for those positions: "
                "its readout is not one the lens reproduces"
            )
        with torch.no_grad():
            diff = (ours.float().softmax(-1) - theirs.float().softmax(-1)).abs().amax(-1)
            diff = torch.nan_to_num(diff, nan=float("inf"))
        top = float(diff.max())
        if top > self._worst:
            self._worst, self._where = top, start + int(diff.argmax())

    def finish(self) -> None:
        tol = last_row_tolerance(self._logits.dtype)
        if not self._worst <= tol:
            cap = self._adapter.logit_softcap
            applied = "ln_final, unembed and post-unembedding step" + (
                f" (soft cap {cap:g})" if cap is not None else ""
            )
            raise RuntimeError(
                f"the logit lens's last row (the last residual stream through the model's {applied}) differs from "
                f"the model's own output by up to {self._worst:.3g} in probability at position {self._where} "
                f"(expected at most {tol:g}): this model does something between its last residual stream and its "
                "logits that the lens does not reproduce, so no row of it would be the prediction it claims to be"
            )


# ----- direct logit attribution ------------------------------------------------------------------


def attribution_hooks(adapter: ModelAdapter, post_attn: Sequence[FinalNorm | None] | None = None) -> list[str]:
    """Exactly the hooks the attribution reads: embeddings, every head's ``z``, every MLP output, the final residual,
    and the attention output of every layer with a post-attention norm (to check the heads through it)."""
    hooks = [EMBED_HOOK] if adapter.has_pos_embed else []
    hooks.append(RESID_PRE_0)
    post = adapter.post_attn_norms() if post_attn is None else post_attn
    for layer in range(adapter.n_layers):
        hooks.append(Z_HOOK.format(layer=layer))
        if layer < len(post) and post[layer] is not None:
            hooks.append(ATTN_OUT_HOOK.format(layer=layer))
        if adapter.has_mlp:
            hooks.append(MLP_OUT_HOOK.format(layer=layer))
    hooks.append(RESID_POST.format(layer=adapter.n_layers - 1))
    return hooks


def attribution_inputs(adapter: ModelAdapter, tokens: torch.Tensor, position: int = -1) -> AttributionInputs:
    """One forward pass of ``tokens [1, seq]`` and the weights a direct logit attribution at ``position`` needs.

    Refuses up front (before running) a position outside the prompt, a readout the attribution cannot
    follow and weights it cannot read (weights it cannot split with are
    :func:`~mi_widgets.analysis.attribution.logit_attribution`'s to refuse). The pass runs on to the logits; the model's own final norm, unembedding and
    post-unembedding step are applied to the last residual stream, for the attribution to check
    itself against. Everything stays on the model's device.
    """
    pos = resolve_position(position, int(tokens.shape[-1]))
    adapter.check_readout("direct logit attribution")
    norm = adapter.final_norm_weights()
    post_attn = adapter.post_attn_norms()
    w_u, b_u = adapter.unembed_weights()
    w_o, b_o = adapter.attn_out_weights()
    n_layers = adapter.n_layers

    names = attribution_hooks(adapter, post_attn)
    got: dict[str, torch.Tensor] = {}

    def keep(index: int, act: torch.Tensor) -> None:
        got[names[index]] = act[0, pos].detach().float().clone()

    logits = adapter.run_to_logits(tokens, names, keep)[0, pos].detach().float()
    resid = got[RESID_POST.format(layer=n_layers - 1)]
    dtype = adapter.dtype
    as_model = resid[None, None].to(dtype)  # the final norm and unembedding in the model's own dtype
    unembedded = adapter.unembed_before_transform(as_model)[0, 0].float()
    return AttributionInputs(
        position=pos,
        embed=got.get(EMBED_HOOK),
        resid_pre=got[RESID_PRE_0],
        z=[got[Z_HOOK.format(layer=layer)] for layer in range(n_layers)],
        attn_out=[got.get(ATTN_OUT_HOOK.format(layer=layer)) for layer in range(n_layers)],
        mlp_out=[got[MLP_OUT_HOOK.format(layer=layer)] for layer in range(n_layers)] if adapter.has_mlp else None,
        resid=resid,
        logits=logits,
        norm_out=adapter.final_norm(as_model)[0, 0].float() if norm.kind is not None else resid,
        unembedded=unembedded,
        transformed=adapter.logits_transform(unembedded).float(),
        softcap=adapter.logit_softcap,
        dtype=dtype,
        final_norm=norm,
        post_attn_norms=post_attn,
        w_u=w_u,
        b_u=b_u,
        w_o=w_o,
        b_o=b_o,
    )


def resolve_position(position: Any, seq: int) -> int:
    """``position`` (an int, numpy or 0-d torch integer) as an index into ``seq`` tokens (negative counts from the end)."""
    position = as_index("position", position)
    if not -seq <= position < seq:
        raise IndexError(f"position must be in {-seq}..{seq - 1} for this {seq}-token prompt, got {position}")
    return position % seq


# ----- tokens of the output vocabulary -----------------------------------------------------------


def single_token_id(adapter: ModelAdapter, value: Any, what: str = "target") -> int:
    """The token id of ``value``: an id (an int, numpy or 0-d torch integer) or a string that must tokenize to
    exactly one token.

    Strings are tokenized without a BOS, as they would appear after a prompt, so a leading space
    matters (``" Mary"`` vs ``"Mary"``).
    """
    if not isinstance(value, str):
        value = as_index(what, value, TypeError, "a string of one token or a token id (int)")
        d_vocab = getattr(adapter.cfg, "d_vocab", None)
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
    ids = adapter.text_ids(value)
    if ids.numel() != 1:
        pieces = adapter.token_labels(ids)
        raise ValueError(
            f"{what} {value!r} tokenizes to {ids.numel()} tokens {pieces}: expected exactly one token "
            "(try it with or without a leading space, or pass a token id)"
        )
    return int(ids[0])


def token_strings(adapter: ModelAdapter, ids: Sequence[int]) -> list[str]:
    """Readable labels of token ids (``<id>`` without a tokenizer): :meth:`ModelAdapter.token_labels` of a list."""
    return adapter.token_labels(torch.as_tensor(ids, dtype=torch.long)) if len(ids) else []
