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

The weights are those of the model as it is (TransformerLens 4.x ``TransformerBridge`` or
2.x ``HookedTransformer``, read by :class:`~mi_widgets.capture.adapter.ModelAdapter`), never
changed, and no compatibility mode is needed. TransformerLens's
own ``cache.logit_attrs`` needs ``enable_compatibility_mode()`` (4.x) or ``fold_ln=True``
(2.x): folding the norm's ``w`` into ``W_U`` and its ``b`` into ``b_U``, centring the weights
that write to the residual stream, and folding value biases ``b_V`` into ``b_O``. Totals are
the same; the split differs in where biases land: here the norm's bias and ``b_U`` are terms
of their own and a head's ``b_V @ W_O`` stays with its head.

Every result is checked against the model's own forward pass (each post-normed attention output
against ``hook_attn_out``, components against the final residual, the norm against ``ln_final``,
the readout against the logits the model returned on the same run, the parts against the logit
difference), so a model whose layout is read wrongly raises instead of showing wrong numbers.

This module is tensors in, tensors out: :func:`~mi_widgets.capture.readout.attribution_inputs`
runs the model once and reads its weights into an :class:`AttributionInputs`, and
:func:`logit_attribution` splits it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

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


@dataclass(frozen=True)
class AttributionInputs:
    """What one forward pass gives a direct logit attribution at one position, and the weights it splits with.

    Built by :func:`~mi_widgets.capture.readout.attribution_inputs`. Activations are float32 vectors
    ``[d_model]`` at ``position`` (``z`` per layer ``[heads, d_head]``), on the model's device; the
    weights are the model's own, detached, in its dtype.
    """

    position: int
    embed: torch.Tensor | None  # hook_embed; None when no positional term is apart (then resid_pre is all of it)
    resid_pre: torch.Tensor  # blocks.0.hook_resid_pre: what enters block 0
    z: list[torch.Tensor]  # per layer: attn.hook_z
    attn_out: list[torch.Tensor | None]  # per layer: hook_attn_out where the layer has a post-attention norm
    mlp_out: list[torch.Tensor] | None  # per layer: hook_mlp_out; None for attention-only models
    resid: torch.Tensor  # the last block's hook_resid_post
    logits: torch.Tensor  # [d_vocab] the logits the model returned at the position, on the same run
    norm_out: torch.Tensor  # the model's ln_final of resid (resid itself without a final norm)
    unembedded: torch.Tensor  # [d_vocab] unembed(ln_final(resid)), before the model's post-unembedding step
    transformed: torch.Tensor  # [d_vocab] that step applied (a soft cap; identity for most models)
    softcap: float | None  # the soft cap c the model declares (c * tanh(x / c)), or None
    dtype: torch.dtype  # the model's parameter dtype: half precision gets a looser self-check
    final_norm: FinalNorm
    post_attn_norms: list[FinalNorm | None]  # per layer (Gemma 2's ln1_post), None where there is none
    w_u: torch.Tensor  # W_U [d_model, d_vocab]
    b_u: torch.Tensor | None  # b_U [d_vocab]
    w_o: torch.Tensor  # W_O [layers, heads, d_head, d_model]
    b_o: torch.Tensor | None  # b_O [layers, d_model]


def check_attribution_weights(
    w_o: torch.Tensor, post_attn: list[FinalNorm | None], n_layers: int, n_heads: int
) -> list[FinalNorm | None]:
    """Refuse weights this attribution cannot split with; the post-attention norms padded to ``n_layers``."""
    if tuple(w_o.shape[:2]) != (n_layers, n_heads):
        raise ValueError(f"W_O has shape {list(w_o.shape)}, expected [{n_layers}, {n_heads}, d_head, d_model]")
    post_attn = list(post_attn) + [None] * (n_layers - len(post_attn))
    for layer, post in enumerate(post_attn):
        if post is not None and post.bias is not None and bool(post.bias.any()):
            raise ValueError(
                f"layer {layer}'s post-attention norm (ln1_post) has a bias: splitting the attention output through "
                "it is not supported (expected a post-attention norm without a bias, like Gemma 2's RMSNorm)"
            )
    return post_attn


def logit_attribution(inputs: AttributionInputs, answer: int, wrong: int) -> Attribution:
    """Direct logit attribution of ``logit[answer] - logit[wrong]`` from one run's :class:`AttributionInputs`.

    ``attribution_inputs(adapter, tokens, position)`` (:mod:`mi_widgets.capture.readout`) makes them.
    """
    if answer == wrong:
        raise ValueError(f"answer and wrong are the same token ({answer}): the logit difference would be 0")
    pos = inputs.position
    w_u, b_u, w_o, b_o = inputs.w_u, inputs.b_u, inputs.w_o, inputs.b_o
    n_layers = len(inputs.z)
    n_heads = int(inputs.z[0].shape[0]) if inputs.z else 0  # hook_z at one position: [heads, d_head]
    post_attn = check_attribution_weights(w_o, inputs.post_attn_norms, n_layers, n_heads)
    d_head = int(w_o.shape[2])
    has_mlp = inputs.mlp_out is not None
    norm = inputs.final_norm

    with torch.no_grad():
        resid = inputs.resid
        if not bool(torch.isfinite(resid).all()):
            raise ValueError(
                f"the model's final residual stream at position {pos} holds NaN or inf: nothing to attribute"
            )
        device = resid.device
        dtype = inputs.dtype
        rtol = CHECK_RTOL if dtype in (torch.float32, torch.float64) else 3e-2  # half precision rounds more
        rows: list[torch.Tensor] = []
        labels: list[str] = []
        resid_pre = inputs.resid_pre
        if inputs.embed is not None:
            embed = inputs.embed
            rows += [embed, resid_pre - embed]
            labels += ["embed", "pos_embed"]
        else:
            rows.append(resid_pre)
            labels.append("embed")
        w_o32 = w_o.detach().to(device, torch.float32)
        for layer in range(n_layers):
            z = inputs.z[layer].reshape(n_heads, d_head)
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
                    _captured(inputs.attn_out[layer], f"layer {layer}'s hook_attn_out"),
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
            if inputs.mlp_out is not None:
                rows.append(inputs.mlp_out[layer])
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
        _check_close(
            norm(resid),
            inputs.norm_out,
            rtol,
            f"the final norm read as {norm.kind} (eps {norm.eps}) does not reproduce "
            "the model's ln_final, so its weights or type are not what this attribution reads",
        )

        logits, output, real_logits = inputs.unembedded, inputs.transformed, inputs.logits
        _check_close(
            output,
            real_logits,
            rtol,
            f"the final residual stream through ln_final, unembed and the model's "
            f"post-unembedding step does not give the logits the model returned at position {pos}, so something "
            "between its last residual stream and its logits is not what this attribution reads",
        )
        softcap = inputs.softcap
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
        shares = norm.linear(components, resid) @ direction  # each component's share, the norm's scale fixed
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
    n_embed = 2 if inputs.embed is not None else 1
    per_layer = n_heads + 1 + int(has_mlp)  # heads, b_O, mlp
    by_layer = shares[n_embed:].reshape(n_layers, per_layer)
    return Attribution(
        heads=by_layer[:, :n_heads],
        attn_bias=by_layer[:, n_heads],
        mlps=by_layer[:, n_heads + 1] if has_mlp else torch.zeros(n_layers, device=device),
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


def _on(norm: FinalNorm, device: torch.device) -> FinalNorm:
    move = lambda t: None if t is None else t.detach().to(device, torch.float32)  # noqa: E731
    return FinalNorm(norm.kind, move(norm.weight), move(norm.bias), norm.eps)


def _check_close(got: torch.Tensor, expected: torch.Tensor, rtol: float, message: str) -> None:
    err = float((got - expected.float()).abs().max())
    size = float(expected.float().abs().max()) + 1e-6
    if not err <= rtol * size + 1e-5:  # also catches NaN
        raise RuntimeError(f"{message} (max difference {err:.3g} on values up to {size:.3g})")


def _captured(value: torch.Tensor | None, what: str) -> torch.Tensor:
    if value is None:
        raise ValueError(f"the attribution inputs lack {what}, which a layer with a post-attention norm needs")
    return value
