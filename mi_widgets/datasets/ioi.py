"""Indirect-object identification (IOI) prompts, after Wang et al. 2022, "Interpretability in the Wild".

"When Mary and John went to the store, John gave a drink to" -> " Mary". The subject (S, John)
appears twice, the indirect object (IO, Mary) once; a model that does the task predicts IO.
Prompts come in two orders: ABBA (IO named first) and BABA (S named first), half each, so that
neither "the first name" nor "the second name" is the answer. The corrupted prompts are the
paper's ABC data set: the same frame, place and object with three different names, so they hold
no information about which name is the answer; patching activations from a clean run into a
corrupted run (or back) shows which components carry that information.

Every name, place and object must be ONE token (with its leading space) for the model's tokenizer,
and every prompt of one :class:`IOIData` has the same number of tokens, so the prompts batch
together, END is always the last position and position-wise patching lines up token for token. The
frames differ in where the names sit (``positions`` gives IO, S1 and S2 per prompt), so that a model
cannot find S by a fixed offset. The frames and names are split into fixed "train" and "heldout"
parts: the bundled ``ioi-4l`` model is trained on the train parts only, so ``split="heldout"`` tests
generalisation to new sentences and new names.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

__all__ = [
    "FRAMES",
    "HELDOUT_FRAMES",
    "HELDOUT_NAMES",
    "NAMES",
    "OBJECTS",
    "PLACES",
    "TRAIN_FRAMES",
    "TRAIN_NAMES",
    "IOIData",
    "fill_frame",
    "ioi_prompts",
]

Order = Literal["ABBA", "BABA"]
Split = Literal["all", "train", "heldout"]

# Sentence frames. {A} and {B} are the first two names, {S} the subject's second mention; the answer
# (IO) is not in the prompt. ABBA fills A=IO, B=S; BABA fills A=S, B=IO. The frames differ in where
# the two names sit, how far S2 is from the end (2 to 6 tokens after S2) and in S2's role (subject,
# object, after "by"/"was"), so no fixed position or relative offset gives the answer away: a model has
# to find the repeated name. The TRAIN frames have different token lengths (the bundled model is
# trained on all of them); the HELDOUT frames are all 14 tokens (15 with BOS) for the bundled model's
# tokenizer, with S2 at 5 different distances from the end, so one batch holds all of them.
# No frame starts with a name (names are " Name" tokens, with the space). ``ioi_prompts`` keeps the frames of the split whose token length is the most common one.
FRAMES: dict[str, str] = {
    "F0": "When {A} and {B} went to the {PLACE}, {S} gave a {OBJECT} to",
    "F1": "After {A} and {B} went to the {PLACE}, {S} gave it to",
    "F2": "Then, {A} and {B} had a long argument, and afterwards {S} said to",
    "F3": "After the lunch, {A} and {B} went to the {PLACE}. {S} gave a {OBJECT} to",
    "F4": "Then {A} and {B} were at the {PLACE}. {S} decided to give the {OBJECT} to",
    "F5": "While {A} and {B} were working at the {PLACE}, {S} passed a {OBJECT} back to",
    "F6": "In the {PLACE}, {A} and {B} found a {OBJECT}, and the dog followed {S} and brought it to",
    "F7": "Since {A} and {B} were in the {PLACE}, {S} handed the {OBJECT} over to",
    "F8": "The {PLACE} was quiet when {A} and {B} arrived. {S} threw a {OBJECT} to",
    "F9": "So {A} and {B} went to the {PLACE}, and the {OBJECT} was given by {S} to",
    "F10": "When {A} met {B} at the {PLACE}, {S} said hello to",
    "F11": "Once {A} and {B} were in the {PLACE}, it was {S} who gave a {OBJECT} to",
    "F12": "Then {A} and {B} had a {OBJECT}. {S} gave it to",
    "F13": "Later that day, {A} and {B} went to the {PLACE} together, and then {S} wanted to give a {OBJECT} to",
    # Held out.
    "H0": "Yesterday {A} and {B} met at the {PLACE}. {S} sent a {OBJECT} to",
    "H1": "At the {PLACE} {A} and {B} found a {OBJECT}. {S} gave it to",
    "H2": "As {A} and {B} sat in the {PLACE}, {S} showed the {OBJECT} to",
    "H3": "Once {A} and {B} sat down, {S} wanted to show the {OBJECT} to",
    "H4": "Then {A} and {B} had a long talk, and later {S} wrote to",
    "H5": "When {A} and {B} sat down together, {S} showed a {OBJECT} back to",
}
TRAIN_FRAMES: tuple[str, ...] = tuple(f"F{i}" for i in range(14))
HELDOUT_FRAMES: tuple[str, ...] = ("H0", "H1", "H2", "H3", "H4", "H5")

# Names (used as " Name", with the leading space), mostly from the paper's list: every one is a single
# GPT-2 token. Every 4th is held out.
NAMES: tuple[str, ...] = (
    "Mary", "John", "Tom", "James", "Dan", "Sid", "Martin", "Amy",
    "Alice", "Kate", "Paul", "Sarah", "David", "Anna", "Mark", "Lisa",
    "Jack", "Ryan", "Laura", "Peter", "Jane", "Adam", "Eric", "Rose",
    "Max", "Luke", "Sean", "Kevin", "Brian", "Alex", "Henry", "Simon",
    "Frank", "George", "Grant", "Ian", "Jay", "Kelly", "Leon", "Lewis",
    "Louis", "Maria", "Marco", "Ruby", "Scott", "Taylor", "Thomas", "Victoria",
)  # fmt: skip
TRAIN_NAMES: tuple[str, ...] = tuple(n for i, n in enumerate(NAMES) if i % 4 != 3)
HELDOUT_NAMES: tuple[str, ...] = tuple(n for i, n in enumerate(NAMES) if i % 4 == 3)

PLACES: tuple[str, ...] = (
    "store", "garden", "restaurant", "school", "hospital", "office", "house", "station", "park", "church",
)  # fmt: skip
OBJECTS: tuple[str, ...] = (
    "ring", "kiss", "bone", "basketball", "computer", "necklace", "drink", "snack", "book", "ball",
)  # fmt: skip


def fill_frame(frame: str, a: str, b: str, s: str, place: str, obj: str) -> str:
    """One prompt: ``frame`` (a text with {A}, {B}, {S}, {PLACE}, {OBJECT}) with the given words."""
    return frame.format(A=a, B=b, S=s, PLACE=place, OBJECT=obj)


@dataclass(frozen=True)
class IOIData:
    """A batch of IOI prompts and their ABC corruptions, all of one token length.

    ``clean``/``corrupted``: token ids [n, seq] (BOS first), on the model's device. ``answers``: the IO
    token id per prompt, ``wrong``: the subject's. ``positions``: token index per prompt of "IO",
    "S1" (first subject mention), "S2" (second) and "end" (the last token, where the answer is
    predicted), each a long tensor [n]. The corrupted prompt puts three other names in the IO, S1
    and S2 slots, so its positions are the same.
    """

    clean: torch.Tensor
    corrupted: torch.Tensor
    answers: torch.Tensor
    wrong: torch.Tensor
    positions: dict[str, torch.Tensor]
    prompts: list[str]
    corrupted_prompts: list[str]
    templates: list[str]
    order: list[str]
    io_names: list[str] = field(default_factory=list)
    s_names: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.prompts)

    def logit_diff(self, logits: torch.Tensor) -> torch.Tensor:
        """Per prompt: logit of IO minus logit of S at the end position (logits [n, seq, vocab])."""
        end = logits[torch.arange(len(self), device=logits.device), self.positions["end"].to(logits.device)]
        answers, wrong = self.answers.to(logits.device), self.wrong.to(logits.device)
        return end.gather(-1, answers[:, None])[:, 0] - end.gather(-1, wrong[:, None])[:, 0]


def _single_token_id(tokenizer: Any, word: str) -> int | None:
    """The id of ``" " + word`` if it is exactly one token for ``tokenizer``, else None."""
    ids = tokenizer.encode(" " + word, add_special_tokens=False)
    return int(ids[0]) if len(ids) == 1 else None


def _tokenizer_name(tokenizer: Any) -> str:
    return str(getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__)


def _one_token_words(tokenizer: Any, words: tuple[str, ...] | list[str], kind: str, need: int) -> dict[str, int]:
    ok = {w: i for w in words if (i := _single_token_id(tokenizer, w)) is not None}
    if len(ok) < need:
        bad = [w for w in words if w not in ok]
        raise ValueError(
            f"IOI prompts need at least {need} {kind} that are one token each (with a leading space); "
            f"tokenizer {_tokenizer_name(tokenizer)!r} splits {len(bad)} of {len(words)}: {', '.join(bad[:20])}"
            + (" ..." if len(bad) > 20 else "")
            + f" (kept: {', '.join(ok) or 'none'}). Pass single-token words with names=/places=/objects=."
        )
    return ok


def _device(model: Any) -> torch.device:
    try:
        return next(model.parameters()).device
    except (AttributeError, StopIteration):
        return torch.device(getattr(getattr(model, "cfg", None), "device", None) or "cpu")


def ioi_prompts(
    model: Any,
    n: int = 64,
    seed: int = 0,
    split: Split = "all",
    *,
    names: list[str] | tuple[str, ...] | None = None,
    places: list[str] | tuple[str, ...] | None = None,
    objects: list[str] | tuple[str, ...] | None = None,
    frames: dict[str, str] | None = None,
) -> IOIData:
    """``n`` IOI prompts (half ABBA, half BABA, alternating) and their ABC corruptions for ``model``.

    ``model``: a TransformerLens model with a tokenizer (4.x ``TransformerBridge`` or 2.x
    ``HookedTransformer``); prompts are tokenized with ``model.to_tokens`` (BOS prepended).
    ``split`` picks the frames and names: "train", "heldout" (never seen by the bundled ``ioi-4l``)
    or "all"; ``names``/``places``/``objects``/``frames`` override the lists. Words that are not one
    token for this tokenizer are dropped; ``ValueError`` if fewer than 3 names (or no place/object)
    remain. Only the frames whose token length is the most common one are used, so every prompt has
    the same length. Deterministic for a given ``seed``.
    """
    if split not in ("all", "train", "heldout"):
        raise ValueError(f"split must be 'all', 'train' or 'heldout', got {split!r}")
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    tokenizer = getattr(model, "tokenizer", None)
    if tokenizer is None:
        raise ValueError(
            "ioi_prompts needs a model with a tokenizer (model.tokenizer is None): IOI prompts are text. "
            "Boot the model with tokenizer=..., e.g. TransformerBridge.boot_native(cfg, tokenizer=tok)."
        )
    if frames is None:
        keys = {"all": tuple(FRAMES), "train": TRAIN_FRAMES, "heldout": HELDOUT_FRAMES}[split]
        frames = {k: FRAMES[k] for k in keys}
    if names is None:
        names = {"all": NAMES, "train": TRAIN_NAMES, "heldout": HELDOUT_NAMES}[split]
    name_ids = _one_token_words(tokenizer, names, "names", 3)
    place_list = list(_one_token_words(tokenizer, places or PLACES, "places", 1))
    object_list = list(_one_token_words(tokenizer, objects or OBJECTS, "objects", 1))
    name_list = list(name_ids)

    # Token length of each frame with one-token fillers; keep the frames of the most common length.
    n0, n1 = name_list[0], name_list[1]
    lengths = {
        k: int(model.to_tokens(fill_frame(f, n0, n1, n1, place_list[0], object_list[0])).shape[-1])
        for k, f in frames.items()
    }
    seq_len = Counter(lengths.values()).most_common(1)[0][0]
    frame_keys = [k for k in frames if lengths[k] == seq_len]

    rng = random.Random(seed)
    prompts: list[str] = []
    corrupted_prompts: list[str] = []
    templates: list[str] = []
    orders: list[str] = []
    io_names: list[str] = []
    s_names: list[str] = []
    for i in range(n):
        order: Order = "ABBA" if i % 2 == 0 else "BABA"
        key = rng.choice(frame_keys)
        io, s = rng.sample(name_list, 2)
        place, obj = rng.choice(place_list), rng.choice(object_list)
        others = [x for x in name_list if x not in (io, s)]
        x, y, z = rng.sample(others if len(others) >= 3 else name_list, 3)
        a, b = (io, s) if order == "ABBA" else (s, io)
        prompts.append(fill_frame(frames[key], a, b, s, place, obj))
        # ABC: the IO, S1 and S2 slots get three distinct names (x in the IO slot, y in S1, z in S2).
        ca, cb = (x, y) if order == "ABBA" else (y, x)
        corrupted_prompts.append(fill_frame(frames[key], ca, cb, z, place, obj))
        templates.append(f"{order}-{key}")
        orders.append(order)
        io_names.append(io)
        s_names.append(s)

    clean = torch.cat([_tokens(model, p, seq_len) for p in prompts])
    corrupted = torch.cat([_tokens(model, p, seq_len) for p in corrupted_prompts])
    device = clean.device
    answers = torch.tensor([name_ids[w] for w in io_names], dtype=torch.long, device=device)
    wrong = torch.tensor([name_ids[w] for w in s_names], dtype=torch.long, device=device)
    pos_io, pos_s1, pos_s2 = [], [], []
    for row, (io_id, s_id), prompt in zip(clean.tolist(), zip(answers.tolist(), wrong.tolist()), prompts):
        io_at = [j for j, t in enumerate(row) if t == io_id]
        s_at = [j for j, t in enumerate(row) if t == s_id]
        if len(io_at) != 1 or len(s_at) != 2:
            raise ValueError(
                f"tokenizer {_tokenizer_name(tokenizer)!r} does not keep the names as separate tokens in {prompt!r}"
            )
        pos_io.append(io_at[0])
        pos_s1.append(s_at[0])
        pos_s2.append(s_at[1])
    positions = {
        "IO": torch.tensor(pos_io, dtype=torch.long, device=device),
        "S1": torch.tensor(pos_s1, dtype=torch.long, device=device),
        "S2": torch.tensor(pos_s2, dtype=torch.long, device=device),
        "end": torch.full((n,), seq_len - 1, dtype=torch.long, device=device),
    }
    return IOIData(
        clean=clean,
        corrupted=corrupted,
        answers=answers,
        wrong=wrong,
        positions=positions,
        prompts=prompts,
        corrupted_prompts=corrupted_prompts,
        templates=templates,
        order=orders,
        io_names=io_names,
        s_names=s_names,
    )


def _tokens(model: Any, text: str, seq_len: int) -> torch.Tensor:
    tokens = model.to_tokens(text)
    if tokens.shape[-1] != seq_len:
        raise ValueError(
            f"{text!r} is {tokens.shape[-1]} tokens, not {seq_len} like the others: the fillers merged with "
            "the frame's text for this tokenizer"
        )
    return tokens.to(dtype=torch.long)
