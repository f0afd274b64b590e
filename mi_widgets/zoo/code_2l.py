"""Recipe for ``code-2l``: a 2-layer transformer with MLPs, trained on the Python standard library.

The stdlib's own ``.py`` files are real code and prose (docstrings, comments) that exist
wherever Python does, so the model trains offline and every user has text to run it on.
Files are split deterministically: every 10th file (by sorted name) is held out, and
:func:`stdlib_texts` hands either split to tutorials and tests.

    python -m mi_widgets.zoo.train code-2l [--steps N] [--seed S] [--out DIR]
"""

from __future__ import annotations

import json
import math
import sysconfig
import time
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F

from .tokenizer import BOS_TOKEN, train_bpe_tokenizer

VOCAB_SIZE = 2048
HELD_OUT_EVERY = 10

CODE_2L_CONFIG: dict[str, Any] = dict(
    d_model=128,
    d_head=32,
    n_heads=4,
    n_layers=2,
    d_mlp=512,
    act_fn="gelu",
    normalization_type="LN",
    n_ctx=256,
    d_vocab=VOCAB_SIZE,
)

DEFAULT_STEPS = 2500
DEFAULT_SEED = 0
BATCH = 16
LR = 3e-3
WARMUP = 100
WEIGHT_DECAY = 0.05

RECIPE = (
    f"Next-token cross-entropy on windows of n_ctx tokens, each starting with BOS, cut at random offsets "
    f"from the training files (each file tokenized and prefixed with BOS); batch {BATCH}, AdamW lr {LR} "
    f"(linear warmup {WARMUP} steps, cosine decay to 10%), weight decay {WEIGHT_DECAY}, gradient clip 1.0. "
    f"Training files: the stdlib's top-level .py files except every {HELD_OUT_EVERY}th by sorted name, "
    "which are held out."
)


def stdlib_files(split: Literal["train", "heldout", "all"] = "train") -> list[Path]:
    """The stdlib's top-level ``.py`` files of one split (sorted by name; deterministic per Python version)."""
    if split not in ("train", "heldout", "all"):
        raise ValueError(f"split must be 'train', 'heldout' or 'all', got {split!r}")
    lib = Path(sysconfig.get_paths()["stdlib"])
    files = sorted(lib.glob("*.py"), key=lambda p: p.name)
    if split == "all":
        return files
    held = split == "heldout"
    return [p for i, p in enumerate(files) if (i % HELD_OUT_EVERY == HELD_OUT_EVERY - 1) == held]


def stdlib_texts(split: Literal["train", "heldout", "all"] = "heldout", max_files: int | None = None) -> list[str]:
    """Source texts of the stdlib's top-level modules: a corpus every machine with Python has."""
    files = stdlib_files(split)[:max_files]
    return [p.read_text(encoding="utf-8", errors="replace") for p in files]


def token_stream(tokenizer: Any, texts: list[str]) -> torch.Tensor:
    """All texts as one id stream, each text preceded by BOS."""
    bos = int(tokenizer.bos_token_id)
    ids: list[int] = []
    for text in texts:
        ids.append(bos)
        ids.extend(tokenizer.backend_tokenizer.encode(text, add_special_tokens=False).ids)  # no n_ctx warning
    return torch.tensor(ids, dtype=torch.long)


def sample_windows(stream: torch.Tensor, batch: int, n_ctx: int, bos: int, gen: torch.Generator) -> torch.Tensor:
    """``batch`` windows ``[BOS, n_ctx - 1 tokens]`` from random offsets of the stream."""
    starts = torch.randint(0, len(stream) - n_ctx, (batch,), generator=gen)
    body = torch.stack([stream[s : s + n_ctx - 1] for s in starts.tolist()])
    return torch.cat([torch.full((batch, 1), bos, dtype=torch.long), body], dim=1)


@torch.no_grad()
def eval_loss(model: Any, stream: torch.Tensor, n_ctx: int, bos: int, batches: int = 8, seed: int = 1) -> float:
    gen = torch.Generator().manual_seed(seed)
    device = next(model.parameters()).device
    losses = []
    for _ in range(batches):
        tokens = sample_windows(stream, BATCH, n_ctx, bos, gen).to(device)
        logits = model(tokens)
        losses.append(float(F.cross_entropy(logits[:, :-1].flatten(0, 1), tokens[:, 1:].flatten())))
    return sum(losses) / len(losses)


def train_code_2l(out: Path, steps: int, seed: int, device: str = "cpu") -> dict[str, Any]:
    """Train ``code-2l`` and write tokenizer, weights, config.json and README.md to ``out``."""
    from safetensors.torch import save_file
    from transformer_lens import TransformerBridge, TransformerBridgeConfig

    torch.manual_seed(seed)
    torch.set_num_threads(1)
    cfg_kwargs = dict(CODE_2L_CONFIG, seed=seed)
    n_ctx = int(cfg_kwargs["n_ctx"])
    train_texts, heldout_texts = stdlib_texts("train"), stdlib_texts("heldout")
    tokenizer = train_bpe_tokenizer(out, train_texts, VOCAB_SIZE, n_ctx)
    bos = int(tokenizer.bos_token_id)
    train_stream, heldout_stream = token_stream(tokenizer, train_texts), token_stream(tokenizer, heldout_texts)
    print(f"train {len(train_stream):,} tokens, held out {len(heldout_stream):,} tokens", flush=True)

    model = TransformerBridge.boot_native(TransformerBridgeConfig(**cfg_kwargs), tokenizer=tokenizer, device=device)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=WEIGHT_DECAY)

    def lr_at(step: int) -> float:
        if step < WARMUP:
            return LR * (step + 1) / WARMUP
        t = (step - WARMUP) / max(1, steps - WARMUP)
        return LR * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * t)))

    gen = torch.Generator().manual_seed(seed)
    t0 = time.time()
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = lr_at(step)
        tokens = sample_windows(train_stream, BATCH, n_ctx, bos, gen).to(device)
        logits = model(tokens)
        loss = F.cross_entropy(logits[:, :-1].flatten(0, 1), tokens[:, 1:].flatten())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if (step + 1) % 250 == 0 or step + 1 == steps:
            model.eval()
            held = eval_loss(model, heldout_stream, n_ctx, bos)
            model.train()
            print(
                f"step {step + 1:5d}  train loss {loss.item():.3f}  held-out loss {held:.3f}  ({time.time() - t0:.0f}s)",
                flush=True,
            )
    train_s = time.time() - t0

    model.eval()
    metrics = {
        "train_loss": round(eval_loss(model, train_stream, n_ctx, bos), 4),
        "heldout_loss": round(eval_loss(model, heldout_stream, n_ctx, bos), 4),
        "unigram_entropy": round(_unigram_entropy(train_stream, VOCAB_SIZE), 4),
        "train_tokens": len(train_stream),
        "heldout_tokens": len(heldout_stream),
    }
    state = {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}
    save_file(state, str(out / "model.safetensors"))
    training = {
        "seed": seed,
        "steps": steps,
        "batch": BATCH,
        "lr": LR,
        "optimizer": "AdamW",
        "recipe": RECIPE,
        "train_seconds": round(train_s, 1),
        "torch": torch.__version__,
        "python_stdlib": sysconfig.get_python_version(),
        "tokenizer": f"byte-level BPE, vocab {VOCAB_SIZE}, trained on the training files; {BOS_TOKEN} (id {bos}) as bos/eos/pad/unk",
        "metrics": metrics,
    }
    (out / "config.json").write_text(json.dumps({"config": cfg_kwargs, "training": training}, indent=2) + "\n")
    (out / "README.md").write_text(readme(cfg_kwargs, training))
    return training


def _unigram_entropy(stream: torch.Tensor, vocab: int) -> float:
    """Loss of the best context-free model: what the trained model must beat."""
    p = torch.bincount(stream, minlength=vocab).double()
    p = p[p > 0] / p.sum()
    return float(-(p * p.log()).sum())


def readme(cfg: dict[str, Any], training: dict[str, Any]) -> str:
    m = training["metrics"]
    return f"""# code-2l

A small transformer with MLPs (2 layers, 4 heads, d_model {cfg["d_model"]}, d_mlp {cfg["d_mlp"]}, {cfg["act_fn"]},
LayerNorm, n_ctx {cfg["n_ctx"]}, vocab {cfg["d_vocab"]}, learned positions) trained from scratch on the Python
standard library's own source files: real code, docstrings and comments present wherever Python is. Some of its
MLP neurons track indentation and keywords (held-out AUROC about 0.94 and 0.88) and, more weakly, comments; "inside
a string" is a direction spread over many neurons rather than one neuron
(`notebooks/03_neurons_and_logit_lens.ipynb` finds and checks them).

```python
from mi_widgets import zoo
model = zoo.load("code-2l")              # a TransformerLens TransformerBridge
texts = zoo.stdlib_texts("heldout")      # files the model never saw
```

## Training

{training["recipe"]}

Seed {training["seed"]}, {training["steps"]} steps, {training["train_seconds"]} s on one CPU thread (torch
{training["torch"]}, stdlib of Python {training["python_stdlib"]}). {m["train_tokens"]:,} training tokens,
{m["heldout_tokens"]:,} held-out tokens. Tokenizer: {training["tokenizer"]}.

Loss (nats/token): training files {m["train_loss"]:.3f}, held-out files {m["heldout_loss"]:.3f}; a unigram model
(no context) scores {m["unigram_entropy"]:.3f}.

Regenerate (deterministic on CPU for the same library versions and stdlib):

```
python -m mi_widgets.zoo.train code-2l --steps {training["steps"]} --seed {training["seed"]}
```
"""
