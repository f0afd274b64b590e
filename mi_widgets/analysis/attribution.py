"""Direct logit attribution: how much each head, MLP and embedding writes ``logit[a] - logit[b]``.

The residual stream after the last block is a sum of components: the token (and positional)
embeddings, every head's output ``z_h @ W_O[h]``, each layer's attention bias ``b_O`` and each
MLP's output. The final norm is not linear, but at one position it is an affine map once its
scale ``s`` is fixed at the value the model actually computed there:

    LN:   y = (x - mean(x)) / s * w + b        RMSNorm: y = x / s * w  (+ b if any)

so with ``d = W_U[:, a] - W_U[:, b]`` the logit difference splits exactly into

    sum over components c of  ((c - mean(c)) / s * w) @ d     (no centring for RMSNorm)
    + b @ d  (the norm's bias)  + b_U[a] - b_U[b]  (the unembedding bias).

Architectures beyond GPT-2's layout, and what is done about each:

- Norms after the attention and the MLP (Gemma 2's ``ln1_post`` / ``ln2_post``): the attention
  output enters the residual stream as ``norm(sum of heads + b_O)``. With that norm's scale fixed
  at this run's value it is linear too, so each head's term is its output divided by that scale
  and multiplied by the norm's weight (Gemma stores ``w`` and applies ``1 + w``: read as such);
  ``b_O`` likewise. The MLP is one term, its output after its post-norm (``hook_mlp_out``).
- Embedding scales (Gemma multiplies the embeddings by ``sqrt(d_model)``) need nothing: the
  embedding term is what enters block 0, and a ``pos_embed`` term exists only for learned
  absolute positions (``positional_embedding_type == "standard"``); rotary models have none.
- Parallel attention and MLP (GPT-NeoX, Phi): the block still adds both to the residual stream,
  so the split is the same.
- A soft cap on the logits (Gemma 2's ``final_logit_softcapping``: ``c * tanh(x / c)``) is not
  linear, and ``tanh(x_a / c) - tanh(x_b / c)`` has no exact split into per-component terms. The
  attribution is of the logit difference *before* the cap, which the parts sum to exactly
  (``total``); the model's own difference after the cap is reported beside it
  (``output_total``), and ``softcap`` says the cap. The cap is monotonic, so the sign and the
  ranking of the two tokens are the same before and after it.
- Anything else after the unembedding (a logit scale), a readout module ``ln_final -> unembed``
  would skip (OPT-350m's ``project_out``), a post-attention norm with a bias, or a layout whose
  components do not add up to the residual stream is refused, with the part named.

This reads the weights of the model as it is (TransformerLens 4.x ``TransformerBridge`` or
2.x ``HookedTransformer``), never changes it, and needs no compatibility mode. TransformerLens's
own ``cache.logit_attrs`` needs ``enable_compatibility_mode()`` (4.x) or ``fold_ln=True``
(2.x): folding the norm's ``w`` into ``W_U`` and its ``b`` into ``b_U``, centring the weights
that write to the residual stream, and folding value biases ``b_V`` into ``b_O``. Totals are
the same; the split differs in where biases land: here the norm's bias and ``b_U`` are terms
of their own and a head's ``b_V @ W_O`` stays with its head.

Every result is checked against the model's own forward pass (each post-normed attention output
against ``hook_attn_out``, components against the final residual, the norm against ``ln_final``,
the readout against the logits the model returned on the same run, the parts against the logit
difference), so a model whose layout is read wrongly raises instead of showing wrong numbers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from ..capture.adapter import ModelAdapter
from .logit_lens import check_readout

Z_HOOK = "blocks.{layer}.attn.hook_z"
MLP_OUT_HOOK = "blocks.{layer}.hook_mlp_out"
EMBED_HOOK = "hook_embed"
POS_EMBED_HOOK = "hook_pos_embed"
RESID_PRE_0 = "blocks.0.hook_resid_pre"
RESID_POST = "blocks.{layer}.hook_resid_post"
ATTN_OUT_HOOK = "blocks.{layer}.hook_attn_out"

# Relative tolerance of the self-checks (float32 sums of a few hundred terms, any device).
CHECK_RTOL = 1e-3


@dataclass(frozen=True)
class FinalNorm:
    """A norm as ``x -> (x - mean?) / scale(x) * weight + bias``; ``kind`` None means none.

    Used for the final norm and for post-attention norms; ``weight`` is the effective one (Gemma's
    ``1 + w``).
    """

    kind: str | None  # "LN" (centres) or "RMS" (does not), or None
    weight: torch.Tensor | None
    bias: torch.Tensor | None
    eps: float

    @property
    def centres(self) -> bool:
        return self.kind == "LN"

    def scale(self, x: torch.Tensor) -> torch.Tensor:
        """The norm's divisor for ``x [..., d_model]`` (1 when there is no norm), shape ``[..., 1]``."""
        if self.kind is None:
            return torch.ones_like(x[..., :1])
        if self.centres:
            x = x - x.mean(-1, keepdim=True)
        return (x.pow(2).mean(-1, keepdim=True) + self.eps).sqrt()

    def linear(self, components: torch.Tensor, total: torch.Tensor) -> torch.Tensor:
        """The norm without its bias, its scale fixed at ``total``'s: a linear map of ``components [n, d_model]``.

        When the components sum to ``total``, their images plus ``bias`` sum to ``self(total)``.
        """
        x = components - components.mean(-1, keepdim=True) if self.centres else components
        x = x / self.scale(total)
        return x * self.weight if self.weight is not None else x

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        y = self.linear(x, x)
        return y + self.bias if self.bias is not None else y


@dataclass(frozen=True)
class Attribution:
    """Direct logit attribution at one position; tensors on the model's device, float32."""

    heads: torch.Tensor  # [layers, heads]
    attn_bias: torch.Tensor  # [layers]: each layer's b_O
    mlps: torch.Tensor  # [layers] (zeros for attention-only models)
    embed: float
    pos_embed: float | None  # None without a positional embedding (rotary models): then embed is all of block 0's input
    norm_bias: float
    unembed_bias: float
    total: float  # the logit difference the parts sum to: the model's own, before a soft cap if it has one
    output_total: float  # the model's own logit difference in the logits it returns (after the soft cap)
    softcap: float | None  # the soft cap c of c * tanh(logit / c) between total and output_total, or None
    parts: dict[str, float] = field(default_factory=dict)

    @property
    def attn(self) -> torch.Tensor:
        """Per layer: all heads plus the layer's attention bias."""
        return self.heads.sum(-1) + self.attn_bias


def read_final_norm(model: Any) -> FinalNorm:
    """The final norm's type, weight, bias and eps, from ``cfg.normalization_type`` and ``model.ln_final``."""
    cfg = model.cfg
    kind = getattr(cfg, "normalization_type", "LN")
    eps = float(getattr(cfg, "eps", 1e-5))
    if kind is None:
        return FinalNorm(None, None, None, eps)
    if kind not in ("LN", "LNPre", "RMS", "RMSPre"):
        raise ValueError(
            f"cannot attribute through a final norm of type {kind!r}: expected cfg.normalization_type "
            "LN, LNPre, RMS, RMSPre or None"
        )
    ln = getattr(model, "ln_final", None)
    if ln is None:
        raise ValueError(f"cfg.normalization_type is {kind!r} but the model has no ln_final module to read")
    weight = bias = None
    if not kind.endswith("Pre"):  # *Pre norms have their weights folded into the unembedding
        weight = _norm_weight(ln)
        bias = _param(ln, "b", "bias")
        if weight is None:
            raise ValueError(f"cannot read the final norm's weight (ln_final.w) of this {type(model).__qualname__}")
    return FinalNorm("LN" if kind.startswith("LN") else "RMS", weight, bias, eps)


def read_post_attn_norms(model: Any) -> list[FinalNorm | None]:
    """Per layer, the norm applied to the attention output before it joins the residual stream (Gemma 2's
    ``ln1_post``), or None where the block has none."""
    cfg = model.cfg
    default = str(getattr(cfg, "normalization_type", None) or "RMS")
    eps = float(getattr(cfg, "eps", 1e-5))
    norms: list[FinalNorm | None] = []
    for block in _blocks(model):
        ln = _submodule(block, "ln1_post")
        if ln is None or isinstance(ln, torch.nn.Identity):  # TL 2.x's post-"norm" of a model without norms
            norms.append(None)
            continue
        kind, eps_here = _norm_kind(ln, default), float(getattr(ln, "eps", eps))
        norms.append(FinalNorm(kind, _norm_weight(ln), _param(ln, "b", "bias"), eps_here))
    return norms


def read_unembed(model: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``W_U [d_model, d_vocab]`` and ``b_U [d_vocab]`` (None if the model has none)."""
    w_u = _model_param(model, "W_U")
    if w_u is None or w_u.ndim != 2:
        raise ValueError(f"cannot read the unembedding W_U [d_model, d_vocab] of this {type(model).__qualname__}")
    return w_u, _model_param(model, "b_U")


def read_attn_out(model: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``W_O [layers, heads, d_head, d_model]`` and ``b_O [layers, d_model]`` (None if absent)."""
    w_o = _model_param(model, "W_O")
    if w_o is None:  # stack per block
        try:
            w_o = torch.stack([block.attn.W_O for block in model.blocks])
        except (AttributeError, TypeError, RuntimeError):
            w_o = None
    if w_o is None or w_o.ndim != 4:
        raise ValueError(
            f"cannot read the attention output weights W_O [layers, heads, d_head, d_model] of this "
            f"{type(model).__qualname__}; direct logit attribution needs them"
        )
    b_o = _model_param(model, "b_O")
    if b_o is None:
        try:
            b_o = torch.stack([block.attn.b_O for block in model.blocks])
        except (AttributeError, TypeError, RuntimeError):
            b_o = None
    return w_o, b_o


def attribution_hooks(adapter: ModelAdapter) -> list[str]:
    """Exactly the hooks the attribution reads: embeddings, every head's ``z``, every MLP output, the final residual,
    and the attention output of every layer with a post-attention norm (to check the heads through it)."""
    hooks = [EMBED_HOOK] if has_pos_embed(adapter) else []
    hooks.append(RESID_PRE_0)
    post = read_post_attn_norms(adapter.model)
    for layer in range(adapter.n_layers):
        hooks.append(Z_HOOK.format(layer=layer))
        if layer < len(post) and post[layer] is not None:
            hooks.append(ATTN_OUT_HOOK.format(layer=layer))
        if has_mlp(adapter):
            hooks.append(MLP_OUT_HOOK.format(layer=layer))
    hooks.append(RESID_POST.format(layer=adapter.n_layers - 1))
    return hooks


def has_pos_embed(adapter: ModelAdapter) -> bool:
    """Token and positional embeddings apart only for learned absolute positions added to the residual stream.

    Rotary models (and TransformerLens 4.x bridges alias ``hook_pos_embed`` to the rotary
    embedding there) have no positional term: all that enters block 0 is one ``embed`` term.
    """
    names = set(adapter.hook_names())
    kind = getattr(adapter.cfg, "positional_embedding_type", "standard")
    return {EMBED_HOOK, POS_EMBED_HOOK} <= names and kind == "standard"


def has_mlp(adapter: ModelAdapter) -> bool:
    return not bool(getattr(adapter.cfg, "attn_only", False))


def resolve_position(position: int, seq: int) -> int:
    """``position`` as an index into ``seq`` tokens (negative counts from the end)."""
    if isinstance(position, bool) or not isinstance(position, int):
        raise TypeError(f"position must be an integer, got {position!r}")
    if not -seq <= position < seq:
        raise IndexError(f"position must be in {-seq}..{seq - 1} for this {seq}-token prompt, got {position}")
    return position % seq


def direct_contributions(
    components: torch.Tensor, resid: torch.Tensor, norm: FinalNorm, direction: torch.Tensor
) -> torch.Tensor:
    """Each component's share ``[n]`` of ``norm(resid) @ direction``, the norm's scale fixed at ``resid``'s.

    ``components [n, d_model]`` should sum to ``resid [d_model]``; then the shares plus
    ``norm.bias @ direction`` equal ``norm(resid) @ direction`` exactly.
    """
    x = components - components.mean(-1, keepdim=True) if norm.centres else components
    x = x / norm.scale(resid)
    if norm.weight is not None:
        x = x * norm.weight
    return x @ direction


def logit_attribution(
    adapter: ModelAdapter, tokens: torch.Tensor, answer: int, wrong: int, position: int = -1
) -> Attribution:
    """Direct logit attribution of ``logit[answer] - logit[wrong]`` at ``position`` of ``tokens [1, seq]``."""
    if answer == wrong:
        raise ValueError(f"answer and wrong are the same token ({answer}): the logit difference would be 0")
    seq = int(tokens.shape[-1])
    pos = resolve_position(position, seq)
    model = adapter.model
    check_readout(adapter, "direct logit attribution")
    norm = read_final_norm(model)
    post_attn = read_post_attn_norms(model)
    w_u, b_u = read_unembed(model)
    w_o, b_o = read_attn_out(model)
    n_layers, n_heads = adapter.n_layers, adapter.n_heads
    if tuple(w_o.shape[:2]) != (n_layers, n_heads):
        raise ValueError(f"W_O has shape {list(w_o.shape)}, expected [{n_layers}, {n_heads}, d_head, d_model]")
    d_head = int(w_o.shape[2])
    post_attn += [None] * (n_layers - len(post_attn))
    for layer, post in enumerate(post_attn):
        if post is not None and post.bias is not None and bool(post.bias.any()):
            raise ValueError(
                f"layer {layer}'s post-attention norm (ln1_post) has a bias: splitting the attention output through "
                "it is not supported (expected a post-attention norm without a bias, like Gemma 2's RMSNorm)"
            )

    names = attribution_hooks(adapter)
    got: dict[str, torch.Tensor] = {}

    def keep(index: int, act: torch.Tensor) -> None:
        got[names[index]] = act[0, pos].detach().float().clone()

    real_logits = adapter.run_to_logits(tokens, names, keep)[0, pos].detach().float()

    with torch.no_grad():
        resid = got[RESID_POST.format(layer=n_layers - 1)]
        if not bool(torch.isfinite(resid).all()):
            raise ValueError(
                f"the model's final residual stream at position {pos} holds NaN or inf: nothing to attribute"
            )
        device = resid.device
        dtype = _dtype(model)
        rtol = CHECK_RTOL if dtype in (torch.float32, torch.float64) else 3e-2  # half precision rounds more
        rows: list[torch.Tensor] = []
        labels: list[str] = []
        resid_pre = got[RESID_PRE_0]
        if EMBED_HOOK in got:
            embed = got[EMBED_HOOK]
            rows += [embed, resid_pre - embed]
            labels += ["embed", "pos_embed"]
        else:
            rows.append(resid_pre)
            labels.append("embed")
        w_o32 = w_o.detach().to(device, torch.float32)
        for layer in range(n_layers):
            z = got[Z_HOOK.format(layer=layer)].reshape(n_heads, d_head)
            heads = torch.einsum("hd,hdm->hm", z, w_o32[layer])
            bias = (
                b_o[layer].detach().to(device, torch.float32)[None]
                if b_o is not None
                else torch.zeros_like(resid)[None]
            )
            post = post_attn[layer]
            if post is not None:  # the attention output joins the residual stream through a norm: linear at its scale
                post = _on(post, device)
                attn_in = heads.sum(0) + bias[0]
                heads, bias = post.linear(heads, attn_in), post.linear(bias, attn_in)
                _check_close(
                    heads.sum(0) + bias[0],
                    got[ATTN_OUT_HOOK.format(layer=layer)],
                    rtol,
                    f"layer {layer}'s heads and b_O through its post-attention norm (ln1_post, read as "
                    f"{post.kind}, eps {post.eps}, scale fixed at this run's) do not reproduce the attention "
                    "output the model added to the residual stream (hook_attn_out), so that norm is not one "
                    "this attribution reads",
                )
            rows.append(heads)
            labels += [f"L{layer}H{h}" for h in range(n_heads)]
            rows.append(bias)
            labels.append(f"L{layer} b_O")
            if has_mlp(adapter):
                rows.append(got[MLP_OUT_HOOK.format(layer=layer)])
                labels.append(f"L{layer} mlp")
        components = torch.cat([r.reshape(-1, resid.shape[-1]) for r in rows])
        _check_close(
            components.sum(0),
            resid,
            rtol,
            "the embeddings, heads, attention biases and MLP outputs do not add "
            "up to the final residual stream, so this model's layout is not one this attribution reads",
        )
        norm = _on(norm, device)
        real_norm = adapter.final_norm(resid[None, None].to(dtype))[0, 0].float() if norm.kind is not None else resid
        _check_close(
            norm(resid),
            real_norm,
            rtol,
            f"the final norm read as {norm.kind} (eps {norm.eps}) does not reproduce "
            "the model's ln_final, so its weights or type are not what this attribution reads",
        )

        logits = adapter.unembed_before_transform(resid[None, None].to(dtype))[0, 0].float()
        output = adapter.logits_transform(logits).float()
        _check_close(
            output,
            real_logits,
            rtol,
            f"the final residual stream through ln_final, unembed and the model's "
            f"post-unembedding step does not give the logits the model returned at position {pos}, so something "
            "between its last residual stream and its logits is not what this attribution reads",
        )
        softcap = adapter.logit_softcap
        if softcap is not None:
            _check_close(
                softcap * torch.tanh(logits / softcap),
                output,
                rtol,
                f"this model's logits are not the soft cap "
                f"{softcap:g} * tanh(logit / {softcap:g}) of its unembedding, so its post-unembedding step is not "
                "one this attribution reads",
            )
        else:
            _check_close(
                logits,
                output,
                rtol,
                "this model changes its logits after the unembedding (e.g. a logit scale) "
                "and declares no soft cap: attributing through that step is not supported",
            )

        w_u32 = w_u.detach().to(device, torch.float32)
        direction = w_u32[:, answer] - w_u32[:, wrong]
        shares = direct_contributions(components, resid, norm, direction)
        norm_bias = float(norm.bias @ direction) if norm.bias is not None else 0.0
        unembed_bias = float(b_u[answer] - b_u[wrong]) if b_u is not None else 0.0
        total = float(logits[answer] - logits[wrong])
        output_total = float(real_logits[answer] - real_logits[wrong])
        summed = float(shares.sum()) + norm_bias + unembed_bias
        scale = float(shares.abs().sum()) + abs(norm_bias) + abs(unembed_bias) + 1e-6
        if not abs(summed - total) <= rtol * scale + 1e-4:
            raise RuntimeError(
                f"the parts add up to {summed:.6g} but the model's logit difference is {total:.6g}: this model's "
                "unembedding is not the W_U and b_U this attribution reads"
            )

    parts = dict(zip(labels, shares.tolist()))
    parts["ln_final bias"] = norm_bias
    parts["b_U"] = unembed_bias
    n_embed = 2 if EMBED_HOOK in got else 1
    per_layer = n_heads + 1 + int(has_mlp(adapter))  # heads, b_O, mlp
    blocks = shares[n_embed:].reshape(n_layers, per_layer)
    return Attribution(
        heads=blocks[:, :n_heads],
        attn_bias=blocks[:, n_heads],
        mlps=blocks[:, n_heads + 1] if has_mlp(adapter) else torch.zeros(n_layers, device=device),
        embed=parts["embed"],
        pos_embed=parts.get("pos_embed"),
        norm_bias=norm_bias,
        unembed_bias=unembed_bias,
        total=total,
        output_total=output_total,
        softcap=softcap,
        parts=parts,
    )


# ----- internals ---------------------------------------------------------------------------


def _param(module: Any, *names: str) -> torch.Tensor | None:
    for name in names:
        try:
            value = getattr(module, name, None)
        except Exception:  # some bridges raise from properties they cannot compute
            value = None
        if isinstance(value, torch.Tensor):
            return value.detach()
    return None


def _model_param(model: Any, name: str) -> torch.Tensor | None:
    return _param(model, name)


def _norm_weight(ln: Any) -> torch.Tensor | None:
    """A norm's effective weight: Gemma's RMSNorm stores ``w`` and multiplies by ``1 + w``.

    TransformerLens 4.x bridges say so with ``uses_weight_offset`` (from ``cfg.rmsnorm_uses_offset``);
    2.x adds the 1 when it loads the weights.
    """
    weight = _param(ln, "w", "weight")
    if weight is not None and getattr(ln, "uses_weight_offset", False) is True:
        weight = weight + 1.0
    return weight


def _norm_kind(ln: Any, default: str) -> str:
    """``"RMS"`` or ``"LN"`` for a norm module (4.x bridges say ``uses_rms_norm``; 2.x classes are named so)."""
    rms = getattr(ln, "uses_rms_norm", None)
    if isinstance(rms, bool):
        return "RMS" if rms else "LN"
    name = type(ln).__name__
    if name.startswith("RMSNorm"):
        return "RMS"
    if name.startswith("LayerNorm"):
        return "LN"
    return "LN" if default.startswith("LN") else "RMS"


def _blocks(model: Any) -> list[Any]:
    try:
        return list(getattr(model, "blocks", None) or [])
    except TypeError:
        return []


def _submodule(module: Any, name: str) -> Any:
    """``module.name`` if it is a torch module (bridges may raise, or delegate to the HF layer, for absent names)."""
    try:
        value = getattr(module, name, None)
    except Exception:
        return None
    return value if isinstance(value, torch.nn.Module) else None


def _dtype(model: Any) -> torch.dtype:
    try:
        return next(model.parameters()).dtype
    except (AttributeError, StopIteration, TypeError):
        return torch.float32


def _on(norm: FinalNorm, device: torch.device) -> FinalNorm:
    move = lambda t: None if t is None else t.detach().to(device, torch.float32)  # noqa: E731
    return FinalNorm(norm.kind, move(norm.weight), move(norm.bias), norm.eps)


def _check_close(got: torch.Tensor, expected: torch.Tensor, rtol: float, message: str) -> None:
    err = float((got - expected.float()).abs().max())
    size = float(expected.float().abs().max()) + 1e-6
    if not err <= rtol * size + 1e-5:  # also catches NaN
        raise RuntimeError(f"{message} (max difference {err:.3g} on values up to {size:.3g})")
