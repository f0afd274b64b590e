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

import functools
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from ..analysis import fourier
from ..analysis.fourier import all_pairs

__all__ = ["ModAddConfig", "ModAddTrainer", "all_pairs", "fast_forward", "forward", "to_bridge", "train_modadd"]

NAME = "modadd-113"
P = 113
N_KEY = 5  # key frequencies the recipe reports (the paper finds 5 for its P=113 model)
DEFAULT_SEED = 0
DATA_SEED = 0
DEFAULT_STEPS = 40_000  # the paper's budget; training stops earlier on STOP_TEST_LOSS
STOP_TEST_LOSS = 1e-3  # stop once test loss stays below this (and test accuracy is 100%) for STOP_PATIENCE steps
STOP_PATIENCE = 1000
LOG_EVERY = 10  # train/test loss and accuracy
CHECK_EVERY = 250  # Fourier norms of W_E, weight norm, restricted/excluded loss

# Frozen at zero: the paper's model has no attention or unembedding biases.
FROZEN = ("attn.q.bias", "attn.k.bias", "attn.v.bias", "attn.o.bias", "unembed.bias")


@dataclass(frozen=True)
class ModAddConfig:
    """One modular-addition training setup; the defaults are the paper's (Nanda et al. 2023, section 3)."""

    p: int = P
    d_model: int = 128
    n_heads: int = 4
    d_head: int = 32
    d_mlp: int = 512
    train_frac: float = 0.3
    lr: float = 1e-3
    weight_decay: float = 1.0
    betas: tuple[float, float] = (0.9, 0.98)
    warmup: int = 10
    seed: int = DEFAULT_SEED
    data_seed: int = DATA_SEED


PAPER = ModAddConfig()


def bridge_config(config: ModAddConfig = PAPER) -> dict[str, Any]:
    """Keyword arguments of the ``TransformerBridgeConfig`` that ``zoo.load`` (and :func:`to_bridge`) boots."""
    return dict(
        d_model=config.d_model,
        d_head=config.d_head,
        n_heads=config.n_heads,
        n_layers=1,
        n_ctx=3,
        d_vocab=config.p + 1,
        d_vocab_out=config.p,
        d_mlp=config.d_mlp,
        act_fn="relu",
        normalization_type=None,
        positional_embedding_type="standard",
        tokenizer_prepends_bos=False,
        default_prepend_bos=False,
        seed=config.seed,
    )


# --------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------


def train_split(p: int = P, frac: float = PAPER.train_frac, seed: int = DATA_SEED) -> torch.Tensor:
    """Boolean mask [p*p] of the training pairs: a random ``frac`` of all pairs (``torch.randperm`` under ``seed``)."""
    perm = torch.randperm(p * p, generator=torch.Generator().manual_seed(seed))
    mask = torch.zeros(p * p, dtype=torch.bool)
    mask[perm[: int(frac * p * p)]] = True
    return mask


# --------------------------------------------------------------------------------------------
# The model in plain torch, keyed like the bridge's state dict
# --------------------------------------------------------------------------------------------


def init_params(config: ModAddConfig = PAPER) -> dict[str, torch.Tensor]:
    """The paper's init: every weight ``randn / sqrt(d_model)`` (W_U ``randn / sqrt(d_vocab)``), biases zero.

    Keys and shapes are those of the bridge's ``state_dict()`` (``nn.Linear`` weights are [out, in])."""
    g = torch.Generator().manual_seed(config.seed)
    p, d, m, hd = config.p, config.d_model, config.d_mlp, config.n_heads * config.d_head

    def w(*shape: int, scale: float) -> torch.Tensor:
        return torch.randn(*shape, generator=g) * scale

    s = 1 / math.sqrt(d)
    return {
        "embed.weight": w(p + 1, d, scale=s),
        "pos_embed.weight": w(3, d, scale=s),
        "blocks.0.attn.q.weight": w(hd, d, scale=s),
        "blocks.0.attn.q.bias": torch.zeros(hd),
        "blocks.0.attn.k.weight": w(hd, d, scale=s),
        "blocks.0.attn.k.bias": torch.zeros(hd),
        "blocks.0.attn.v.weight": w(hd, d, scale=s),
        "blocks.0.attn.v.bias": torch.zeros(hd),
        "blocks.0.attn.o.weight": w(d, hd, scale=s),
        "blocks.0.attn.o.bias": torch.zeros(d),
        "blocks.0.mlp.in.weight": w(m, d, scale=s),
        "blocks.0.mlp.in.bias": torch.zeros(m),
        "blocks.0.mlp.out.weight": w(d, m, scale=s),
        "blocks.0.mlp.out.bias": torch.zeros(d),
        "unembed.weight": w(p, d, scale=1 / math.sqrt(p + 1)),
        "unembed.bias": torch.zeros(p),
    }


def forward(
    params: dict[str, torch.Tensor], tokens: torch.Tensor, n_heads: int = PAPER.n_heads, return_neurons: bool = False
) -> Any:
    """Logits at the last position [batch, d_vocab_out] (and the MLP's post-ReLU activations there [batch, d_mlp]
    with ``return_neurons``): the bridge's computation (causal attention, scale sqrt(d_head), no LayerNorm)
    restricted to the last query, which attends to all three positions."""
    x = params["embed.weight"][tokens] + params["pos_embed.weight"][: tokens.shape[1]]  # [B, 3, d]
    batch, seq, _ = x.shape
    d_head = params["blocks.0.attn.q.weight"].shape[0] // n_heads
    last = x[:, -1]
    q = F.linear(last, params["blocks.0.attn.q.weight"], params["blocks.0.attn.q.bias"]).view(batch, n_heads, d_head)
    k = F.linear(x, params["blocks.0.attn.k.weight"], params["blocks.0.attn.k.bias"]).view(batch, seq, n_heads, d_head)
    v = F.linear(x, params["blocks.0.attn.v.weight"], params["blocks.0.attn.v.bias"]).view(batch, seq, n_heads, d_head)
    pattern = torch.einsum("bhd,bphd->bhp", q, k).div(math.sqrt(d_head)).softmax(-1)
    z = torch.einsum("bhp,bphd->bhd", pattern, v).reshape(batch, n_heads * d_head)
    resid = last + F.linear(z, params["blocks.0.attn.o.weight"], params["blocks.0.attn.o.bias"])
    neurons = F.relu(F.linear(resid, params["blocks.0.mlp.in.weight"], params["blocks.0.mlp.in.bias"]))
    resid = resid + F.linear(neurons, params["blocks.0.mlp.out.weight"], params["blocks.0.mlp.out.bias"])
    logits = F.linear(resid, params["unembed.weight"], params["unembed.bias"])
    return (logits, neurons) if return_neurons else logits


def fast_forward(
    params: dict[str, torch.Tensor],
    a: torch.Tensor,
    b: torch.Tensor,
    p: int = P,
    n_heads: int = PAPER.n_heads,
    return_neurons: bool = False,
) -> Any:
    """:func:`forward` on tokens ``[a, b, p]``, re-associated for speed: the same function of the same
    parameters, equal up to float rounding. The query is the same for every input ("=" at position 2), so keys,
    values and each head's output are computed once per token id (tables [p, heads, ...]) and gathered; the MLP
    output goes to the logits through ``W_U W_out``, multiplied once. With ``return_neurons`` also the MLP's
    post-ReLU activations [batch, d_mlp]."""
    E, pos = params["embed.weight"], params["pos_embed.weight"]
    wq, bq = params["blocks.0.attn.q.weight"], params["blocks.0.attn.q.bias"]
    wk, bk = params["blocks.0.attn.k.weight"], params["blocks.0.attn.k.bias"]
    wv, bv = params["blocks.0.attn.v.weight"], params["blocks.0.attn.v.bias"]
    wo, bo = params["blocks.0.attn.o.weight"], params["blocks.0.attn.o.bias"]
    w_u, b_u = params["unembed.weight"], params["unembed.bias"]
    w_out, b_out = params["blocks.0.mlp.out.weight"], params["blocks.0.mlp.out.bias"]
    d_model, d_head = E.shape[1], wq.shape[0] // n_heads
    x = torch.stack([E[:p] + pos[0], E[:p] + pos[1]])  # [2, p, d]: a at position 0, b at position 1
    x2 = E[p] + pos[2]  # [d]: "=" at position 2
    q = F.linear(x2, wq, bq).view(n_heads, d_head)
    k = F.linear(x, wk, bk).view(2, p, n_heads, d_head)
    k2 = F.linear(x2, wk, bk).view(n_heads, d_head)
    s = torch.einsum("hd,iphd->iph", q, k) / math.sqrt(d_head)  # [2, p, H]
    s2 = (q * k2).sum(-1) / math.sqrt(d_head)  # [H]
    v = F.linear(x, wv, bv).view(2, p, n_heads, d_head)
    v2 = F.linear(x2, wv, bv).view(n_heads, d_head)
    wo_h = wo.view(d_model, n_heads, d_head)
    o = torch.einsum("iphd,mhd->iphm", v, wo_h)  # [2, p, H, d]: a head's output for a value at position 0 / 1
    o2 = torch.einsum("hd,mhd->hm", v2, wo_h)  # [H, d]
    pattern = torch.stack([s[0, a], s[1, b], s2.expand(len(a), -1)], dim=-1).softmax(-1)  # [B, H, 3]
    attn = (pattern[..., 0, None] * o[0, a]).sum(1) + (pattern[..., 1, None] * o[1, b]).sum(1) + pattern[..., 2] @ o2
    resid = x2 + attn + bo
    neurons = F.relu(F.linear(resid, params["blocks.0.mlp.in.weight"], params["blocks.0.mlp.in.bias"]))
    logits = F.linear(resid, w_u, b_u) + neurons @ (w_u @ w_out).T + w_u @ b_out
    return (logits, neurons) if return_neurons else logits


def weight_norm(params: dict[str, torch.Tensor]) -> float:
    """L2 norm of all trained parameters together (the frozen biases left out)."""
    return float(torch.sqrt(sum(v.detach().double().pow(2).sum() for k, v in params.items() if not k.endswith(FROZEN))))


@torch.no_grad()
def progress_measures(
    params: dict[str, torch.Tensor], freqs: list[int], config: ModAddConfig = PAPER
) -> dict[str, float]:
    """:func:`mi_widgets.analysis.fourier.progress_measures` of one set of weights (on all p*p pairs, with
    ``freqs`` as the key frequencies), plus ``weight_norm``."""
    p = config.p
    tokens, labels = all_pairs(p)
    device = params["embed.weight"].device
    logits = fast_forward(params, tokens[:, 0].to(device), tokens[:, 1].to(device), p, config.n_heads)
    mask = train_split(p, config.train_frac, config.data_seed)
    return {**fourier.progress_measures(logits, labels, mask, freqs, p), "weight_norm": weight_norm(params)}


def to_bridge(params: dict[str, torch.Tensor], config: ModAddConfig = PAPER, tokenizer: Any = None) -> Any:
    """A TransformerLens ``TransformerBridge`` (native, the parameterization of ``zoo.load("modadd-113")``) holding
    ``params``, in eval mode on their device; without ``tokenizer`` a word-level one like the zoo model's."""
    from transformer_lens import TransformerBridge, TransformerBridgeConfig

    if tokenizer is None:
        tokenizer = word_tokenizer(config.p)
    bridge = TransformerBridge.boot_native(TransformerBridgeConfig(**bridge_config(config)), tokenizer=tokenizer)
    device = params["embed.weight"].device
    bridge.to(device)
    bridge.load_state_dict({k: v.detach().float() for k, v in params.items()}, strict=True)
    return bridge.eval()


# --------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------


class ModAddTrainer:
    """Full-batch AdamW on the training pairs of ``config``, a step at a time, on ``device``.

    The recipe (:func:`train`) and the live :class:`mi_widgets.Grokking` widget both train with it. ``step()``
    takes one optimizer step and returns the training loss before it; ``evaluate()`` gives train/test loss and
    accuracy of the current weights; ``params`` are the weights (keys of the bridge's state dict)."""

    def __init__(self, config: ModAddConfig = PAPER, device: torch.device | str | None = None) -> None:
        self.config = config
        self.device = torch.device(device or "cpu")
        self.params = {k: v.to(self.device) for k, v in init_params(config).items()}
        tokens, labels = all_pairs(config.p)
        mask = train_split(config.p, config.train_frac, config.data_seed)
        on = functools.partial(torch.Tensor.to, device=self.device)
        self.train_mask = mask
        self._train = (on(tokens[mask, 0]), on(tokens[mask, 1]), on(labels[mask]))
        self._test = (on(tokens[~mask, 0]), on(tokens[~mask, 1]), on(labels[~mask]))
        trainable = [v.requires_grad_() for k, v in self.params.items() if not k.endswith(FROZEN)]
        self.optimizer = torch.optim.AdamW(
            trainable, lr=config.lr, weight_decay=config.weight_decay, betas=config.betas
        )
        warmup = config.warmup
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda s: min((s + 1) / warmup, 1.0))
        self.steps = 0
        self.metrics: dict[str, float] = {}  # evaluate() before the last step(evaluate=True)

    def _logits(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return fast_forward(self.params, a, b, self.config.p, self.config.n_heads)

    def step(self, evaluate: bool = False) -> torch.Tensor:
        """One optimizer step; the training loss before it (a 0-d tensor on the device). With ``evaluate``,
        ``metrics`` holds :meth:`evaluate` of the weights before the step, reusing this step's train logits."""
        a, b, y = self._train
        logits = self._logits(a, b)
        loss = F.cross_entropy(logits, y)
        if evaluate:
            self.metrics = self.evaluate(logits.detach())
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.scheduler.step()
        self.steps += 1
        return loss.detach()

    @torch.no_grad()
    def evaluate(self, train_logits: torch.Tensor | None = None) -> dict[str, float]:
        """Train/test loss and accuracy of the current weights (``train_logits``: reuse the train logits computed
        for these weights)."""
        a, b, y = self._train
        tr = self._logits(a, b) if train_logits is None else train_logits
        ta, tb, ty = self._test
        te = self._logits(ta, tb)
        return {
            "train_loss": float(F.cross_entropy(tr, y)),
            "test_loss": float(F.cross_entropy(te, ty)),
            "train_acc": float((tr.argmax(-1) == y).float().mean()),
            "test_acc": float((te.argmax(-1) == ty).float().mean()),
        }

    def snapshot(self) -> dict[str, torch.Tensor]:
        """A detached copy of the weights."""
        return {k: v.detach().clone() for k, v in self.params.items()}

    def load(self, state: dict[str, torch.Tensor]) -> None:
        """Put ``state`` (a :meth:`snapshot`) back into the weights."""
        with torch.no_grad():
            for k, v in self.params.items():
                v.copy_(state[k])


def train(
    config: ModAddConfig = PAPER,
    steps: int = DEFAULT_STEPS,
    stop_test_loss: float = STOP_TEST_LOSS,
    max_seconds: float | None = None,
    log: Any = print,
) -> dict[str, Any]:
    """Full-batch AdamW on the training pairs until ``steps``, or until the test loss has stayed under
    ``stop_test_loss`` with 100% test accuracy for ``STOP_PATIENCE`` steps, or ``max_seconds``.

    Returns the final ``params``, the per-``LOG_EVERY`` log (step, train/test loss and accuracy), weight snapshots
    every ``CHECK_EVERY`` steps (float32, in memory) and timings."""
    trainer = ModAddTrainer(config)
    a_tr, b_tr, y_tr = trainer._train
    rows: list[list[float]] = []
    snapshots: dict[int, dict[str, torch.Tensor]] = {}
    below_since: int | None = None
    t0 = time.time()
    step = 0
    while True:
        if step % CHECK_EVERY == 0:
            snapshots[step] = trainer.snapshot()
        if step % LOG_EVERY == 0:
            with torch.no_grad():
                m = trainer.evaluate()
            rows.append([step, m["train_loss"], m["test_loss"], m["train_acc"], m["test_acc"]])
            if step % 500 == 0:
                log(
                    f"step {step:6d}  train loss {m['train_loss']:.2e} acc {m['train_acc']:.4f}  test loss "
                    f"{m['test_loss']:.2e} acc {m['test_acc']:.4f}  ({time.time() - t0:.0f}s)"
                )
            if m["test_loss"] < stop_test_loss and m["test_acc"] == 1.0:
                below_since = step if below_since is None else below_since
            else:
                below_since = None
            out_of_time = max_seconds is not None and time.time() - t0 > max_seconds
            if (below_since is not None and step - below_since >= STOP_PATIENCE) or step >= steps or out_of_time:
                stop = "test loss" if below_since is not None else ("steps" if step >= steps else "time")
                break
        trainer.step()
        step += 1
    train_s = time.time() - t0
    snapshots[step] = trainer.snapshot()
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


def word_tokenizer(p: int = P) -> Any:
    """A word-level tokenizer: ``"0"`` .. ``str(p-1)`` are ids ``0..p-1``, ``"="`` is id ``p``, split on
    whitespace, no BOS; an unknown word becomes "=" (the tokenizer's unk token; TransformerLens's boot encodes
    "a" to probe for BOS, so it must not raise)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {str(i): i for i in range(p)}
    vocab["="] = p
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="="))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tok, model_max_length=3)


def save_tokenizer(out: Path, p: int = P) -> Any:
    """:func:`word_tokenizer` saved to ``out`` and loaded back (as ``zoo.load`` loads it)."""
    from transformers import AutoTokenizer

    out.mkdir(parents=True, exist_ok=True)
    word_tokenizer(p).save_pretrained(str(out))
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


def write_model(out: Path, result: dict[str, Any], config: ModAddConfig = PAPER) -> dict[str, Any]:
    """Write ``model.safetensors``, the tokenizer, ``history.safetensors``, ``config.json`` and ``README.md``."""
    from safetensors.torch import save_file

    p, seed = config.p, config.seed
    params = {k: v.detach().clone().contiguous() for k, v in result["params"].items()}
    freqs = fourier.top_frequencies(fourier.fourier_norms(params["embed.weight"], p), N_KEY)
    tokens, labels = all_pairs(p)

    # Boot the bridge the way zoo.load does and check it computes the training model's function.
    cfg = bridge_config(config)
    bridge = to_bridge(params, config, save_tokenizer(out, p))
    with torch.no_grad():
        bridge_logits = bridge(tokens)[:, -1]
        ref = forward(params, tokens)
    max_diff = float((bridge_logits - ref).abs().max())
    if max_diff > 1e-3:
        raise RuntimeError(f"the bridge's logits differ from the training model's by {max_diff}")
    save_file(params, str(out / "model.safetensors"))

    # Progress measures at every snapshot, with the final key frequencies.
    snap_steps = sorted(result["snapshots"])
    measures = [progress_measures(result["snapshots"][s], freqs, config) for s in snap_steps]
    spectra = torch.stack([fourier.fourier_norms(result["snapshots"][s]["embed.weight"], p) for s in snap_steps])
    log = result["log"]
    final = progress_measures(params, freqs, config)
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
        "check.embed_fourier_norm": spectra.float(),
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
        "data_seed": config.data_seed,
        "p": p,
        "frac_train": config.train_frac,
        "n_train": int(train_split(p, config.train_frac, config.data_seed).sum()),
        "optimizer": "AdamW (full batch)",
        "lr": config.lr,
        "weight_decay": config.weight_decay,
        "betas": list(config.betas),
        "warmup_steps": config.warmup,
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
        "embed_fourier_norms": [round(float(v), 4) for v in fourier.fourier_norms(params["embed.weight"], p)],
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
  {m["key_fraction"]:.1%} of their (centred) squared norm. Restricted loss (all pairs; the logits with
  every non-key frequency ablated: for each answer, their projection over the pairs onto the constant and
  `cos/sin(w (a + b))` at the key frequencies) {m["restricted_loss"]:.2e}; excluded loss (train pairs; the logits
  minus their key-frequency `cos/sin(w (a + b))` part) {m["excluded_loss"]:.2e}.

## History (`history.safetensors`)

Load with `safetensors.torch.load_file`. Steps count optimizer updates (step 0 = init).

- `log.step`, `log.train_loss`, `log.test_loss`, `log.train_acc`, `log.test_acc`: every {t["history"]["log_every"]}
  steps (full-batch train loss before that step's update; test on all other pairs).
- `check.step` (every {t["history"]["check_every"]} steps and the last): `check.embed_fourier_norm`
  [checks, {(p + 1) // 2}] (column 0 the constant, column k frequency k: `fourier_norms` in `mi_widgets/analysis/fourier.py`),
  `check.weight_norm` (L2 norm of all trained parameters), `check.train_loss`, `check.test_loss`,
  `check.restricted_loss`, `check.excluded_loss`, `check.key_fraction` (definitions: `progress_measures` in
  `mi_widgets/analysis/fourier.py`; all with the FINAL key frequencies `key_frequencies`).
- `checkpoint.step` ({", ".join(str(s) for s in t["history"]["checkpoint_steps"])}) and `checkpoint.<state-dict
  key>`: the weights at those steps, float16, stacked on a first axis; `model.load_state_dict({{k: v[i].float()
  ...}})` puts checkpoint i in the bridge.
"""


def train_modadd(
    out: Path, steps: int = DEFAULT_STEPS, seed: int = DEFAULT_SEED, p: int = P, max_seconds: float | None = None
) -> dict[str, Any]:
    """Train on one CPU thread and write the zoo folder ``out`` (the CLI's entry point)."""
    torch.set_num_threads(1)  # 1 thread was ~2-3x faster than 2 for this model on the 2-core dev machine
    config = ModAddConfig(p=p, seed=seed)
    result = train(config, steps=steps, max_seconds=max_seconds, log=lambda s: print(s, flush=True))
    training = write_model(out, result, config)
    m = training["metrics"]
    print(
        f"{training['steps']} steps in {training['train_seconds']:.0f}s; train acc {m['train_acc']:.4f}, test acc "
        f"{m['test_acc']:.4f}, test loss {m['test_loss']:.2e}; key frequencies {training['key_frequencies']}"
    )
    return training
