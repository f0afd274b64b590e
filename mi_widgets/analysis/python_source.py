"""Ground-truth labels for Python source tokens: inside a string, a comment, indentation, a keyword.

Claims like "neuron 301 fires inside strings" need labels that do not come from the model.
Python's own ``tokenize`` module gives them for any valid source, and a fast tokenizer's
character offsets map them onto model tokens. A model token gets a class when its *last*
character has it: that is the character the model has just read when its activation is taken.
"""

from __future__ import annotations

import io
import keyword
import tokenize
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

SOURCE_CLASSES: tuple[str, ...] = ("string", "comment", "indent", "keyword")

_STRING_TYPES = {
    "STRING",
    "FSTRING_START",
    "FSTRING_MIDDLE",
    "FSTRING_END",
    "TSTRING_START",
    "TSTRING_MIDDLE",
    "TSTRING_END",
}


def char_classes(text: str) -> dict[str, np.ndarray]:
    """Per-character boolean masks for each class in :data:`SOURCE_CLASSES`.

    ``indent`` is the leading whitespace of a line that holds code or a comment. Raises
    ``ValueError`` when ``text`` is not valid Python (``tokenize`` cannot read it).
    """
    n = len(text)
    masks = {name: np.zeros(n, dtype=bool) for name in SOURCE_CLASSES}
    line_starts = [0]
    for line in text.splitlines(keepends=True):
        line_starts.append(line_starts[-1] + len(line))

    def offset(row: int, col: int) -> int:
        return line_starts[row - 1] + col

    try:
        tokens = list(tokenize.generate_tokens(io.StringIO(text).readline))
    except (tokenize.TokenError, SyntaxError, IndentationError) as exc:
        raise ValueError(f"expected valid Python source, but tokenize failed: {exc}") from None
    bad = next((t for t in tokens if t.type == tokenize.ERRORTOKEN and t.string.strip()), None)
    if bad is not None:
        raise ValueError(
            f"expected valid Python source, but tokenize failed at line {bad.start[0]}: {bad.line.strip()!r}"
        )
    fstring_depth, fstring_start = 0, 0
    for tok in tokens:
        name = tokenize.tok_name[tok.type]
        start, end = offset(*tok.start), offset(*tok.end)
        if name in ("FSTRING_START", "TSTRING_START"):
            if fstring_depth == 0:
                fstring_start = start
            fstring_depth += 1
        elif name in ("FSTRING_END", "TSTRING_END"):
            fstring_depth -= 1
            if fstring_depth == 0:
                masks["string"][fstring_start:end] = True
        elif name in _STRING_TYPES:
            masks["string"][start:end] = True
        elif name == "COMMENT":
            masks["comment"][start:end] = True
        elif name == "NAME" and keyword.iskeyword(tok.string):
            masks["keyword"][start:end] = True
    for row in range(len(line_starts) - 1):
        line = text[line_starts[row] : line_starts[row + 1]]
        stripped = line.lstrip(" \t")
        if stripped.strip():
            masks["indent"][line_starts[row] : line_starts[row] + len(line) - len(stripped)] = True
    masks["indent"] &= ~masks["string"]  # continuation lines of a multi-line string are not indentation
    return masks


def token_classes(text: str, offsets: Sequence[tuple[int, int]]) -> dict[str, torch.Tensor]:
    """Per-token boolean masks ``[n_tokens]``, from a fast tokenizer's ``offset_mapping`` for ``text``.

    A token with an empty span (a special token such as BOS) belongs to no class.
    """
    chars = char_classes(text)
    out = {}
    for name, mask in chars.items():
        labels = [end > start and end <= len(text) and bool(mask[end - 1]) for start, end in offsets]
        out[name] = torch.tensor(labels, dtype=torch.bool)
    return out


def source_windows(model: Any, text: str) -> list[tuple[torch.Tensor, dict[str, torch.Tensor]]]:
    """``text`` as model-ready windows, each ``(tokens [1, <= n_ctx], class masks [<= n_ctx])``.

    The whole text is labelled first (so a long file keeps its string/comment context), then cut
    into windows of BOS + up to ``n_ctx - 1`` tokens; BOS is in no class.
    """
    tokenizer = getattr(model, "tokenizer", None)
    if tokenizer is None or not getattr(tokenizer, "is_fast", False):
        raise ValueError(
            "labelling source tokens needs the model's fast tokenizer (for character offsets); this model has none"
        )
    bos = tokenizer.bos_token_id
    if bos is None:
        raise ValueError("the model's tokenizer has no BOS token")
    enc = tokenizer(text, return_offsets_mapping=True, add_special_tokens=False, verbose=False)
    ids = list(enc["input_ids"])
    labels = token_classes(text, [tuple(o) for o in enc["offset_mapping"]])
    step = int(model.cfg.n_ctx) - 1
    windows = []
    for start in range(0, len(ids), step):
        chunk = torch.tensor([[int(bos)] + ids[start : start + step]])
        masks = {
            name: torch.cat([torch.zeros(1, dtype=torch.bool), m[start : start + step]]) for name, m in labels.items()
        }
        windows.append((chunk, masks))
    return windows
