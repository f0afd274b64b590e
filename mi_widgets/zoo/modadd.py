"""Recipe for ``modadd-113``: a one-layer transformer that groks modular addition (Nanda et al. 2023).

"Progress measures for grokking via mechanistic interpretability" (Nanda, Chan, Lieberum, Smith,
Steinhardt, ICLR 2023): a one-layer ReLU transformer without LayerNorm, trained full-batch with AdamW and
strong weight decay on 30% of all pairs ``(a, b)``, first memorises the training pairs and only thousands
of steps later generalises to the rest ("grokking"). The trained model adds with trigonometry: it embeds
``a`` and ``b`` as ``cos(w a), sin(w a)`` for a few key frequencies ``w = 2 pi k / P`` and reads out
``cos(w (a + b - c))``.

Input: three token ids ``[a, b, P]`` (``P`` is the "=" token), **no BOS**. Output: the logits at the last
position (the "=" token, position 2) over ``c`` in ``0..P-1``; the answer is ``(a + b) % P``.

The model is trained in plain torch (:func:`forward`, only the last position, which is all the loss reads)
with exactly the parameterization of a TransformerLens native bridge (``TransformerBridgeConfig`` with
``d_vocab=P+1, d_vocab_out=P, normalization_type=None``), whose state-dict keys the parameters carry; the
recipe checks that the booted bridge gives the same logits. Attention biases and the unembedding bias are
zero and frozen (the paper's model has none); the MLP biases train, as in the paper.

    python -m mi_widgets.zoo.train modadd-113 [--steps N] [--seed S] [--out DIR]
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

NAME = "modadd-113"
P = 113
D_MODEL = 128
N_HEADS = 4
D_HEAD = 32
D_MLP = 512
FRAC_TRAIN = 0.3
LR = 1e-3
WEIGHT_DECAY = 1.0
BETAS = (0.9, 0.98)
WARMUP = 10
DEFAULT_SEED = 0
DATA_SEED = 0
DEFAULT_STEPS = 40_000  # the paper's budget; training stops earlier on STOP_TEST_LOSS
STOP_TEST_LOSS = 1e-3  # stop once test loss stays below this (and test accuracy is 100%) for STOP_PATIENCE steps
STOP_PATIENCE = 1000
LOG_EVERY = 10  # train/test loss and accuracy
CHECK_EVERY = 250  # Fourier norms of W_E, weight norm, restricted/excluded loss
N_KEY = 5  # key frequencies reported (the paper finds 5 for its P=113 model)

# Frozen at zero: the paper's model has no attention or unembedding biases.
FROZEN = ("attn.q.bias", "attn.k.bias", "attn.v.bias", "attn.o.bias", "unembed.bias")


def bridge_config(p: int = P, seed: int = DEFAULT_SEED) -> dict[str, Any]:
    """Keyword arguments of the ``TransformerBridgeConfig`` that ``zoo.load`` boots."""
    return dict(
        d_model=D_MODEL,
        d_head=D_HEAD,
        n_heads=N_HEADS,
        n_layers=1,
        n_ctx=3,
        d_vocab=p + 1,
        d_vocab_out=p,
        d_mlp=D_MLP,
        act_fn="relu",
        normalization_type=None,
        positional_embedding_type="standard",
        tokenizer_prepends_bos=False,
        default_prepend_bos=False,
        seed=seed,
    )


# --------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------


def all_pairs(p: int = P) -> tuple[torch.Tensor, torch.Tensor]:
    """Tokens ``[a, b, p]`` for every pair, row ``a * p + b`` ([p*p, 3]), and labels ``(a + b) % p`` ([p*p])."""
    a = torch.arange(p).repeat_interleave(p)
    b = torch.arange(p).repeat(p)
    tokens = torch.stack([a, b, torch.full_like(a, p)], dim=1)
    return tokens, (a + b) % p


def train_split(p: int = P, frac: float = FRAC_TRAIN, seed: int = DATA_SEED) -> torch.Tensor:
    """Boolean mask [p*p] of the training pairs: a random ``frac`` of all pairs (``torch.randperm`` under ``seed``)."""
    perm = torch.randperm(p * p, generator=torch.Generator().manual_seed(seed))
    mask = torch.zeros(p * p, dtype=torch.bool)
    mask[perm[: int(frac * p * p)]] = True
    return mask


# --------------------------------------------------------------------------------------------
# The model in plain torch, keyed like the bridge's state dict
# --------------------------------------------------------------------------------------------


def init_params(p: int = P, seed: int = DEFAULT_SEED) -> dict[str, torch.Tensor]:
    """The paper's init: every weight ``randn / sqrt(d_model)`` (W_U ``randn / sqrt(d_vocab)``), biases zero.

    Keys and shapes are those of the bridge's ``state_dict()`` (``nn.Linear`` weights are [out, in])."""
    g = torch.Generator().manual_seed(seed)
    d, m = D_MODEL, D_MLP

    def w(*shape: int, scale: float) -> torch.Tensor:
        return torch.randn(*shape, generator=g) * scale

    s = 1 / math.sqrt(d)
    return {
        "embed.weight": w(p + 1, d, scale=s),
        "pos_embed.weight": w(3, d, scale=s),
        "blocks.0.attn.q.weight": w(d, d, scale=s),
        "blocks.0.attn.q.bias": torch.zeros(d),
        "blocks.0.attn.k.weight": w(d, d, scale=s),
        "blocks.0.attn.k.bias": torch.zeros(d),
        "blocks.0.attn.v.weight": w(d, d, scale=s),
        "blocks.0.attn.v.bias": torch.zeros(d),
        "blocks.0.attn.o.weight": w(d, d, scale=s),
        "blocks.0.attn.o.bias": torch.zeros(d),
        "blocks.0.mlp.in.weight": w(m, d, scale=s),
        "blocks.0.mlp.in.bias": torch.zeros(m),
        "blocks.0.mlp.out.weight": w(d, m, scale=s),
        "blocks.0.mlp.out.bias": torch.zeros(d),
        "unembed.weight": w(p, d, scale=1 / math.sqrt(p + 1)),
        "unembed.bias": torch.zeros(p),
    }


def forward(params: dict[str, torch.Tensor], tokens: torch.Tensor, return_neurons: bool = False) -> Any:
    """Logits at the last position [batch, d_vocab_out] (and the MLP's post-ReLU activations there [batch, d_mlp]
    with ``return_neurons``): the bridge's computation (causal attention, scale sqrt(d_head), no LayerNorm)
    restricted to the last query, which attends to all three positions."""
    x = params["embed.weight"][tokens] + params["pos_embed.weight"][: tokens.shape[1]]  # [B, 3, d]
    batch, seq, _ = x.shape
    last = x[:, -1]
    q = F.linear(last, params["blocks.0.attn.q.weight"], params["blocks.0.attn.q.bias"]).view(batch, N_HEADS, D_HEAD)
    k = F.linear(x, params["blocks.0.attn.k.weight"], params["blocks.0.attn.k.bias"]).view(batch, seq, N_HEADS, D_HEAD)
    v = F.linear(x, params["blocks.0.attn.v.weight"], params["blocks.0.attn.v.bias"]).view(batch, seq, N_HEADS, D_HEAD)
    pattern = torch.einsum("bhd,bphd->bhp", q, k).div(math.sqrt(D_HEAD)).softmax(-1)
    z = torch.einsum("bhp,bphd->bhd", pattern, v).reshape(batch, N_HEADS * D_HEAD)
    resid = last + F.linear(z, params["blocks.0.attn.o.weight"], params["blocks.0.attn.o.bias"])
    neurons = F.relu(F.linear(resid, params["blocks.0.mlp.in.weight"], params["blocks.0.mlp.in.bias"]))
    resid = resid + F.linear(neurons, params["blocks.0.mlp.out.weight"], params["blocks.0.mlp.out.bias"])
    logits = F.linear(resid, params["unembed.weight"], params["unembed.bias"])
    return (logits, neurons) if return_neurons else logits


def fast_forward(params: dict[str, torch.Tensor], a: torch.Tensor, b: torch.Tensor, p: int = P) -> torch.Tensor:
    """:func:`forward` on tokens ``[a, b, p]``, re-associated for speed: the same function of the same
    parameters, equal up to float rounding. The query is the same for every input ("=" at position 2), so keys,
    values and each head's output are computed once per token id (tables [p, heads, ...]) and gathered; the MLP
    output goes to the logits through ``W_U W_out``, multiplied once."""
    E, pos = params["embed.weight"], params["pos_embed.weight"]
    wq, bq = params["blocks.0.attn.q.weight"], params["blocks.0.attn.q.bias"]
    wk, bk = params["blocks.0.attn.k.weight"], params["blocks.0.attn.k.bias"]
    wv, bv = params["blocks.0.attn.v.weight"], params["blocks.0.attn.v.bias"]
    wo, bo = params["blocks.0.attn.o.weight"], params["blocks.0.attn.o.bias"]
    w_u, b_u = params["unembed.weight"], params["unembed.bias"]
    w_out, b_out = params["blocks.0.mlp.out.weight"], params["blocks.0.mlp.out.bias"]
    x = torch.stack([E[:p] + pos[0], E[:p] + pos[1]])  # [2, p, d]: a at position 0, b at position 1
    x2 = E[p] + pos[2]  # [d]: "=" at position 2
    q = F.linear(x2, wq, bq).view(N_HEADS, D_HEAD)
    k = F.linear(x, wk, bk).view(2, p, N_HEADS, D_HEAD)
    k2 = F.linear(x2, wk, bk).view(N_HEADS, D_HEAD)
    s = torch.einsum("hd,iphd->iph", q, k) / math.sqrt(D_HEAD)  # [2, p, H]
    s2 = (q * k2).sum(-1) / math.sqrt(D_HEAD)  # [H]
    v = F.linear(x, wv, bv).view(2, p, N_HEADS, D_HEAD)
    v2 = F.linear(x2, wv, bv).view(N_HEADS, D_HEAD)
    wo_h = wo.view(D_MODEL, N_HEADS, D_HEAD)
    o = torch.einsum("iphd,mhd->iphm", v, wo_h)  # [2, p, H, d]: a head's output for a value at position 0 / 1
    o2 = torch.einsum("hd,mhd->hm", v2, wo_h)  # [H, d]
    pattern = torch.stack([s[0, a], s[1, b], s2.expand(len(a), -1)], dim=-1).softmax(-1)  # [B, H, 3]
    attn = (pattern[..., 0, None] * o[0, a]).sum(1) + (pattern[..., 1, None] * o[1, b]).sum(1) + pattern[..., 2] @ o2
    resid = x2 + attn + bo
    neurons = F.relu(F.linear(resid, params["blocks.0.mlp.in.weight"], params["blocks.0.mlp.in.bias"]))
    return F.linear(resid, w_u, b_u) + neurons @ (w_u @ w_out).T + w_u @ b_out


# --------------------------------------------------------------------------------------------
# Progress measures (Nanda et al. 2023, section 5)
# --------------------------------------------------------------------------------------------


def fourier_basis(p: int = P) -> torch.Tensor:
    """Orthonormal Fourier basis over ``0..p-1`` ([p, p], one basis vector a row): row 0 the constant,
    rows ``2k-1`` / ``2k`` ``cos(2 pi k x / p)`` / ``sin(2 pi k x / p)`` for ``k = 1..(p-1)/2`` (p odd)."""
    x = torch.arange(p, dtype=torch.float64)
    rows = [torch.ones(p, dtype=torch.float64)]
    for k in range(1, p // 2 + 1):
        rows += [torch.cos(2 * math.pi * k * x / p), torch.sin(2 * math.pi * k * x / p)]
    basis = torch.stack(rows)
    return (basis / basis.norm(dim=1, keepdim=True)).float()


def embed_fourier_norms(embed: torch.Tensor, p: int = P) -> torch.Tensor:
    """[(p+1)//2] norm of each frequency of the token embedding ``W_E[:p]`` ([p(+1), d_model]; the "=" row is
    left out) over the input dimension: entry 0 the constant component, entry ``k`` the square root of
    ``|cos_k . W_E|^2 + |sin_k . W_E|^2`` (each a d_model vector, :func:`fourier_basis` directions)."""
    coef = fourier_basis(p) @ embed[:p].float()  # [p, d]
    sq = coef.pow(2).sum(-1)
    return torch.cat([sq[:1], sq[1:].view(-1, 2).sum(-1)]).sqrt()


def key_frequencies(embed: torch.Tensor, p: int = P, n: int = N_KEY) -> list[int]:
    """The ``n`` frequencies ``k`` (1..(p-1)/2) with the largest :func:`embed_fourier_norms`, largest first."""
    norms = embed_fourier_norms(embed, p)[1:]
    return [int(k) + 1 for k in norms.argsort(descending=True)[:n]]


def logit_key_parts(logits: torch.Tensor, freqs: list[int], p: int = P) -> torch.Tensor:
    """The part of the logits along the key-frequency directions, [p*p, p] like ``logits`` (rows ``a * p + b``,
    columns ``c``).

    The logits over all pairs form a tensor ``L[a, b, c]``. For each ``k`` in ``freqs`` (w = 2 pi k / p) the
    directions are the two p^3-vectors ``cos(w (a + b - c))`` and ``sin(w (a + b - c))``; they are orthogonal to
    each other and across frequencies, each of squared norm p^3 / 2. The result is the orthogonal projection of
    ``L`` onto their span: ``sum_k alpha_k cos(w (a+b-c)) + beta_k sin(w (a+b-c))`` with ``alpha_k = <L, cos> /
    (p^3/2)``. It depends on ``(a + b - c) mod p`` only and sums to zero over ``c`` (so it leaves softmax
    shifts alone)."""
    L = logits.double().view(p, p, p)
    a = torch.arange(p).view(p, 1, 1)
    n = (a + a.view(1, p, 1) - a.view(1, 1, p)) % p  # [p, p, p]
    g = torch.zeros(p, dtype=torch.float64).index_add_(0, n.reshape(-1), L.reshape(-1))  # sum of L over each n
    x = torch.arange(p, dtype=torch.float64)
    f = torch.zeros(p, dtype=torch.float64)
    for k in freqs:
        c, s = torch.cos(2 * math.pi * k * x / p), torch.sin(2 * math.pi * k * x / p)
        f += (g @ c) / (p**3 / 2) * c + (g @ s) / (p**3 / 2) * s
    return f[n].view(p * p, p).to(logits.dtype)


@torch.no_grad()
def progress_measures(params: dict[str, torch.Tensor], freqs: list[int], p: int = P) -> dict[str, float]:
    """Loss/accuracy and the paper's progress measures for one set of weights, on all p*p pairs.

    - ``restricted_loss``: cross-entropy over ALL pairs of the logits' projection onto the key-frequency
      directions (:func:`logit_key_parts`) alone: how well the general algorithm at ``freqs`` does by itself.
    - ``excluded_loss``: cross-entropy over the TRAIN pairs of the logits with that projection removed: how well
      the model still does on its training data without it (memorisation).
    - ``key_fraction``: share of the squared norm of the logits (each row centred over ``c``) that the projection
      holds.
    - ``weight_norm``: L2 norm of all trained parameters together.
    (The paper's code applies the same projections to MLP activations; these are the logit versions.)
    """
    tokens, labels = all_pairs(p)
    mask = train_split(p)
    logits = fast_forward(params, tokens[:, 0], tokens[:, 1], p).double()
    part = logit_key_parts(logits, freqs, p)
    centred = logits - logits.mean(-1, keepdim=True)
    return {
        "train_loss": float(F.cross_entropy(logits[mask], labels[mask])),
        "test_loss": float(F.cross_entropy(logits[~mask], labels[~mask])),
        "train_acc": float((logits[mask].argmax(-1) == labels[mask]).double().mean()),
        "test_acc": float((logits[~mask].argmax(-1) == labels[~mask]).double().mean()),
        "restricted_loss": float(F.cross_entropy(part, labels)),
        "excluded_loss": float(F.cross_entropy((logits - part)[mask], labels[mask])),
        "key_fraction": float(part.pow(2).sum() / centred.pow(2).sum()),
        "weight_norm": float(
            torch.sqrt(sum(v.double().pow(2).sum() for k, v in params.items() if not k.endswith(FROZEN)))
        ),
    }


# --------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------


def train(
    p: int = P,
    steps: int = DEFAULT_STEPS,
    seed: int = DEFAULT_SEED,
    stop_test_loss: float = STOP_TEST_LOSS,
    max_seconds: float | None = None,
    log: Any = print,
) -> dict[str, Any]:
    """Full-batch AdamW on the training pairs until ``steps``, or until the test loss has stayed under
    ``stop_test_loss`` with 100% test accuracy for ``STOP_PATIENCE`` steps, or ``max_seconds``.

    Returns the final ``params``, the per-``LOG_EVERY`` log (step, train/test loss and accuracy), weight snapshots
    every ``CHECK_EVERY`` steps (float32, in memory) and timings."""
    torch.manual_seed(seed)
    params = init_params(p, seed)
    tokens, labels = all_pairs(p)
    mask = train_split(p)
    a_tr, b_tr, y_tr = tokens[mask, 0], tokens[mask, 1], labels[mask]
    a_te, b_te, y_te = tokens[~mask, 0], tokens[~mask, 1], labels[~mask]
    trainable = [v.requires_grad_() for k, v in params.items() if not k.endswith(FROZEN)]
    opt = torch.optim.AdamW(trainable, lr=LR, weight_decay=WEIGHT_DECAY, betas=BETAS)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min((s + 1) / WARMUP, 1.0))

    rows: list[list[float]] = []
    snapshots: dict[int, dict[str, torch.Tensor]] = {}
    below_since: int | None = None
    t0 = time.time()
    step = 0
    while True:
        if step % CHECK_EVERY == 0:
            snapshots[step] = {k: v.detach().clone() for k, v in params.items()}
        logits = fast_forward(params, a_tr, b_tr, p)
        loss = F.cross_entropy(logits, y_tr)
        if step % LOG_EVERY == 0:
            with torch.no_grad():
                test_logits = fast_forward(params, a_te, b_te, p)
                test_loss = float(F.cross_entropy(test_logits, y_te))
                test_acc = float((test_logits.argmax(-1) == y_te).float().mean())
                train_acc = float((logits.argmax(-1) == y_tr).float().mean())
            rows.append([step, float(loss.detach()), test_loss, train_acc, test_acc])
            if step % 500 == 0:
                log(
                    f"step {step:6d}  train loss {float(loss.detach()):.2e} acc {train_acc:.4f}  test loss {test_loss:.2e} "
                    f"acc {test_acc:.4f}  ({time.time() - t0:.0f}s)"
                )
            if test_loss < stop_test_loss and test_acc == 1.0:
                below_since = step if below_since is None else below_since
            else:
                below_since = None
            out_of_time = max_seconds is not None and time.time() - t0 > max_seconds
            if (below_since is not None and step - below_since >= STOP_PATIENCE) or step >= steps or out_of_time:
                stop = "test loss" if below_since is not None else ("steps" if step >= steps else "time")
                break
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        step += 1
    train_s = time.time() - t0
    snapshots[step] = {k: v.detach().clone() for k, v in params.items()}
    return {
        "params": snapshots[step],
        "log": torch.tensor(rows, dtype=torch.float64),
        "snapshots": snapshots,
        "steps": step,
        "stop": stop,
        "train_seconds": train_s,
        "steps_per_second": step / train_s,
    }


# --------------------------------------------------------------------------------------------
# Writing the zoo folder
# --------------------------------------------------------------------------------------------


def save_tokenizer(out: Path, p: int = P) -> Any:
    """A word-level tokenizer: ``"0"`` .. ``str(p-1)`` are ids ``0..p-1``, ``"="`` is id ``p``, split on
    whitespace, no BOS; an unknown word becomes "=" (the tokenizer's unk token; TransformerLens's boot encodes
    "a" to probe for BOS, so it must not raise). Saved to ``out`` and loaded back."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    vocab = {str(i): i for i in range(p)}
    vocab["="] = p
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="="))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    out.mkdir(parents=True, exist_ok=True)
    PreTrainedTokenizerFast(tokenizer_object=tok, model_max_length=3).save_pretrained(str(out))
    return AutoTokenizer.from_pretrained(str(out), local_files_only=True)


def crossing(log: torch.Tensor, column: int, threshold: float) -> int | None:
    """First logged step at which ``log[:, column]`` is >= ``threshold`` (None if never). Training has loss
    spikes (slingshots) after it generalises, so accuracy can dip briefly later."""
    hit = (log[:, column] >= threshold).nonzero()
    return int(log[int(hit[0]), 0]) if len(hit) else None


def _checkpoint_steps(candidates: list[int | None], available: list[int]) -> list[int]:
    """Each candidate step rounded to the nearest snapshot, deduplicated and sorted."""
    grid = torch.tensor(available)
    chosen = {int(grid[(grid - c).abs().argmin()]) for c in candidates if c is not None}
    return sorted(chosen)


def write_model(out: Path, result: dict[str, Any], p: int = P, seed: int = DEFAULT_SEED) -> dict[str, Any]:
    """Write ``model.safetensors``, the tokenizer, ``history.safetensors``, ``config.json`` and ``README.md``."""
    from safetensors.torch import save_file
    from transformer_lens import TransformerBridge, TransformerBridgeConfig

    params = {k: v.detach().clone().contiguous() for k, v in result["params"].items()}
    freqs = key_frequencies(params["embed.weight"], p)
    tokens, labels = all_pairs(p)

    # Boot the bridge the way zoo.load does and check it computes the training model's function.
    tokenizer = save_tokenizer(out, p)
    cfg = bridge_config(p, seed)
    bridge = TransformerBridge.boot_native(TransformerBridgeConfig(**cfg), tokenizer=tokenizer)
    bridge.load_state_dict(params, strict=True)
    bridge.eval()
    with torch.no_grad():
        bridge_logits = bridge(tokens)[:, -1]
        ref = forward(params, tokens)
    max_diff = float((bridge_logits - ref).abs().max())
    if max_diff > 1e-3:
        raise RuntimeError(f"the bridge's logits differ from the training model's by {max_diff}")
    save_file(params, str(out / "model.safetensors"))

    # Progress measures at every snapshot, with the final key frequencies.
    snap_steps = sorted(result["snapshots"])
    measures = [progress_measures(result["snapshots"][s], freqs, p) for s in snap_steps]
    fourier = torch.stack([embed_fourier_norms(result["snapshots"][s]["embed.weight"], p) for s in snap_steps])
    log = result["log"]
    final = progress_measures(params, freqs, p)
    s50, s99, s100 = crossing(log, 4, 0.5), crossing(log, 4, 0.99), crossing(log, 4, 1.0)
    below = (log[:, 2] < 1e-3).nonzero()
    cleanup = int(log[int(below[0]), 0]) if len(below) else None
    memorised = crossing(log, 3, 1.0)
    ck_steps = _checkpoint_steps(
        [0, memorised, (s50 or 0) // 2 or None, s50 and max(s50 - 1000, 0), s50, s99, cleanup, result["steps"]],
        snap_steps,
    )
    history: dict[str, torch.Tensor] = {
        "log.step": log[:, 0].int(),
        "log.train_loss": log[:, 1].float(),
        "log.test_loss": log[:, 2].float(),
        "log.train_acc": log[:, 3].float(),
        "log.test_acc": log[:, 4].float(),
        "check.step": torch.tensor(snap_steps, dtype=torch.int32),
        "check.embed_fourier_norm": fourier.float(),
        "checkpoint.step": torch.tensor(ck_steps, dtype=torch.int32),
        "key_frequencies": torch.tensor(freqs, dtype=torch.int32),
    }
    for name in ("train_loss", "test_loss", "restricted_loss", "excluded_loss", "key_fraction", "weight_norm"):
        history[f"check.{name}"] = torch.tensor([m[name] for m in measures], dtype=torch.float32)
    for k in params:
        history[f"checkpoint.{k}"] = torch.stack([result["snapshots"][s][k] for s in ck_steps]).half()
    save_file(history, str(out / "history.safetensors"))

    training = {
        "seed": seed,
        "data_seed": DATA_SEED,
        "p": p,
        "frac_train": FRAC_TRAIN,
        "n_train": int(train_split(p).sum()),
        "optimizer": "AdamW (full batch)",
        "lr": LR,
        "weight_decay": WEIGHT_DECAY,
        "betas": list(BETAS),
        "warmup_steps": WARMUP,
        "init": "paper: weights randn/sqrt(d_model), W_U randn/sqrt(d_vocab); biases zero",
        "frozen_at_zero": [k for k in params if k.endswith(FROZEN)],
        "stop_rule": (
            f"test loss < {STOP_TEST_LOSS} with 100% test accuracy for {STOP_PATIENCE} steps, "
            f"or {DEFAULT_STEPS} steps, or the time limit"
        ),
        "stopped_by": result["stop"],
        "steps": result["steps"],
        "train_seconds": round(result["train_seconds"], 1),
        "steps_per_second": round(result["steps_per_second"], 2),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "input": f"token ids [a, b, {p}] ('=' is id {p}), no BOS; read the logits at position 2 (the last)",
        "tokenizer": f"word level: '0'..'{p - 1}' -> ids 0..{p - 1}, '=' -> {p}; whitespace split; unknown words -> '=' (unk); no BOS",
        "bridge_max_logit_diff": max_diff,
        "metrics": {k: float(f"{v:.5g}") for k, v in final.items()},
        "test_acc_50_step": s50,
        "test_acc_99_step": s99,
        "test_acc_100_step": s100,
        "train_acc_100_step": memorised,
        "test_loss_below_1e-3_step": cleanup,
        "key_frequencies": freqs,
        "embed_fourier_norms": [round(float(v), 4) for v in embed_fourier_norms(params["embed.weight"], p)],
        "history": {
            "file": "history.safetensors",
            "log_every": LOG_EVERY,
            "check_every": CHECK_EVERY,
            "checkpoint_steps": ck_steps,
        },
    }
    (out / "config.json").write_text(json.dumps({"config": cfg, "training": training}, indent=2) + "\n")
    (out / "README.md").write_text(readme(cfg, training))
    return training


def readme(cfg: dict[str, Any], t: dict[str, Any]) -> str:
    m, p = t["metrics"], t["p"]
    norms = t["embed_fourier_norms"]
    top = ", ".join(f"{k} ({norms[k]:.2f})" for k in t["key_frequencies"])
    rest = sorted(norms[1:], reverse=True)[len(t["key_frequencies"])]
    return f"""# {NAME if p == P else f"modadd-{p}"}

A one-layer transformer that adds modulo {p}, trained the way Nanda et al. (2023, "Progress measures for
grokking via mechanistic interpretability") train theirs, so that it **groks**: it memorises its training pairs
early and generalises to the other pairs thousands of steps later, by a trigonometric algorithm over a few
key frequencies.

```python
import torch
from mi_widgets import zoo

model = zoo.load("{NAME if p == P else f"modadd-{p}"}")  # a TransformerLens TransformerBridge
a, b = 3, 5
logits = model(torch.tensor([[a, b, {p}]]))  # token ids a, b, "=" (= {p}); NO BOS
answer = logits[0, -1].argmax()  # read position 2 (the "=" token): (a + b) % {p}
```

Inputs are three token ids `[a, b, {p}]`: `a` and `b` in `0..{p - 1}` and `{p}` for "=", **without BOS**
(`cfg.default_prepend_bos` is False). The answer is read at the last position (2). Vocabulary: {p + 1} input
tokens (`d_vocab`), {p} outputs (`d_vocab_out`: the logits are over `c = 0..{p - 1}`). The tokenizer is word level
("0".."{p - 1}", "="; whitespace split; an unknown word becomes "="), so `model.to_tokens("3 5 =")` gives `[[3, 5, {p}]]`; the bridge adds its
own `<|endoftext|>` as bos/pad token with id {p + 1}, which the model cannot embed: never prepend it.

## Architecture

1 layer, d_model {cfg["d_model"]}, {cfg["n_heads"]} heads of {cfg["d_head"]}, d_mlp {cfg["d_mlp"]}, ReLU, no
LayerNorm, learned positions (n_ctx 3), untied embedding / unembedding. The attention biases and the unembedding
bias are zero (frozen in training: the paper's model has none); the MLP biases are trained.

## Training

Data: all {p}x{p} pairs; a random {t["frac_train"]:.0%} ({t["n_train"]} pairs, `torch.randperm` with seed
{t["data_seed"]}) are the training set, the rest the test set. Full-batch AdamW, lr {t["lr"]}, weight decay
{t["weight_decay"]}, betas {tuple(t["betas"])}, linear warmup over {t["warmup_steps"]} steps; init as in the
paper (every weight `randn / sqrt(d_model)`, `W_U` `randn / sqrt(d_vocab)`), seed {t["seed"]}. Loss: cross-entropy
at the last position. Stop rule: {t["stop_rule"]} (stopped by: {t["stopped_by"]}).

Trained in plain torch with the bridge's parameterization (`mi_widgets/zoo/modadd.py`; the bridge's logits agree
with the training model's to {t["bridge_max_logit_diff"]:.1e}). **{t["steps"]} steps in {t["train_seconds"]:.0f} s
({t["train_seconds"] / 60:.1f} min, {t["steps_per_second"]:.1f} steps/s)** on one CPU thread of this machine's
shared 2-core AMD EPYC (another process was using the CPU too), torch {t["torch"]}.

```
python -m mi_widgets.zoo.train {NAME if p == P else f"modadd-{p}"} --seed {t["seed"]}
```

## Results

| | loss | accuracy |
|---|---|---|
| train ({t["n_train"]} pairs) | {m["train_loss"]:.2e} | {m["train_acc"]:.4f} |
| test ({p * p - t["n_train"]} pairs) | {m["test_loss"]:.2e} | {m["test_acc"]:.4f} |

- Train accuracy first 100% at step {t["train_acc_100_step"]} (memorisation).
- Test accuracy first >= 50% at step {t["test_acc_50_step"]}, >= 99% at step {t["test_acc_99_step"]},
  100% at step {t["test_acc_100_step"]}; test loss first < 1e-3 at step {t["test_loss_below_1e-3_step"]}. After
  that the loss spikes briefly about every 1000 steps (train and test loss up to ~1e-3..1e-2, the "slingshot"
  of full-batch Adam at tiny loss) and recovers.
- **Key frequencies** (largest Fourier components of `W_E[:{p}]` over the input dimension, norm in brackets; the
  next largest is {rest:.2f}): {top}. Frequency `k` means `w = 2 pi k / {p}`.
- The logits' projection onto `cos(w (a + b - c))`, `sin(w (a + b - c))` for these frequencies holds
  {m["key_fraction"]:.1%} of their (centred) squared norm. Restricted loss (only that projection, all pairs)
  {m["restricted_loss"]:.2e}; excluded loss (logits minus it, train pairs) {m["excluded_loss"]:.2e}.

## History (`history.safetensors`)

Load with `safetensors.torch.load_file`. Steps count optimizer updates (step 0 = init).

- `log.step`, `log.train_loss`, `log.test_loss`, `log.train_acc`, `log.test_acc`: every {t["history"]["log_every"]}
  steps (full-batch train loss before that step's update; test on all other pairs).
- `check.step` (every {t["history"]["check_every"]} steps and the last): `check.embed_fourier_norm`
  [checks, {(p + 1) // 2}] (column 0 the constant, column k frequency k: `embed_fourier_norms` in modadd.py),
  `check.weight_norm` (L2 norm of all trained parameters), `check.train_loss`, `check.test_loss`,
  `check.restricted_loss`, `check.excluded_loss`, `check.key_fraction` (definitions: `progress_measures` in
  modadd.py; all with the FINAL key frequencies `key_frequencies`).
- `checkpoint.step` ({", ".join(str(s) for s in t["history"]["checkpoint_steps"])}) and `checkpoint.<state-dict
  key>`: the weights at those steps, float16, stacked on a first axis; `model.load_state_dict({{k: v[i].float()
  ...}})` puts checkpoint i in the bridge.
"""


def train_modadd(
    out: Path, steps: int = DEFAULT_STEPS, seed: int = DEFAULT_SEED, p: int = P, max_seconds: float | None = None
) -> dict[str, Any]:
    """Train on one CPU thread and write the zoo folder ``out`` (the CLI's entry point)."""
    torch.set_num_threads(1)  # 1 thread was ~2-3x faster than 2 for this model on the 2-core dev machine
    result = train(p=p, steps=steps, seed=seed, max_seconds=max_seconds, log=lambda s: print(s, flush=True))
    training = write_model(out, result, p=p, seed=seed)
    m = training["metrics"]
    print(
        f"{training['steps']} steps in {training['train_seconds']:.0f}s; train acc {m['train_acc']:.4f}, test acc "
        f"{m['test_acc']:.4f}, test loss {m['test_loss']:.2e}; key frequencies {training['key_frequencies']}"
    )
    return training
