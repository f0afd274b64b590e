"""Recipe for ``ioi-4l``: a 4-layer attention-only transformer that does indirect-object identification.

Trained from scratch, offline, on packed sequences that each hold one templated IOI sentence
(:mod:`mi_widgets.datasets.ioi`, TRAIN frames and TRAIN names only, ABBA and BABA mixed; the frames put
the names and S2 at varied positions so no positional shortcut works) at a random offset, among other
text: English sentences, sentences that mention one name (all names, so the held-out names get trained
embeddings without ever being in an IOI sentence), stdlib Python, and random / repeated random tokens.
After training the script measures the task on held-out frames and held-out names and looks for the
circuit with activation patching (TransformerLens) and path patching (:class:`mi_widgets.PathPatching`).

    python -m mi_widgets.zoo.train ioi-4l [--steps N] [--seed S] [--out DIR]
"""

from __future__ import annotations

import json
import random
import sysconfig
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from ..capture.adapter import ModelAdapter
from ..datasets import ioi as ioi_data
from .tokenizer import BOS_TOKEN, train_bpe_tokenizer

NAME = "ioi-4l"
VOCAB_SIZE = 1024

IOI_4L_CONFIG: dict[str, Any] = dict(
    d_model=64,
    d_head=16,
    n_heads=4,
    n_layers=4,
    n_ctx=64,
    d_vocab=VOCAB_SIZE,
    attn_only=True,
    positional_embedding_type="rotary",
)

DEFAULT_STEPS = 2500
DEFAULT_SEED = 0
BATCH = 32
LR = 2e-3
WARMUP = 100
RANDOM_NAMES = 0.5  # share of IOI sentences whose two names are random tokens (see RECIPE)
ANSWER_WEIGHT = 1.0  # extra loss on the IO-answer token of each IOI sentence (see RECIPE)
TRAIN_LEN = 48  # tokens per training sequence (n_ctx is 64; rotary positions carry over)
MAX_PREFIX = 20  # tokens of other text before the IOI sentence: its position varies 1..~22

STDLIB_FILES: tuple[str, ...] = ("bisect.py", "colorsys.py", "fnmatch.py", "heapq.py", "shlex.py", "textwrap.py")

# English that is not IOI. It also carries every word of the held-out frames (Yesterday, met, sent, At,
# As, sat, showed), so those tokens are trained even though no IOI sentence uses them.
ENGLISH: tuple[str, ...] = (
    "The cat sat on the mat.",
    "The dog sat on the log.",
    "A cat and a dog are friends.",
    "The man went to the store and bought some bread.",
    "She said that the book was on the table.",
    "The quick brown fox jumps over the lazy dog.",
    "There is a house in the town where the old woman lives with her cat.",
    "He is in the room and she is at the door.",
    "I think it will rain today, so take the red coat.",
    "They were happy to see the sun come up over the hill.",
    "Yesterday it rained all day, and the park was empty.",
    "We met at the station and sat in the garden.",
    "At the end of the day the office was quiet.",
    "As the sun went down, the birds sat on the church roof.",
    "He showed the plan to the class, and then he sent it home.",
    "The letter was sent yesterday, and it arrived at the house today.",
    "They met in the restaurant, sat at a table and had a drink.",
    "At school the children found a ball in the garden.",
    "As it was late, the doctor at the hospital went home.",
    "The book showed how the computer worked.",
    "When it is cold, the dog stays in the house.",
    "After the game, the team went to the park.",
    "Once upon a time there was a small town with a big church.",
    "While the water was hot, he made a snack.",
    "Friends are the people who stay when things go wrong.",
    "Then the train arrived at the station, and everyone got on.",
    "They sat down together and had a long talk about the book.",
    "Later she wrote a letter and sent it back to the office, and later she went home.",
    "He wanted to show the garden to the class, so they sat down at the church.",
    "We met at the park and showed the dog a ball.",
)

# One-name sentences (any name, train or held out). Some copy the name later ("... to {N}."), so
# copying a name is not special to IOI and held-out names get used as outputs as well as inputs.
NAME_SENTENCES: tuple[str, ...] = (
    "I saw {N} at the {PLACE}.",
    "The {OBJECT} is for {N}.",
    "Then {N} went to the {PLACE}.",
    "We met {N} at the {PLACE}, and we gave a {OBJECT} to {N}.",
    "Yesterday I sat with {N} in the {PLACE}, and I showed the {OBJECT} to {N}.",
    "It was {N} who found the {OBJECT}.",
    "Later that day, {N} was in the {PLACE}.",
    "Everyone likes {N}, and {N} likes the {PLACE}.",
)

RECIPE = (
    "Attention-only 4-layer transformer with rotary positions, trained from random init with next-token "
    "cross-entropy on all positions plus an extra term (weight {answer_weight}) on the answer token of each IOI "
    "sentence. Each training sequence ({train_len} tokens; n_ctx {n_ctx}) is [BOS, prefix, IOI sentence, filler] "
    "joined by newlines: the prefix is 0-{max_prefix} tokens of other text so the IOI sentence starts at varied "
    "positions; the IOI sentence uses one of the 14 TRAIN frames (mi_widgets.datasets.ioi: 12-22 tokens, S2 "
    "1-6 tokens before the answer, S2 as subject, object or after 'by'/'was', so neither an absolute nor a "
    "relative position tells S from IO) and two of the 36 TRAIN names, ABBA or BABA with equal odds, completed "
    "with ' IO.'; in half of the IOI sentences the two names are replaced by random vocabulary tokens, so the "
    "answer has to be found by matching tokens and copied by attention. The other text is English sentences, "
    "stdlib Python, random tokens and (40% of the pieces) repeated random tokens x x, for duplicate-token, "
    "previous-token and induction heads; the filler also has one-name sentences over ALL names (so the 12 "
    "held-out names have trained embeddings but never occur in an IOI sentence). "
    "Batch {batch}, AdamW lr {lr} (warmup {warmup}, cosine to 10%), weight decay 0.01, gradient clip 1.0."
)


# --------------------------------------------------------------------------------------------
# Tokenizer
# --------------------------------------------------------------------------------------------


def _stdlib_texts() -> list[str]:
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    return [(stdlib / name).read_text(encoding="utf-8") for name in sorted(STDLIB_FILES)]


def _all_ioi_words_text(rng: random.Random, n: int) -> list[str]:
    """IOI sentences over ALL frames and names, for the tokenizer's merges only (never trained on)."""
    out = []
    for _ in range(n):
        frame = ioi_data.FRAMES[rng.choice(list(ioi_data.FRAMES))]
        a, b = rng.sample(ioi_data.NAMES, 2)
        out.append(ioi_data.fill_frame(frame, a, b, b, rng.choice(ioi_data.PLACES), rng.choice(ioi_data.OBJECTS)))
    return out


def tokenizer_corpus(seed: int) -> list[str]:
    """Stdlib files, the English above, and many sentences with every name/place/object, so that each
    of those words (with its leading space) becomes one token."""
    rng = random.Random(seed)
    texts = _stdlib_texts()
    texts.extend(list(ENGLISH) * 30)
    texts.extend(_all_ioi_words_text(rng, 3000))
    return texts


def check_tokenizer(tokenizer: Any) -> None:
    """Every IOI word is one token and the held-out frames share one length: fail loudly otherwise."""
    bad = [
        w
        for w in (*ioi_data.NAMES, *ioi_data.PLACES, *ioi_data.OBJECTS)
        if len(tokenizer.encode(" " + w, add_special_tokens=False)) != 1
    ]
    lengths = {
        k: len(
            tokenizer.encode(
                ioi_data.fill_frame(ioi_data.FRAMES[k], "Mary", "John", "John", "store", "ring"),
                add_special_tokens=False,
            )
        )
        for k in ioi_data.HELDOUT_FRAMES
    }
    if bad or len(set(lengths.values())) != 1:
        raise RuntimeError(f"tokenizer: multi-token IOI words {bad}, held-out frame lengths {lengths}")


# --------------------------------------------------------------------------------------------
# Training data
# --------------------------------------------------------------------------------------------


class SequenceMaker:
    """Builds training sequences and records where each IOI answer token sits."""

    def __init__(self, tokenizer: Any, n_ctx: int, seed: int) -> None:
        self.tok = tokenizer.backend_tokenizer
        self.n_ctx = n_ctx
        self.bos = int(tokenizer.bos_token_id)
        self.newline = self._enc("\n")
        self.d_vocab = int(tokenizer.backend_tokenizer.get_vocab_size())
        self.rng = random.Random(seed)
        self.english = [self._enc(s) for s in ENGLISH]
        code = self._enc("\n".join(_stdlib_texts()))
        self.code = code

    def _enc(self, text: str) -> list[int]:
        return self.tok.encode(text, add_special_tokens=False).ids

    def _random_tokens(self, k: int) -> list[int]:
        return [self.rng.randrange(1, self.d_vocab) for _ in range(k)]  # id 0 is BOS

    def other(self) -> list[int]:
        """A piece of non-IOI text."""
        r = self.rng.random()
        if r < 0.25:
            return list(self.rng.choice(self.english))
        if r < 0.45:
            start = self.rng.randrange(0, len(self.code) - 40)
            return self.code[start : start + self.rng.randint(8, 30)]
        if r < 0.85:
            x = self._random_tokens(self.rng.randint(3, 12))
            return x + x  # repeated: duplicate-token / previous-token / induction heads on arbitrary tokens
        return self._random_tokens(self.rng.randint(3, 10))

    def name_sentence(self) -> list[int]:
        text = self.rng.choice(NAME_SENTENCES).format(
            N=self.rng.choice(ioi_data.NAMES),
            PLACE=self.rng.choice(ioi_data.PLACES),
            OBJECT=self.rng.choice(ioi_data.OBJECTS),
        )
        return self._enc(text)

    def _random_name_pool(self) -> list[int]:
        """Token ids that may stand in for names: all but BOS, newline, the held-out names and the frames' words."""
        banned = {self.bos, *self.newline}
        banned |= {self._enc(" " + w)[0] for w in ioi_data.HELDOUT_NAMES}
        for frame in ioi_data.FRAMES.values():
            banned |= set(self._enc(ioi_data.fill_frame(frame, "", "", "", "", "") + " ."))
        return [i for i in range(1, self.d_vocab) if i not in banned]

    def ioi_sentence(self) -> tuple[list[int], int]:
        """A TRAIN-frame IOI sentence ending in ' IO.' and the index of the IO token in it. The names are
        TRAIN names, or (with probability RANDOM_NAMES) two random tokens in the name slots."""
        frame = ioi_data.FRAMES[self.rng.choice(ioi_data.TRAIN_FRAMES)]
        io, s = self.rng.sample(ioi_data.TRAIN_NAMES, 2)
        a, b = (io, s) if self.rng.random() < 0.5 else (s, io)
        text = ioi_data.fill_frame(frame, a, b, s, self.rng.choice(ioi_data.PLACES), self.rng.choice(ioi_data.OBJECTS))
        ids = self._enc(text + " " + io + ".")
        if self.rng.random() < RANDOM_NAMES:
            if not hasattr(self, "pool"):
                self.pool = self._random_name_pool()
            swap = dict(zip((self._enc(" " + io)[0], self._enc(" " + s)[0]), self.rng.sample(self.pool, 2)))
            ids = [swap.get(i, i) for i in ids]
        return ids, len(ids) - 2

    def sequence(self) -> tuple[list[int], int]:
        """[BOS, prefix, IOI, filler] cut to n_ctx, and the index of the IOI answer token."""
        ids = [self.bos]
        prefix_len = self.rng.randint(0, MAX_PREFIX)
        while len(ids) - 1 < prefix_len:
            ids += self.other()[: prefix_len - (len(ids) - 1)] + self.newline
        sent, answer = self.ioi_sentence()
        answer += len(ids)
        ids += sent + self.newline
        while len(ids) < self.n_ctx:
            ids += (self.name_sentence() if self.rng.random() < 0.4 else self.other()) + self.newline
        return ids[: self.n_ctx], answer

    def batch(self, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        rows, answers = zip(*(self.sequence() for _ in range(size)))
        return torch.tensor(rows, dtype=torch.long), torch.tensor(answers, dtype=torch.long)


# --------------------------------------------------------------------------------------------
# Task metrics and circuit analysis
# --------------------------------------------------------------------------------------------


@torch.no_grad()
def task_metrics(model: Any, split: str, n: int = 256, seed: int = 1) -> dict[str, Any]:
    """Mean logit difference (IO - S at the end) and accuracy (IO logit > S logit) on ``split``."""
    data = ioi_data.ioi_prompts(model, n=n, seed=seed, split=split)  # type: ignore[arg-type]
    logits = model(data.clean)
    ld = data.logit_diff(logits)
    corr_ld = data.logit_diff(model(data.corrupted))
    end = logits[:, -1]
    names = [int(model.tokenizer.encode(" " + w, add_special_tokens=False)[0]) for w in ioi_data.NAMES]
    top_name = torch.tensor(names)[end[:, names].argmax(-1)]
    return {
        "split": split,
        "n": n,
        "seed": seed,
        "logit_diff": round(float(ld.mean()), 3),
        "logit_diff_std": round(float(ld.std()), 3),
        "accuracy": round(float((ld > 0).float().mean()), 4),
        "top_name_is_io": round(float((top_name == data.answers).float().mean()), 4),
        "abc_logit_diff": round(float(corr_ld.mean()), 3),
        "prob_io": round(float(end.softmax(-1).gather(-1, data.answers[:, None]).mean()), 4),
    }


def _r(t: torch.Tensor, nd: int = 3) -> Any:
    return [[round(float(v), nd) for v in row] for row in t.detach().cpu()]


def _patch_heads(model: Any, data: Any, clean_cache: Any, metric: Any, where: torch.Tensor | None) -> torch.Tensor:
    """[layers, heads]: the metric of the ABC-corrupted run with one head's output (hook_z) taken from the clean
    run, at every position (``where`` None) or at one position per prompt (``where`` [n])."""
    cfg = model.cfg
    rows = torch.arange(len(data))
    out = torch.zeros(cfg.n_layers, cfg.n_heads)
    for layer in range(cfg.n_layers):
        name = f"blocks.{layer}.attn.hook_z"
        z_clean = clean_cache[name]
        for h in range(cfg.n_heads):

            def hook(z: torch.Tensor, hook: Any, h: int = h, z_clean: torch.Tensor = z_clean) -> torch.Tensor:
                z = z.clone()
                if where is None:
                    z[:, :, h] = z_clean[:, :, h]
                else:
                    z[rows, where, h] = z_clean[rows, where, h]
                return z

            out[layer, h] = metric(model.run_with_hooks(data.corrupted, fwd_hooks=[(name, hook)]))
    return out


@torch.no_grad()
def repeat_scores(model: Any, length: int = 10, batch: int = 64, seed: int = 12345) -> dict[str, Any]:
    """Per-head attention on [BOS, x, x] (x: ``length`` random tokens), queries in the second copy:
    duplicate-token (to the same token in the first copy), induction (to the token after it) and
    previous-token (to the token just before, all queries after BOS)."""
    gen = torch.Generator().manual_seed(seed)
    bos = int(model.tokenizer.bos_token_id)
    x = torch.randint(1, model.cfg.d_vocab, (batch, length), generator=gen)
    tokens = torch.cat([torch.full((batch, 1), bos), x, x], dim=1)
    _, cache = model.run_with_cache(tokens, names_filter=lambda n: n.endswith("hook_pattern"))
    q = torch.arange(1 + length, 1 + 2 * length)
    qp = torch.arange(2, 1 + 2 * length)
    dup, ind, prev = [], [], []
    for layer in range(model.cfg.n_layers):
        p = cache["pattern", layer]  # [batch, head, query, key]
        dup.append(p[:, :, q, q - length].mean((0, 2)))
        ind.append(p[:, :, q[1:], q[1:] - length + 1].mean((0, 2)))
        prev.append(p[:, :, qp, qp - 1].mean((0, 2)))
    return {"duplicate": _r(torch.stack(dup)), "induction": _r(torch.stack(ind)), "prev_token": _r(torch.stack(prev))}


@torch.no_grad()
def circuit(model: Any, split: str = "heldout", n: int = 128, seed: int = 2) -> dict[str, Any]:
    """Measure the IOI circuit on ``split`` prompts: activation patching of each head's output (clean -> ABC
    corrupted run, metric = normalised logit difference; TransformerLens's all-position function, and at
    END / at S2 per prompt), attention between the named positions, each head's direct logit attribution,
    and attention scores on repeated random tokens."""
    from transformer_lens import patching

    cfg = model.cfg
    L = cfg.n_layers
    data = ioi_data.ioi_prompts(model, n=n, seed=seed, split=split)  # type: ignore[arg-type]
    idx = torch.arange(n)
    pos = data.positions
    clean_logits, clean_cache = model.run_with_cache(data.clean)
    corr_logits = model(data.corrupted)
    ld_clean = float(data.logit_diff(clean_logits).mean())
    ld_corr = float(data.logit_diff(corr_logits).mean())

    def metric(logits: torch.Tensor) -> torch.Tensor:
        return (data.logit_diff(logits).mean() - ld_corr) / (ld_clean - ld_corr)

    head_all = patching.get_act_patch_attn_head_out_all_pos(model, data.corrupted, clean_cache, metric)
    head_end = _patch_heads(model, data, clean_cache, metric, pos["end"])
    head_s2 = _patch_heads(model, data, clean_cache, metric, pos["S2"])

    att: dict[str, list[list[float]]] = {}
    pairs = {
        "end_to_io": (pos["end"], pos["IO"]),
        "end_to_s1": (pos["end"], pos["S1"]),
        "end_to_s2": (pos["end"], pos["S2"]),
        "s2_to_s1": (pos["S2"], pos["S1"]),  # duplicate-token
        "s2next_to_s1next": (pos["S2"] + 1, pos["S1"] + 1),  # induction
        "s1next_to_s1": (pos["S1"] + 1, pos["S1"]),  # previous-token
    }
    for key, (q, k) in pairs.items():
        att[key] = _r(torch.stack([clean_cache["pattern", layer][idx, :, q, k].mean(0) for layer in range(L)]))

    # Direct logit attribution of each head at END onto (W_U[IO] - W_U[S]), through the final LayerNorm.
    stack, labels = clean_cache.stack_head_results(layer=-1, pos_slice=-1, return_labels=True)  # [LH, n, d]
    stack = clean_cache.apply_ln_to_stack(stack, layer=-1, pos_slice=-1)
    w_u, _ = ModelAdapter(model).unembed_weights()
    direction = (w_u[:, data.answers] - w_u[:, data.wrong]).T  # [n, d]
    dla = (stack * direction[None]).sum(-1).mean(-1).reshape(L, cfg.n_heads)

    return {
        "split": split,
        "n": n,
        "seed": seed,
        "logit_diff_clean": round(ld_clean, 3),
        "logit_diff_abc": round(ld_corr, 3),
        "patch_head_out_all_pos": _r(head_all),
        "patch_head_out_at_end": _r(head_end),
        "patch_head_out_at_s2": _r(head_s2),
        "attention": att,
        "dla": _r(dla),
        "repeated_tokens": repeat_scores(model),
        "head_labels": labels,
    }


RULES = (
    "name mover: in the last two layers, attention END->IO > 0.4 and > END->S1+S2, DLA(IO-S) at END > 0.5; "
    "negative: DLA < -0.5; S-suppression: attention END->S1+S2 > 0.3 and DLA > 0.3 (reads S, writes -S); "
    "duplicate-token: attention S2->S1 > 0.3; induction: attention S2+1->S1+1 > 0.3; previous-token: attention "
    "S1+1->S1 > 0.4; S-inhibition: path patching to the name movers' queries (1 - normalised result) > 0.1"
)


def classify(c: dict[str, Any]) -> dict[str, Any]:
    """Name the heads from the measured numbers (thresholds in RULES)."""
    L, H = len(c["dla"]), len(c["dla"][0])
    att = c["attention"]
    heads = [(layer, h) for layer in range(L) for h in range(H)]

    def info(lh: tuple[int, int]) -> dict[str, Any]:
        layer, h = lh
        return {
            "head": f"L{layer}H{h}",
            "patch_all_pos": c["patch_head_out_all_pos"][layer][h],
            "patch_at_end": c["patch_head_out_at_end"][layer][h],
            "patch_at_s2": c["patch_head_out_at_s2"][layer][h],
            "dla": c["dla"][layer][h],
            **{k: v[layer][h] for k, v in att.items()},
        }

    def a(key: str, lh: tuple[int, int]) -> float:
        return float(att[key][lh[0]][lh[1]])

    def dla(lh: tuple[int, int]) -> float:
        return float(c["dla"][lh[0]][lh[1]])

    def to_s(lh: tuple[int, int]) -> float:
        return a("end_to_s1", lh) + a("end_to_s2", lh)

    name_movers = [
        info(lh)
        for lh in heads
        if lh[0] >= L - 2 and a("end_to_io", lh) > 0.4 and a("end_to_io", lh) > to_s(lh) and dla(lh) > 0.5
    ]
    negative = [info(lh) for lh in heads if dla(lh) < -0.5]
    s_suppression = [info(lh) for lh in heads if to_s(lh) > 0.3 and dla(lh) > 0.3]
    duplicate = [info(lh) for lh in heads if a("s2_to_s1", lh) > 0.3]
    induction = [info(lh) for lh in heads if a("s2next_to_s1next", lh) > 0.3]
    previous = [info(lh) for lh in heads if a("s1next_to_s1", lh) > 0.4]
    return {
        "rules": RULES,
        "name_movers": name_movers,
        "s_suppression": s_suppression,
        "negative_heads": negative,
        "duplicate_token": duplicate,
        "induction": induction,
        "previous_token": previous,
    }


def _path(model: Any, data: Any, receivers: Any, senders: list[tuple[int, int]] | None = None) -> list[list[float]]:
    """mi_widgets.PathPatching: 1 - normalised result per sender head (0 = no effect through the receivers,
    1 = the whole clean behaviour), None for heads that are not senders."""
    from ..widgets.patching import PathPatching

    path = PathPatching(model, data, receivers=receivers, senders=senders, autostart=False)
    path.start()
    path.wait()
    res = 1 - path.results["path"]
    path.close()
    return [[round(float(v), 3) if v == v else None for v in row] for row in res]  # None: not a sender


@torch.no_grad()
def path_checks(model: Any, found: dict[str, Any], n: int = 128, seed: int = 3) -> dict[str, Any]:
    """Path patching (held-out data): every head -> logits (direct effect); earlier heads -> the S-suppression
    heads' values, queries and keys; earlier heads -> the name movers' queries (S-inhibition); earlier heads ->
    the S-inhibition heads' values, keys and queries (duplicate / induction)."""
    data = ioi_data.ioi_prompts(model, n=n, seed=seed, split="heldout")
    out: dict[str, Any] = {"n": n, "seed": seed, "split": "heldout", "direct_to_logits": _path(model, data, "logits")}
    H = model.cfg.n_heads
    # The S-suppression heads' inputs: which earlier heads give them S (values) and where to look (q, k).
    supp = [_lh(r["head"]) for r in found["s_suppression"] if _lh(r["head"])[0] > 0]
    feeders: list[dict[str, Any]] = []
    if supp:
        out["receivers_s_suppression"] = [f"L{layer}H{h}" for layer, h in supp]
        for k in ("v", "q", "k"):
            out[f"to_s_suppression_{k}"] = _path(model, data, [(layer, h, k) for layer, h in supp])
        feeders = [
            {
                "head": f"L{layer}H{h}",
                **{f"path_to_s_suppression_{k}": out[f"to_s_suppression_{k}"][layer][h] for k in "vqk"},
            }
            for layer in range(min(layer for layer, _ in supp))
            for h in range(H)
            if max(out[f"to_s_suppression_{k}"][layer][h] for k in "vqk") > 0.1
        ]
    movers = [_lh(r["head"]) for r in found["name_movers"]]
    if not movers or min(layer for layer, _ in movers) == 0:
        return {"path": out, "s_inhibition": [], "s_suppression_inputs": feeders}
    out["receivers_q"] = [f"L{layer}H{h}.q" for layer, h in movers]
    out["to_name_mover_q"] = _path(model, data, [(layer, h, "q") for layer, h in movers])
    first = min(layer for layer, _ in movers)
    s_inh = [(layer, h) for layer in range(first) for h in range(H) if out["to_name_mover_q"][layer][h] > 0.1]
    if s_inh and min(layer for layer, _ in s_inh) > 0:
        out["receivers_sinh"] = [f"L{layer}H{h}" for layer, h in s_inh]
        out["to_s_inhibition_v"] = _path(model, data, [(layer, h, "v") for layer, h in s_inh])
        out["to_s_inhibition_k"] = _path(model, data, [(layer, h, "k") for layer, h in s_inh])
        out["to_s_inhibition_q"] = _path(model, data, [(layer, h, "q") for layer, h in s_inh])
    rows = [
        {"head": f"L{layer}H{h}", "path_to_name_mover_q": out["to_name_mover_q"][layer][h]}
        for layer, h in sorted(s_inh, key=lambda lh: -out["to_name_mover_q"][lh[0]][lh[1]])
    ]
    return {"path": out, "s_inhibition": rows, "s_suppression_inputs": feeders}


def _lh(head: str) -> tuple[int, int]:
    layer, h = head[1:].split("H")
    return int(layer), int(h)


# --------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------


def train_ioi(out: Path, steps: int, seed: int, device: str = "cpu") -> dict[str, Any]:
    """Train ``ioi-4l`` and write tokenizer, weights, config.json and README.md to ``out``."""
    import math

    from safetensors.torch import save_file
    from transformer_lens import TransformerBridge, TransformerBridgeConfig

    torch.manual_seed(seed)
    torch.set_num_threads(1)
    cfg_kwargs = dict(IOI_4L_CONFIG, seed=seed)
    n_ctx = int(cfg_kwargs["n_ctx"])
    tokenizer = train_bpe_tokenizer(out, tokenizer_corpus(seed), VOCAB_SIZE, n_ctx)
    check_tokenizer(tokenizer)
    maker = SequenceMaker(tokenizer, TRAIN_LEN, seed)
    model = TransformerBridge.boot_native(TransformerBridgeConfig(**cfg_kwargs), tokenizer=tokenizer, device=device)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=0.01)

    def lr_at(step: int) -> float:
        if step < WARMUP:
            return LR * (step + 1) / WARMUP
        t = (step - WARMUP) / max(1, steps - WARMUP)
        return LR * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * t)))

    t0 = time.time()
    rows = torch.arange(BATCH)
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = lr_at(step)
        tokens, answers = maker.batch(BATCH)
        tokens, answers = tokens.to(device), answers.to(device)
        logits = model(tokens)
        loss_all = F.cross_entropy(logits[:, :-1].flatten(0, 1), tokens[:, 1:].flatten())
        loss_ans = F.cross_entropy(logits[rows, answers - 1], tokens[rows, answers])
        loss = loss_all + ANSWER_WEIGHT * loss_ans
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if (step + 1) % 500 == 0 or step + 1 == steps:
            model.eval()
            m = task_metrics(model, "heldout", n=128)
            model.train()
            print(
                f"step {step + 1:5d}  loss {loss_all.item():.3f}  answer loss {loss_ans.item():.3f}  heldout "
                f"logit diff {m['logit_diff']:.2f} acc {m['accuracy']:.3f}  ({time.time() - t0:.0f}s)",
                flush=True,
            )
    train_s = time.time() - t0
    model.eval()
    state = {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}
    save_file(state, str(out / "model.safetensors"))
    training = {
        "seed": seed,
        "steps": steps,
        "batch": BATCH,
        "lr": LR,
        "optimizer": "AdamW",
        "recipe": RECIPE.format(
            answer_weight=ANSWER_WEIGHT,
            n_ctx=n_ctx,
            train_len=TRAIN_LEN,
            max_prefix=MAX_PREFIX,
            batch=BATCH,
            lr=LR,
            warmup=WARMUP,
        ),
        "train_seconds": round(train_s, 1),
        "torch": torch.__version__,
        "tokenizer": (
            f"byte-level BPE, vocab {VOCAB_SIZE}, {BOS_TOKEN} (id {int(tokenizer.bos_token_id)}) as "
            f"bos/eos/pad/unk, trained on stdlib {', '.join(sorted(STDLIB_FILES))}, the English sentences in "
            "zoo/ioi.py and IOI sentences over all frames and names (so every name, place and object is one token)"
        ),
        "train_frames": list(ioi_data.TRAIN_FRAMES),
        "heldout_frames": list(ioi_data.HELDOUT_FRAMES),
        "heldout_names": list(ioi_data.HELDOUT_NAMES),
    }
    # Written now so that the analysis below can be rerun on the saved weights (analyse_and_write).
    (out / "config.json").write_text(json.dumps({"config": cfg_kwargs, "training": training}, indent=2) + "\n")
    return analyse_and_write(out, model, cfg_kwargs, training)


def analyse_and_write(out: Path, model: Any, cfg_kwargs: dict[str, Any], training: dict[str, Any]) -> dict[str, Any]:
    """Measure the task and the circuit of a trained model and write config.json and README.md to ``out``."""
    metrics = {
        "heldout": task_metrics(model, "heldout"),
        "train": task_metrics(model, "train"),
    }
    circ = circuit(model)
    found = classify(circ)
    found.update(path_checks(model, found))
    print(json.dumps({"metrics": metrics, "found": found}, indent=1))
    training = dict(training, metrics=metrics, circuit={"heads": found, "measurements": circ})
    (out / "config.json").write_text(json.dumps({"config": cfg_kwargs, "training": training}, indent=2) + "\n")
    (out / "README.md").write_text(readme(cfg_kwargs, training))
    return training


# Read off the seed-0 run's tables below; update when the recipe changes.
CAVEATS = (
    "this model does NOT have GPT-2's IOI circuit. No head passes the name-mover, duplicate-token, induction, "
    "previous-token or S-inhibition rule, and no head attends to repeated random tokens' earlier copies. It does IOI by "
    "suppressing the most recent name: L3H3 (and, weaker, L3H0) attend from END to S2 and write -S (DLA +1.32 / "
    "+0.42, activation patching 0.70 / 0.24, all of it at END; direct path to the logits 0.87 / 0.29). They find S2 "
    "by recency and syntax, not because the name repeats: on the ABC prompts, where no name repeats, they attend the "
    "S2 slot about as much (0.83 / 0.79), and path patching from every earlier head into their queries and keys is "
    "about 0. Which name they suppress comes through their values, from L1H0 and L0H3 (path effect 0.33 / 0.26; L0H2 "
    "and L1H3 about 0.13), which at S2 mostly attend to S2 itself. The layer-1 heads at END attend IO and S1 about "
    "equally (0.3-0.4 each), so they copy both first-clause names; IO beats S only because S is suppressed, and IO "
    "is the top name among all 48 names on under a third of held-out prompts. This works because S2 is the last "
    "name in every IOI frame (as in the paper's templates); the frames vary where S2 is (2 to 6 tokens before END "
    "in the held-out ones), which removed the fixed-offset heads of the earlier ioi-3l but not this shortcut. A "
    "recipe variant with training-only frames where S is named twice before IO (so that the last name is the answer) "
    "and 20% rows of repeated random tokens did not get there within 2800 steps (held-out accuracy 0.81, again an "
    "S2-attending suppression head, no induction or duplicate-token head), nor did a 3-layer version without "
    "those rows trained for 3600 steps (accuracy 0.78, one suppression head L1H2 with patching 0.99)."
)

_COLS = (
    ("patch all", lambda r: r["patch_all_pos"]),
    ("patch END", lambda r: r["patch_at_end"]),
    ("patch S2", lambda r: r["patch_at_s2"]),
    ("DLA IO-S", lambda r: r["dla"]),
    ("END->IO", lambda r: r["end_to_io"]),
    ("END->S1", lambda r: r["end_to_s1"]),
    ("END->S2", lambda r: r["end_to_s2"]),
    ("S2->S1", lambda r: r["s2_to_s1"]),
    ("S2+1->S1+1", lambda r: r["s2next_to_s1next"]),
    ("S1+1->S1", lambda r: r["s1next_to_s1"]),
)


def _head_table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "(none by the rule above)\n"
    lines = ["| head | " + " | ".join(c for c, _ in _COLS) + " |", "|---" * (len(_COLS) + 1) + "|"]
    for r in rows:
        lines.append(f"| {r['head']} | " + " | ".join(f"{f(r):.2f}" for _, f in _COLS) + " |")
    return "\n".join(lines) + "\n"


def _grid(title: str, grid: list[list[float]]) -> str:
    H = len(grid[0])
    lines = [f"| {title} | " + " | ".join(f"H{h}" for h in range(H)) + " |", "|---" * (H + 1) + "|"]
    for layer, row in enumerate(grid):
        lines.append(f"| L{layer} | " + " | ".join("-" if v is None else f"{v:.2f}" for v in row) + " |")
    return "\n".join(lines) + "\n"


def readme(cfg: dict[str, Any], training: dict[str, Any]) -> str:
    m = training["metrics"]
    c = training["circuit"]
    found, meas = c["heads"], c["measurements"]
    L, H = cfg["n_layers"], cfg["n_heads"]
    att, rep = meas["attention"], meas["repeated_tokens"]
    all_rows = []
    for layer in range(L):
        for h in range(H):
            row = {
                "head": f"L{layer}H{h}",
                "patch_all_pos": meas["patch_head_out_all_pos"][layer][h],
                "patch_at_end": meas["patch_head_out_at_end"][layer][h],
                "patch_at_s2": meas["patch_head_out_at_s2"][layer][h],
                "dla": meas["dla"][layer][h],
                **{k: v[layer][h] for k, v in att.items()},
            }
            all_rows.append(row)
    path = found.get("path", {})
    path_text = ""
    if path:
        path_text += f"Path patching (`mi_widgets.PathPatching`, {path['n']} held-out prompts, seed {path['seed']}): "
        path_text += (
            "each sender head's output set to its ABC-corrupted value with every other head frozen at its clean "
            "output; the receivers' inputs from that run go into a clean run. Numbers are 1 - the normalised "
            "result: the share of the clean logit difference that is lost through that path (0 = none).\n\n"
        )
        path_text += "Sender -> logits (direct effect):\n\n" + _grid("sender", path["direct_to_logits"]) + "\n"
        for k in ("v", "q", "k"):
            key = f"to_s_suppression_{k}"
            if key in path:
                path_text += (
                    f"Sender -> S-suppression heads' {k} ({', '.join(path['receivers_s_suppression'])}):\n\n"
                    + _grid("sender", path[key])
                    + "\n"
                )
        if "to_name_mover_q" in path:
            path_text += (
                f"Sender -> name movers' queries ({', '.join(path['receivers_q'])}):\n\n"
                + _grid("sender", path["to_name_mover_q"])
                + "\n"
            )
        for k in ("v", "k", "q"):
            key = f"to_s_inhibition_{k}"
            if key in path:
                path_text += (
                    f"Sender -> S-inhibition heads' {k} ({', '.join(path['receivers_sinh'])}):\n\n"
                    + _grid("sender", path[key])
                    + "\n"
                )
    hm, tm = m["heldout"], m["train"]
    s_inh = found.get("s_inhibition", [])
    s_inh_text = (
        "\n".join(
            f"- {r['head']}: path effect on the name movers' queries {r['path_to_name_mover_q']:.2f}" for r in s_inh
        )
        + "\n"
        if s_inh
        else "(none by the rule above)\n"
    )
    feeders = found.get("s_suppression_inputs", [])
    feed_text = (
        "\n".join(
            f"- {r['head']}: v {r['path_to_s_suppression_v']:.2f}, q {r['path_to_s_suppression_q']:.2f}, "
            f"k {r['path_to_s_suppression_k']:.2f}"
            for r in feeders
        )
        + "\n"
        if feeders
        else "(none)\n"
    )
    return f"""# {NAME}

A small attention-only transformer ({L} layers x {H} heads, d_model {cfg["d_model"]}, d_head {cfg["d_head"]},
n_ctx {cfg["n_ctx"]}, vocab {cfg["d_vocab"]}, rotary positions) trained from scratch so that it does
indirect-object identification (Wang et al. 2022): "When Mary and John went to the store, John gave a drink
to" -> " Mary". Prompts: `mi_widgets.datasets.ioi_prompts(model, split="heldout")` (frames and names it never
saw in an IOI sentence).

```python
from mi_widgets import zoo
from mi_widgets.datasets import ioi_prompts

model = zoo.load("{NAME}")  # a TransformerLens TransformerBridge
data = ioi_prompts(model, n=64, split="heldout")
```

## Training

{training["recipe"]}

Seed {training["seed"]}, {training["steps"]} steps, {training["train_seconds"]} s on one CPU thread (torch
{training["torch"]}). Tokenizer: {training["tokenizer"]}. Train frames {", ".join(training["train_frames"])};
held-out frames {", ".join(training["heldout_frames"])}; held-out names {", ".join(training["heldout_names"])}.

## Task performance

Logit difference = logit(IO) - logit(S) at the last position; accuracy = share of prompts where it is > 0.

| data | n | logit diff (mean +- sd) | accuracy | top name is IO | P(IO) | ABC logit diff |
|------|---|------------------|----------|----------------|-------|----------------|
| held-out frames + names | {hm["n"]} | {hm["logit_diff"]:.2f} +- {hm["logit_diff_std"]:.2f} | {hm["accuracy"]:.3f} | {hm["top_name_is_io"]:.3f} | {hm["prob_io"]:.3f} | {hm["abc_logit_diff"]:.2f} |
| train frames + names | {tm["n"]} | {tm["logit_diff"]:.2f} +- {tm["logit_diff_std"]:.2f} | {tm["accuracy"]:.3f} | {tm["top_name_is_io"]:.3f} | {tm["prob_io"]:.3f} | {tm["abc_logit_diff"]:.2f} |

## The circuit

Measured on {meas["n"]} held-out prompts (seed {meas["seed"]}); the held-out frames put S2 2 to 6 tokens
before END. Activation patching: each head's output (hook_z) from the clean run patched into the
ABC-corrupted run, at all positions (TransformerLens `patching.get_act_patch_attn_head_out_all_pos`), at END
only, or at S2 only; metric = (LD - LD_abc) / (LD_clean - LD_abc) with LD_clean
{meas["logit_diff_clean"]:.2f}, LD_abc {meas["logit_diff_abc"]:.2f} (1 = the head alone restores the clean
behaviour). DLA: the head's output at END through the final LayerNorm onto W_U[IO] - W_U[S]. Attention: mean
pattern weight between the named positions (S1+1->S1: previous-token).

Rules: {found["rules"]}.

Name movers:

{_head_table(found["name_movers"])}
S-inhibition (by path patching):

{s_inh_text}
S-suppression (attend END->S, output lowers S directly):

{_head_table(found.get("s_suppression", []))}
Inputs of the S-suppression heads (path patching > 0.1 into their values, queries or keys):

{feed_text}
Duplicate-token heads:

{_head_table(found["duplicate_token"])}
Induction heads:

{_head_table(found["induction"])}
Previous-token heads:

{_head_table(found.get("previous_token", []))}
Negative heads:

{_head_table(found["negative_heads"])}
{path_text}
Caveats: {CAVEATS}

All heads:

{_head_table(all_rows)}
On repeated random tokens [BOS, x, x] (|x| = 10, queries in the second copy): attention to the same token
in the first copy (duplicate), to the token after it (induction), and to the previous token.

{_grid("duplicate", rep["duplicate"])}
{_grid("induction", rep["induction"])}
{_grid("prev-token", rep["prev_token"])}
Regenerate (deterministic on CPU for the same library versions and stdlib):

```
python -m mi_widgets.zoo.train {NAME} --steps {training["steps"]} --seed {training["seed"]}
```
"""
