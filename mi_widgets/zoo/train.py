"""Train the zoo's bundled models from scratch, offline and deterministically.

The shipped weights under ``mi_widgets/zoo/models/`` are the output of this script, so anyone can
check where they came from and regenerate them with one command:

    python -m mi_widgets.zoo.train induction-2l [--steps N] [--out DIR] [--seed S]
    python -m mi_widgets.zoo.train code-2l [--steps N] [--out DIR] [--seed S]

``induction-2l``'s recipe is in this file; ``code-2l``'s in :mod:`mi_widgets.zoo.code_2l`.
"""

from __future__ import annotations

import argparse
import json
import math
import sysconfig
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from .tokenizer import BOS_TOKEN, train_bpe_tokenizer

VOCAB_SIZE = 512

MODELS_DIR = Path(__file__).resolve().parent / "models"

# Local text that exists on every machine with Python: a fixed, sorted list of stdlib sources.
STDLIB_FILES: tuple[str, ...] = (
    "bisect.py",
    "colorsys.py",
    "fnmatch.py",
    "glob.py",
    "heapq.py",
    "shlex.py",
    "string.py",
    "textwrap.py",
)

# A little English so common words in demo prompts (" the", " cat", " mat") get their own tokens.
ENGLISH: tuple[str, ...] = (
    "The cat sat on the mat.",
    "The dog sat on the log.",
    "A cat and a dog are friends.",
    "The man went to the store and bought some bread.",
    "She said that the book was on the table.",
    "When Mary and John went to the store, John gave a drink to Mary.",
    "The quick brown fox jumps over the lazy dog.",
    "It is a truth universally acknowledged that a good story needs an end.",
    "There is a house in the town where the old woman lives with her cat.",
    "He is in the room and she is at the door.",
    "I think it will rain today, so take the red coat.",
    "We have a small model that can copy a sequence it has seen before.",
    "The first time you read it, the second time you know it.",
    "Harry Potter and the cat of the house sat on the mat in the hall.",
    "This is the end of the line for the train and the bus.",
    "They were happy to see the sun come up over the hill.",
)

INDUCTION_2L_CONFIG: dict[str, Any] = dict(
    d_model=64,
    d_head=16,
    n_heads=4,
    n_layers=2,
    n_ctx=128,
    d_vocab=VOCAB_SIZE,
    attn_only=True,
    positional_embedding_type="rotary",
)

DEFAULT_SEED = 0
DEFAULT_STEPS = 3000
BATCH = 32
LR = 1e-3
MIN_L, MAX_L = 8, 30

RECIPE = (
    "Attention-only 2-layer transformer with rotary position embeddings, trained from random init "
    "on synthetic repeated sequences packed to the full context: [BOS, x1, x1, x2, x2, ...] cut "
    "at n_ctx, each x_k of L_k uniformly random non-special tokens, L_k drawn from "
    f"{MIN_L}..{MAX_L} (varying L avoids a positional shortcut). Next-token cross-entropy on all "
    f"positions, batch {BATCH}, Adam lr {LR}. Why not the plain [BOS, x, x] recipe with learned "
    "absolute positions: its heads only work at the positions it was trained on (the "
    "previous-token head fades after position ~40, induction is gone past ~60); with random "
    "fillers or packing, learned absolute positions fell into a non-induction positional "
    "solution; rotary without packing still failed past the trained length. Rotary plus packing "
    "gives the same circuit at every position up to n_ctx."
)

CLASSIC_RECIPE = (
    "Classic recipe (--classic): learned absolute position embeddings, each sequence [BOS, x, x] "
    f"with L drawn per batch from {MIN_L}..{MAX_L}, next-token loss on all positions, batch "
    f"{BATCH}, Adam lr {LR}. Circuit only works for prompts up to ~40 tokens."
)


# --------------------------------------------------------------------------------------------
# Tokenizer
# --------------------------------------------------------------------------------------------


def corpus() -> list[str]:
    """Texts the tokenizer is trained on: the stdlib files above plus the inline English."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    texts = [(stdlib / name).read_text(encoding="utf-8") for name in sorted(STDLIB_FILES)]
    # The English is repeated so its words win merges over Python identifiers.
    texts.extend(list(ENGLISH) * 20)
    return texts


def build_tokenizer(out: Path, n_ctx: int) -> Any:
    """Train induction-2l's byte-level BPE (vocab 512) on :func:`corpus`, save it to ``out`` and load it back."""
    return train_bpe_tokenizer(out, corpus(), VOCAB_SIZE, n_ctx)


# --------------------------------------------------------------------------------------------
# Data and metrics
# --------------------------------------------------------------------------------------------


def _random_ids(batch: int, n: int, bos_id: int, d_vocab: int, gen: torch.Generator) -> torch.Tensor:
    ids = torch.randint(0, d_vocab - 1, (batch, n), generator=gen)
    return ids + (ids >= bos_id).long()  # uniform over every id except BOS


def repeated_batch(batch: int, length: int, bos_id: int, d_vocab: int, generator: torch.Generator) -> torch.Tensor:
    """[BOS, x, x] with x ``length`` random non-BOS ids per row."""
    x = _random_ids(batch, length, bos_id, d_vocab, generator)
    return torch.cat([torch.full((batch, 1), bos_id, dtype=torch.long), x, x], dim=1)


def packed_batch(batch: int, n_ctx: int, bos_id: int, d_vocab: int, generator: torch.Generator) -> torch.Tensor:
    """[BOS, x1, x1, x2, x2, ...] cut at ``n_ctx``; each segment length drawn from MIN_L..MAX_L."""
    parts = [torch.full((batch, 1), bos_id, dtype=torch.long)]
    n = 1
    while n < n_ctx:
        length = int(torch.randint(MIN_L, MAX_L + 1, (1,), generator=generator))
        x = _random_ids(batch, length, bos_id, d_vocab, generator)
        parts += [x, x]
        n += 2 * length
    return torch.cat(parts, dim=1)[:, :n_ctx]


@torch.no_grad()
def measure(model: Any, length: int = 20, batch: int = 64, seed: int = 12345, offset: int = 0) -> dict[str, Any]:
    """Per-head induction/previous-token scores and losses on fresh [BOS, r, x, x] sequences.

    r is ``offset`` random tokens (none by default), x is ``length`` random tokens.
    induction[l][h]: mean attention from each query i in the second copy to key i-L+1 (the token
    after the previous occurrence of the current token). prev_token[l][h]: mean attention from
    each query i >= 1 (i > offset with a prefix) to key i-1. loss_first: mean loss predicting the
    first copy's tokens; loss_repeat: mean loss predicting the second copy's tokens 2..L (the
    first is unpredictable).
    """
    cfg = model.cfg
    gen = torch.Generator().manual_seed(seed)
    bos_id = int(model.tokenizer.bos_token_id) if model.tokenizer is not None else 0
    x = repeated_batch(batch, length, bos_id, cfg.d_vocab, gen)
    r = _random_ids(batch, offset, bos_id, cfg.d_vocab, gen)
    tokens = torch.cat([x[:, :1], r, x[:, 1:]], dim=1)
    device = next(model.parameters()).device
    tokens = tokens.to(device)
    logits, cache = model.run_with_cache(tokens, names_filter=lambda n: n.endswith("hook_pattern"))
    L, s = length, 1 + offset  # s: position of the first copy's first token
    q_ind = torch.arange(s + L, s + 2 * L, device=device)
    q_prev = torch.arange(s, s + 2 * L, device=device)
    induction: list[list[float]] = []
    prev_token: list[list[float]] = []
    for layer in range(cfg.n_layers):
        pattern = cache[f"blocks.{layer}.attn.hook_pattern"]  # [batch, head, query, key]
        induction.append(pattern[:, :, q_ind, q_ind - L + 1].mean(dim=(0, 2)).tolist())
        prev_token.append(pattern[:, :, q_prev, q_prev - 1].mean(dim=(0, 2)).tolist())
    logp = F.log_softmax(logits.float(), dim=-1)
    nll = -logp[:, :-1].gather(-1, tokens[:, 1:, None])[..., 0]  # nll[:, t] predicts token t+1
    return {
        "eval": f"[BOS, r, x, x], |r|={offset}, |x|=L={L}, batch={batch}, seed={seed}",
        "loss_first": round(float(nll[:, s - 1 : s - 1 + L].mean()), 4),
        "loss_repeat": round(float(nll[:, s + L : s + 2 * L - 1].mean()), 4),
        "induction": [[round(v, 4) for v in row] for row in induction],
        "prev_token": [[round(v, 4) for v in row] for row in prev_token],
    }


def format_scores(m: dict[str, Any]) -> str:
    lines = [f"loss first copy {m['loss_first']:.3f}  repeated copy {m['loss_repeat']:.3f}"]
    for layer, (ind, prev) in enumerate(zip(m["induction"], m["prev_token"])):
        lines.append(
            f"layer {layer}  induction "
            + " ".join(f"{s:.2f}" for s in ind)
            + "  prev-token "
            + " ".join(f"{s:.2f}" for s in prev)
        )
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------


def train_induction_2l(out: Path, steps: int, seed: int, device: str = "cpu", classic: bool = False) -> dict[str, Any]:
    """Train ``induction-2l`` and write tokenizer, weights, config.json and README.md to ``out``."""
    from safetensors.torch import save_file
    from transformer_lens import TransformerBridge, TransformerBridgeConfig

    torch.manual_seed(seed)
    torch.set_num_threads(1)  # measured ~6x faster than 2 threads for this tiny model on CPU

    cfg_kwargs = dict(INDUCTION_2L_CONFIG, seed=seed)
    if classic:
        del cfg_kwargs["positional_embedding_type"]
    n_ctx = int(cfg_kwargs["n_ctx"])
    d_vocab = int(cfg_kwargs["d_vocab"])
    tokenizer = build_tokenizer(out, n_ctx)
    bos_id = int(tokenizer.bos_token_id)
    model = TransformerBridge.boot_native(TransformerBridgeConfig(**cfg_kwargs), tokenizer=tokenizer, device=device)
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=LR)
    gen = torch.Generator().manual_seed(seed)

    t0 = time.time()
    for step in range(1, steps + 1):
        if classic:
            length = int(torch.randint(MIN_L, MAX_L + 1, (1,), generator=gen))
            tokens = repeated_batch(BATCH, length, bos_id, d_vocab, gen)
        else:
            tokens = packed_batch(BATCH, n_ctx, bos_id, d_vocab, gen)
        tokens = tokens.to(device)
        logits = model(tokens)
        loss = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), tokens[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % 250 == 0 or step == steps:
            model.eval()
            m = measure(model)
            model.train()
            print(
                f"step {step:5d}  train loss {loss.item():.3f}  eval loss first copy "
                f"{m['loss_first']:.3f}  repeated copy {m['loss_repeat']:.3f}"
                f"  ({time.time() - t0:.0f}s)",
                flush=True,
            )
    train_s = time.time() - t0

    model.eval()
    metrics = measure(model)
    # The same test placed at the end of the context, after n_ctx - 1 - 2L random tokens.
    metrics["late"] = measure(model, offset=n_ctx - 1 - 2 * 20)
    print(format_scores(metrics))
    print("at the end of the context:")
    print(format_scores(metrics["late"]))

    state = {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}
    save_file(state, str(out / "model.safetensors"))
    training = {
        "seed": seed,
        "steps": steps,
        "batch": BATCH,
        "lr": LR,
        "optimizer": "Adam",
        "seq_len_range": [MIN_L, MAX_L],
        "recipe": CLASSIC_RECIPE if classic else RECIPE,
        "train_seconds": round(train_s, 1),
        "torch": torch.__version__,
        "tokenizer": (
            f"byte-level BPE, vocab {VOCAB_SIZE}, special token {BOS_TOKEN} (id {bos_id}) as "
            f"bos/eos/pad/unk, trained on stdlib {', '.join(sorted(STDLIB_FILES))} "
            "plus inline English sentences (see train.py)"
        ),
        "metrics": metrics,
    }
    (out / "config.json").write_text(json.dumps({"config": cfg_kwargs, "training": training}, indent=2) + "\n")
    (out / "README.md").write_text(readme(cfg_kwargs, training))
    return training


def readme(cfg: dict[str, Any], training: dict[str, Any]) -> str:
    m, late = training["metrics"], training["metrics"]["late"]
    rows = []
    for layer in range(cfg["n_layers"]):
        for head in range(cfg["n_heads"]):
            rows.append(
                f"| L{layer}H{head} | {m['induction'][layer][head]:.3f} "
                f"| {m['prev_token'][layer][head]:.3f} "
                f"| {late['induction'][layer][head]:.3f} "
                f"| {late['prev_token'][layer][head]:.3f} |"
            )
    table = "\n".join(rows)
    pos = cfg.get("positional_embedding_type", "standard")
    rotary_note = (
        "With rotary positions there is no `pos_embed` / `hook_pos_embed`; position enters through "
        "the\nrotation of queries and keys in every attention layer.\n\n"
        if pos == "rotary"
        else ""
    )
    cmd = f"python -m mi_widgets.zoo.train induction-2l --steps {training['steps']} --seed {training['seed']}"
    if pos != "rotary":
        cmd += " --classic"
    return f"""# induction-2l

A tiny attention-only transformer (2 layers x 4 heads, d_model {cfg["d_model"]}, d_head
{cfg["d_head"]}, n_ctx {cfg["n_ctx"]}, vocab {cfg["d_vocab"]}, {pos} positions) trained from
scratch to copy repeated random token sequences. It forms the textbook two-layer induction
circuit: a previous-token head in layer 0 and induction heads in layer 1. Load it offline with:

```python
from mi_widgets import zoo
model = zoo.load("induction-2l")  # a TransformerLens TransformerBridge
```

{rotary_note}## Training

{training["recipe"]}

Seed {training["seed"]}, {training["steps"]} steps, {training["train_seconds"]} s on one CPU thread
(torch {training["torch"]}). Tokenizer: {training["tokenizer"]}. The tokenizer was trained on
code and a few sentences, so English splits into short pieces; the model knows nothing about
language, only how to copy.

Regenerate (deterministic on CPU for the same library versions; the tokenizer depends on the
stdlib files of the Python that runs it):

```
{cmd}
```

## Measured scores

Induction score: mean attention from query i in the second copy to key i-L+1 (the token after
the previous occurrence of the current token). Previous-token score: mean attention from query
i to key i-1 over the x x part.

- start: {m["eval"]}. Loss on the first copy {m["loss_first"]:.3f} (chance ln 511 =
  {math.log(511):.3f}), on the repeated copy {m["loss_repeat"]:.3f}.
- end: {late["eval"]} (the repeat sits at the end of the context). Loss on the first copy
  {late["loss_first"]:.3f}, on the repeated copy {late["loss_repeat"]:.3f}.

| head | induction (start) | prev-token (start) | induction (end) | prev-token (end) |
|------|-------------------|--------------------|-----------------|------------------|
{table}
"""


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name", choices=["induction-2l", "code-2l", "ioi-4l", "modadd-113"])
    parser.add_argument("--steps", type=int, default=None, help="default: the recipe's own")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--out", type=Path, default=None, help="default: the zoo's own folder")
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--classic",
        action="store_true",
        help="learned absolute positions, unpacked [BOS, x, x]: works for short prompts only",
    )
    args = parser.parse_args(argv)
    out = args.out if args.out is not None else MODELS_DIR / args.name
    if args.name == "code-2l":
        from . import code_2l

        code_2l.train_code_2l(out, steps=args.steps or code_2l.DEFAULT_STEPS, seed=args.seed, device=args.device)
    elif args.name == "modadd-113":
        from . import modadd

        modadd.train_modadd(out, steps=args.steps or modadd.DEFAULT_STEPS, seed=args.seed)
    elif args.name == "ioi-4l":
        from . import ioi

        ioi.train_ioi(out, steps=args.steps or ioi.DEFAULT_STEPS, seed=args.seed, device=args.device)
    else:
        train_induction_2l(
            out, steps=args.steps or DEFAULT_STEPS, seed=args.seed, device=args.device, classic=args.classic
        )
    size = sum(f.stat().st_size for f in out.iterdir() if f.is_file())
    print(f"wrote {out} ({size / 1024:.0f} KB)")


if __name__ == "__main__":
    main()
