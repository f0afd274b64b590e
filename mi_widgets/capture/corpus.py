"""Corpora for scans: cut texts into windows a model can read, and cut contexts around maxima.

Shared by the scans over a corpus (TopExamples, FeatureView, SAE training): a corpus is a list of
texts (each tokenized, then cut into windows of at most ``n_ctx`` tokens that start with BOS) or
token ids used as they are. A scan keeps only (value, window, position) per maximum; the
activations around a maximum are recomputed on demand by :func:`context_windows`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ..analysis.activations import check_per_token_hook
from ..analysis.top_examples import EMPTY, RunningTopK, pad_rows, split_windows
from .adapter import ModelAdapter
from .inputs import check_text


@dataclass(frozen=True, eq=False)  # eq would compare activation tensors elementwise
class Example:
    """One top-activating context of a neuron.

    ``tokens``/``activations`` cover the context around the maximum (up to ``context`` tokens
    before, ``after`` tokens after); ``max_index`` is the maximum's index in that context;
    ``value`` its activation as found by the scan; ``window`` the corpus window (row) it is in
    and ``position`` the token position in that window; ``source`` the corpus item (text or
    token row) the window was cut from.
    """

    tokens: list[str]
    activations: torch.Tensor
    max_index: int
    value: float
    window: int
    position: int
    source: int


def resolve_layer_hook(adapter: ModelAdapter, hook: str, layer: int | None) -> str:
    names = adapter.layer_hooks(hook)
    if len(names) == 1:
        if layer is not None:
            raise ValueError(
                f"layer= only applies to a per-layer shorthand like 'mlp.post'; {hook!r} already names one hook"
            )
        name = names[0]
    elif layer is None:
        raise ValueError(
            f"hook {hook!r} means one hook in each of the {len(names)} layers, but only one can be read here: "
            f"pass layer=0..{len(names) - 1} or a full name like {names[-1]!r}"
        )
    else:
        if isinstance(layer, bool) or not isinstance(layer, int) or not 0 <= layer < len(names):
            raise ValueError(f"layer must be in 0..{len(names) - 1}, got {layer!r}")
        name = names[layer]
    return check_per_token_hook(name)


def plan_corpus(adapter: ModelAdapter, corpus: Any) -> tuple[list[torch.Tensor], list[int]]:
    """Windows (1-D CPU token rows of at most n_ctx) and, for each, the index of the corpus item it came from."""
    expected = "a list of strings, or token ids as a [batch, seq] tensor or a list of tensors"
    if isinstance(corpus, (str, torch.Tensor)):
        corpus = [corpus]
    if not isinstance(corpus, (list, tuple)):
        raise TypeError(f"corpus must be {expected}, got {type(corpus).__name__}")
    if not corpus:
        raise ValueError(f"corpus is empty: expected {expected}")
    rows: list[torch.Tensor] = []
    sources: list[int] = []
    if all(isinstance(item, str) for item in corpus):
        if not adapter.has_tokenizer:
            raise ValueError("this model has no tokenizer, so it cannot read a text corpus: pass token ids instead")
        bos = adapter.bos_id if getattr(adapter.cfg, "default_prepend_bos", True) else None
        for index, text in enumerate(corpus):
            check_text(text, f"corpus[{index}]")  # the tokenizer's own error for a lone surrogate says nothing useful
            tokens = adapter.text_ids(text).cpu() if text else torch.zeros(0, dtype=torch.long)
            for window in split_windows(tokens, adapter.n_ctx, bos) if tokens.numel() else []:
                rows.append(window)
                sources.append(index)
        if not rows:
            raise ValueError(f"corpus is empty: its {len(corpus)} text(s) hold no tokens")
        return rows, sources
    if all(isinstance(item, torch.Tensor) for item in corpus):
        source = 0
        for item in corpus:
            if item.ndim not in (1, 2):
                raise ValueError(f"token ids must be [seq] or [batch, seq] tensors, got shape {list(item.shape)}")
            for row in item if item.ndim == 2 else item[None]:
                if row.numel():
                    rows.append(adapter.to_tokens(row)[0].cpu())
                    sources.append(source)
                source += 1
        if not rows:
            raise ValueError("corpus is empty: its tensors hold no tokens")
        return rows, sources
    kinds = sorted({type(item).__name__ for item in corpus})
    raise TypeError(f"corpus must be {expected}, got a {type(corpus).__name__} of {', '.join(kinds)}")


def probe_units(adapter: ModelAdapter, hook: str, row: torch.Tensor) -> int:
    """Number of units the hook holds per token (trailing dimensions flattened), from a two-token run."""
    tokens = row[:2][None].to(adapter.device)
    shapes: list[tuple[int, ...]] = []
    adapter.each_activation(tokens, [hook], lambda _, a: shapes.append(tuple(a.shape)))
    shape = shapes[0]
    if len(shape) < 2 or shape[:2] != tuple(tokens.shape):
        raise ValueError(
            f"{hook!r} does not hold one activation vector per token: for tokens {list(tokens.shape)} it gave {list(shape)}"
        )
    units = 1
    for d in shape[2:]:
        units *= d
    return units


def context_windows(
    adapter: ModelAdapter,
    hook: str,
    rows: list[torch.Tensor],
    sources: list[int],
    found: list[tuple[float, int, int]],
    unit_values: Callable[[torch.Tensor], torch.Tensor],
    context: int,
    after: int,
) -> list[Example]:
    """Rerun the model on the windows holding ``found`` (value, row, position) and cut the context around each.

    ``unit_values`` maps the hook's activation ``[batch, seq, ...]`` to the one unit's values
    ``[batch, seq]`` (a neuron's column, an SAE feature, ...).
    """
    if not found:
        return []
    ends: dict[int, int] = {}
    for _, window, pos in found:
        ends[window] = max(ends.get(window, 0), min(int(rows[window].shape[0]), pos + after + 1))
    windows = list(ends)
    tokens, _ = pad_rows([rows[w][: ends[w]] for w in windows])
    got: list[torch.Tensor] = []
    adapter.each_activation(
        tokens.to(adapter.device), [hook], lambda _, a: got.append(unit_values(a).to(torch.float32, copy=True))
    )
    acts = got[0]  # on the model's device: only each example's context comes to the host
    out = []
    for value, window, pos in found:
        row = windows.index(window)
        start, end = max(0, pos - context), min(ends[window], pos + after + 1)
        out.append(
            Example(
                tokens=adapter.token_labels(rows[window][start:end]),
                activations=acts[row, start:end].to("cpu", torch.float32, copy=True),
                max_index=pos - start,
                value=value,
                window=window,
                position=pos,
                source=sources[window],
            )
        )
    return out


def text_batch(adapter: ModelAdapter, rows: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Windows padded into ``tokens [b, seq]`` and ``mask [b, seq]`` (CPU), the mask False on padding and on a
    leading BOS: BOS carries no text, and its activations are outliers a corpus statistic should not see."""
    tokens, mask = pad_rows(rows)
    bos = adapter.bos_id
    if bos is not None:
        mask[:, 0] &= tokens[:, 0] != bos
    return tokens, mask


def padded_activations(examples: Sequence[Example]) -> torch.Tensor:
    """``[examples, longest]`` activations of ``examples``, NaN after each one's end (one array for the view)."""
    width = max((len(e.tokens) for e in examples), default=0)
    out = torch.full((len(examples), width), float("nan"))
    for i, e in enumerate(examples):
        out[i, : len(e.tokens)] = e.activations
    return out


class TopContexts:
    """The contexts around each unit's entries in a running top-k, cut on demand and kept until the top-k moves.

    A scan keeps only (value, window, position) per entry; :meth:`examples` reruns the model on the
    windows of one unit (:func:`context_windows`) and caches the result per unit until the top-k
    object changes or takes another update. Safe to call from the request thread while a scan runs.
    """

    def __init__(
        self, adapter: ModelAdapter, hook: str, rows: list[torch.Tensor], sources: list[int], context: int, after: int
    ) -> None:
        self._args = (adapter, hook, rows, sources)
        self._context, self._after = context, after
        self._cache: dict[int, tuple[tuple[int, int], list[Example]]] = {}
        self._lock = threading.Lock()

    def examples(
        self,
        topk: RunningTopK,
        col: int,
        unit_values: Callable[[torch.Tensor], torch.Tensor],
        *,
        positive_only: bool = False,
    ) -> list[Example]:
        """Column ``col``'s entries as :class:`Example` s, best first; ``positive_only`` drops values <= 0
        (for sparse features a zero is "did not fire", not an example)."""
        key = (id(topk), topk.updates)
        with self._lock:
            hit = self._cache.get(col)
        if hit is not None and hit[0] == key:
            return hit[1]
        values, docs, positions = (t[col].cpu() for t in topk.snapshot())
        found = [
            (float(v), int(d), int(p))
            for v, d, p in zip(values, docs, positions)
            if int(d) != EMPTY and (v > 0 or not positive_only)
        ]
        examples = context_windows(*self._args, found, unit_values, self._context, self._after)
        with self._lock:
            self._cache[col] = (key, examples)
        return examples

    def clear(self) -> None:
        with self._lock:
            self._cache.clear()
