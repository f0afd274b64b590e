"""AttentionView: every head's attention pattern, served on demand from the kernel.

The patterns stay where they were computed (GPU or CPU). The view gets a
layer x head grid of max-pooled thumbnails up front and then, per head:

* up to ``EXACT_MAX_SEQ`` tokens, the whole pattern in one ``pattern`` request (float16, for causal patterns
  only the lower triangle);
* beyond that, level-of-detail ``tile`` requests: ``TILE`` x ``TILE`` blocks of the pattern max-pooled by
  ``2**level`` (level 0 = full resolution), quantised to uint8 over the colour scale. The view asks for the
  one tile that holds the whole head first (its overview), then for the tiles of the visible region at the
  level its zoom needs. Exact values for the readout and the token strip come from ``line`` requests (one
  query row or key column, float16).
"""

from __future__ import annotations

import itertools
import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import traitlets

from ..analysis.attention import check_patterns, pattern_thumbnails, pool_max
from ..capture.adapter import ModelAdapter, adapter_for
from ..capture.inputs import index_in, visible_texts
from ..transport import picture
from ..transport.export import ExportRequest
from ..transport.protocol import Context, Reply
from ..transport.scale import DEFAULT_SCALE, ColorScale
from .base import ProtocolWidget, endpoint, int_param, static_asset

#: Longest prompt whose heads go to the view whole (``pattern``); longer ones go as ``tile``s.
EXACT_MAX_SEQ = 512
#: Side of a ``tile`` in cells of its level (twin: ``TILE`` in ``js/src/views/attention.ts``).
TILE = 512


@dataclass(frozen=True)
class _Snapshot:
    """Everything one prompt produced; swapped whole so a request never mixes two prompts."""

    revision: int
    prompt: str
    tokens: list[str]
    layers: list[torch.Tensor]  # per layer [heads, query, key], on the model's device
    thumbnails: torch.Tensor  # [layers, heads, s, s]
    scale: ColorScale = DEFAULT_SCALE  # the colour scale (0..1 in the views' own map unless given)
    head_names: tuple[str, ...] = ()  # one per (layer, head), row-major; () = "L0H3"
    mask_upper_tri: bool = False  # cells above the diagonal are drawn empty (causal display)
    show_axis_labels: bool = True
    # Past EXACT_MAX_SEQ tokens: every head's top-level tile (the head max-pooled to at most TILE a side), float16,
    # [layers, heads, n, n] where the patterns are (1 MiB per head at most, against 64 MiB for a 4096-token head):
    # computed with the thumbnails, so the overview tile a head switch asks for is a slice, not a pass over the head.
    top_tiles: torch.Tensor | None = None


class AttentionView(ProtocolWidget):
    """Interactive attention patterns of every layer and head.

    ``AttentionView(model, prompt)`` runs a TransformerLens model (4.x or 2.x, any
    device) and lets the prompt be edited in the view; ``AttentionView.from_cache``
    and :func:`attention_heads` show patterns you already have. Clicks in the
    view land in :attr:`selected`.
    """

    _esm = static_asset("attention.js")
    _css = static_asset("attention.css")

    n_layers = traitlets.Int(0).tag(sync=True)
    n_heads = traitlets.Int(0).tag(sync=True)
    tokens = traitlets.List(traitlets.Unicode(), read_only=True).tag(sync=True)
    prompt = traitlets.Unicode("").tag(sync=True)
    can_rerun = traitlets.Bool(False, read_only=True).tag(sync=True)
    head_names = traitlets.List(
        traitlets.Unicode(), read_only=True, help="one name per head, layer by layer ([] = 'L0H3')"
    ).tag(sync=True)
    color_scale = traitlets.Dict(
        read_only=True, help="{lo, hi, negative, positive}: values lo..hi, 0 = background; colours '#rrggbb' or ''"
    ).tag(sync=True)
    mask_upper_tri = traitlets.Bool(False, read_only=True, help="cells above the diagonal drawn empty").tag(sync=True)
    show_axis_labels = traitlets.Bool(True, read_only=True).tag(sync=True)
    selected = traitlets.Dict().tag(sync=True)

    def __init__(
        self,
        model: Any = None,
        prompt: str | torch.Tensor | Sequence[int] | None = None,
        *,
        layer: int = 0,
        head: int = 0,
        _snapshot: _Snapshot | None = None,
        **kwargs: Any,
    ) -> None:
        self._adapter: ModelAdapter | None = None
        self._applying = threading.Lock()
        if _snapshot is None:
            if model is None:
                raise TypeError(
                    "AttentionView(model, prompt) needs a model (TransformerLens, or an nnsight LanguageModel); "
                    "to show patterns you already have use mw.attention_heads(attention, tokens) or "
                    "AttentionView.from_cache(cache, tokens)"
                )
            if prompt is None:
                raise TypeError("AttentionView(model, prompt) needs a prompt: a string or token ids")
            self._adapter = adapter_for(model)
            _snapshot = self._compute(prompt)
        self._snapshot = _snapshot
        n_layers, n_heads = len(_snapshot.layers), int(_snapshot.layers[0].shape[0])
        super().__init__(n_layers=n_layers, n_heads=n_heads, **kwargs)
        self._set_snapshot_traits(_snapshot)
        self.set_trait("can_rerun", self._adapter is not None)
        self.selected = {"layer": layer, "head": head, "query": None, "key": None}

    # ----- other ways in -------------------------------------------------------------------

    @classmethod
    def from_patterns(
        cls,
        attention: Any,
        tokens: Sequence[str],
        *,
        layer: int = 0,
        head: int = 0,
        head_names: Sequence[str] | None = None,
        min_value: float | None = None,
        max_value: float | None = None,
        negative_color: str | None = None,
        positive_color: str | None = None,
        mask_upper_tri: bool = False,
        show_axis_labels: bool = True,
    ) -> AttentionView:
        """Show patterns ``[heads, query, key]`` or ``[layers, heads, query, key]`` (torch or numpy).

        Weights must be finite. The colour scale is ``min_value..max_value`` (default 0..1), anchored at zero:
        0 is the background, ``max_value`` full ``positive_color`` and ``min_value`` full ``negative_color`` (CSS
        colours; default: the views' own maps). Negative weights (scores, attributions) need ``min_value < 0``.
        ``head_names``: one per head (``n_heads``, the same names in every layer) or per head of every layer
        (``n_layers * n_heads``, layer by layer). ``mask_upper_tri`` draws cells above the diagonal empty
        (causal attention); ``show_axis_labels=False`` leaves the tokens off the pattern's axes.
        """
        scale = ColorScale.from_options(
            min_value, max_value, negative_color, positive_color, default_lo=0.0, default_hi=1.0
        )
        return cls._from_fixed(
            _as_tensor(attention),
            tokens,
            layer,
            head,
            finite=True,
            scale=scale,
            head_names=head_names,
            mask_upper_tri=_flag(mask_upper_tri, "mask_upper_tri"),
            show_axis_labels=_flag(show_axis_labels, "show_axis_labels"),
            warn_above=max_value is None,
        )

    @classmethod
    def _from_fixed(
        cls,
        attention: torch.Tensor,
        tokens: Sequence[str],
        layer: int,
        head: int,
        *,
        finite: bool,
        scale: ColorScale = DEFAULT_SCALE,
        head_names: Sequence[str] | None = None,
        mask_upper_tri: bool = False,
        show_axis_labels: bool = True,
        warn_above: bool = True,
    ) -> AttentionView:
        labels = _token_labels(tokens)
        patterns = check_patterns(
            attention, len(labels), finite=finite, allow_negative=scale.lo < 0, warn_above=warn_above
        )
        layers = list(patterns.unbind(0))
        names = _head_names(head_names, len(layers), int(patterns.shape[1]))
        shown = [torch.tril(p) for p in layers] if mask_upper_tri else layers
        thumbnails, top_tiles = _summaries(shown, signed=scale.lo < 0)
        snapshot = _Snapshot(
            cls._new_revision(),
            "",
            labels,
            layers,
            thumbnails,
            scale,
            names,
            mask_upper_tri,
            show_axis_labels,
            top_tiles,
        )
        return cls(_snapshot=snapshot, layer=layer, head=head)

    @classmethod
    def from_cache(
        cls, cache: Any, tokens: Sequence[str] | Any, *, batch_index: int = 0, layer: int = 0, head: int = 0
    ) -> AttentionView:
        """Show the attention patterns stored in a TransformerLens ``ActivationCache``.

        A model computed these, so NaN/inf stay in and show as broken heads (see :func:`check_patterns`).
        """
        keys = set(cache.keys())
        layers = []
        for index in itertools.count():
            name = f"blocks.{index}.attn.hook_pattern"
            if name not in keys:
                break
            pattern = cache[name]
            if pattern.ndim != 4:
                raise ValueError(f"expected {name} as [batch, heads, query, key], got shape {list(pattern.shape)}")
            if not 0 <= batch_index < pattern.shape[0]:
                raise IndexError(f"batch_index must be in 0..{pattern.shape[0] - 1}, got {batch_index}")
            layers.append(pattern[batch_index])
        if not layers:
            raise ValueError(
                "the cache holds no attention patterns (keys like 'blocks.0.attn.hook_pattern'); run "
                "model.run_with_cache(tokens, names_filter=lambda name: name.endswith('hook_pattern'))"
            )
        if not isinstance(tokens, (list, tuple)):  # token ids: label them with the cache's model
            ids = torch.as_tensor(tokens)
            ids = ids[batch_index] if ids.ndim == 2 else ids
            model = getattr(cache, "model", None)
            tokens = adapter_for(model).token_labels(ids) if model is not None else [f"<{i}>" for i in ids.tolist()]
        return cls._from_fixed(torch.stack(layers).detach(), tokens, layer, head, finite=False)

    # ----- Python API ------------------------------------------------------------------

    @property
    def patterns(self) -> torch.Tensor:
        """All patterns as ``[layers, heads, query, key]``, on the device they were computed on."""
        return torch.stack(self._snapshot.layers)

    def pattern(self, layer: int, head: int) -> torch.Tensor:
        """One head's pattern ``[query, key]``."""
        layer, head = self._check_head(layer, head)
        return self._snapshot.layers[layer][head]

    @traitlets.validate("prompt")
    def _rerun_on_prompt(self, proposal: dict[str, Any]) -> str:
        """Setting ``view.prompt`` from Python re-runs the model; a bad prompt raises and changes nothing."""
        value = proposal["value"]
        if value == self._snapshot.prompt:  # also how _apply's own write passes through
            return value
        if self._adapter is None:
            raise traitlets.TraitError(
                "this view shows fixed patterns (no model attached), so the prompt cannot change"
            )
        # A snapshot a view's own run applied meanwhile (a newer one) wins: the trait says what is shown.
        return value if self._apply(self._compute(value)) else self._snapshot.prompt

    @traitlets.validate("selected")
    def _check_selected(self, proposal: dict[str, Any]) -> dict[str, Any]:
        value = dict(proposal["value"])
        unknown = set(value) - {"layer", "head", "query", "key"}
        if unknown:
            raise traitlets.TraitError(f"selected takes keys layer, head, query, key; got unknown {sorted(unknown)}")
        layer, head = self._check_head(value.get("layer", 0), value.get("head", 0), traitlets.TraitError, "selected ")
        seq = len(self.tokens)
        out: dict[str, Any] = {"layer": layer, "head": head}
        for axis in ("query", "key"):
            position = value.get(axis)
            out[axis] = (
                None
                if position is None
                else index_in(f"selected {axis}", position, seq, traitlets.TraitError, " or None")
            )
        return out

    # ----- request handlers --------------------------------------------------------------

    @endpoint("overview")
    def _serve_overview(self, params: dict[str, Any], buffers: list[memoryview], ctx: Context) -> Reply:
        snap = self._snapshot
        reply = Reply(
            {
                "revision": snap.revision,
                "n_layers": len(snap.layers),
                "n_heads": int(snap.layers[0].shape[0]),
                "seq": len(snap.tokens),
                "size": int(snap.thumbnails.shape[-1]),
            }
        )
        reply.result["thumbnails"] = reply.add_array(
            snap.thumbnails, "uint8", value_range=(min(0.0, snap.scale.lo), max(0.0, snap.scale.hi))
        )
        return reply

    @endpoint("pattern")
    def _serve_pattern(self, params: dict[str, Any], buffers: list[memoryview], ctx: Context) -> Reply:
        snap = self._snapshot
        layer, head = int_param(params, "layer"), int_param(params, "head")
        self._check_head(layer, head)
        pattern = snap.layers[layer][head]
        if snap.mask_upper_tri:  # not shown: not sent
            pattern = torch.tril(pattern)
        causal = not bool(torch.triu(pattern, diagonal=1).any())  # NaN above the diagonal counts as non-zero
        reply = Reply({"revision": snap.revision, "layer": layer, "head": head})
        reply.result["pattern"] = reply.add_array(
            pattern.to(torch.float16), "float16", layout="lower" if causal else "dense"
        )
        return reply

    @endpoint("tile")
    def _serve_tile(self, params: dict[str, Any], buffers: list[memoryview], ctx: Context) -> Reply:
        """One ``TILE`` x ``TILE`` block (fewer at the edges) of a head's pattern max-pooled by ``2**level``.

        Params ``{layer, head, level, row, col}``: ``row``/``col`` count tiles of that level. Values go as uint8
        over the colour scale's range (what the view can colour; exact values: ``line``); a block that holds only
        zeros (above the diagonal of a causal head) goes as ``zero: true`` with no buffer. Signed scales keep each
        block's value of largest magnitude, and a block with a NaN is NaN.
        """
        snap = self._snapshot
        layer, head = int_param(params, "layer"), int_param(params, "head")
        self._check_head(layer, head)
        seq = len(snap.tokens)
        top = tile_levels(seq) - 1
        level = index_in("tile level", int_param(params, "level"), top + 1, ValueError)
        factor = 2**level
        n = -(-seq // factor)  # cells of this level per side
        n_tiles = -(-n // TILE)
        row = index_in(f"tile row (level {level}: {n_tiles} tiles per side)", int_param(params, "row"), n_tiles)
        col = index_in(f"tile col (level {level}: {n_tiles} tiles per side)", int_param(params, "col"), n_tiles)
        r0, c0 = row * TILE * factor, col * TILE * factor
        reply = Reply({"revision": snap.revision, "layer": layer, "head": head, "level": level, "row": row, "col": col})
        reply.result.update(size=n, tile=TILE)
        if level == top and snap.top_tiles is not None:  # pooled when the snapshot was made
            tile = snap.top_tiles[layer, head].float().cpu().numpy()
        else:
            block = snap.layers[layer][head][r0 : r0 + TILE * factor, c0 : c0 + TILE * factor]
            if snap.mask_upper_tri:  # not shown: not sent (cell (i, j) is above the diagonal when c0 + j > r0 + i)
                block = torch.tril(block, diagonal=r0 - c0)
            tile = pool_max(block, factor, signed=snap.scale.lo < 0).cpu().numpy()
        if not np.any(tile != 0):  # every pooled block is 0 only if every cell is (NaN != 0: sent)
            reply.result["zero"] = True
            return reply
        square = tile.shape[0] == tile.shape[1] and row == col
        causal = square and not np.any(np.triu(tile, 1) != 0)
        reply.result["values"] = reply.add_array(
            tile,
            "uint8",
            value_range=(min(0.0, snap.scale.lo), max(0.0, snap.scale.hi)),
            layout="lower" if causal else "dense",
        )
        return reply

    @endpoint("line")
    def _serve_line(self, params: dict[str, Any], buffers: list[memoryview], ctx: Context) -> Reply:
        """One query's row (``axis: "query"``) or one key's column (``axis: "key"``) of a head, float16:
        the exact values behind the readout and the token strip when the view shows tiles."""
        snap = self._snapshot
        layer, head = int_param(params, "layer"), int_param(params, "head")
        self._check_head(layer, head)
        axis = params.get("axis")
        if axis not in ("query", "key"):
            raise ValueError(f"line axis must be 'query' or 'key', got {axis!r}")
        seq = len(snap.tokens)
        index = index_in(f"line {axis}", int_param(params, "index"), seq)
        pattern = snap.layers[layer][head]
        values = (pattern[index] if axis == "query" else pattern[:, index]).float()
        if snap.mask_upper_tri:  # drawn empty, as the view draws them
            positions = torch.arange(seq, device=values.device)
            above = positions > index if axis == "query" else positions < index
            values = values.masked_fill(above, math.nan)
        reply = Reply({"revision": snap.revision, "layer": layer, "head": head, "axis": axis, "index": index})
        reply.result["values"] = reply.add_array(values.to(torch.float16), "float16")
        return reply

    def _export_requests(self) -> list[ExportRequest]:
        """The overview, the selected head, then every other head layer by layer (as many as the budget holds).

        Past ``EXACT_MAX_SEQ`` tokens a head is its tiles: every head's overview tile first (the selected one
        required), then the selected head's tiles level by level down to full resolution.
        """
        n_layers, n_heads = len(self._snapshot.layers), int(self._snapshot.layers[0].shape[0])
        layer, head = self._check_head(self.selected.get("layer", 0), self.selected.get("head", 0))
        heads = [(layer, head)] + [(l, h) for l in range(n_layers) for h in range(n_heads) if (l, h) != (layer, head)]
        overview = [ExportRequest("overview", {}, "overview", required=True)]
        seq = len(self._snapshot.tokens)
        if seq <= EXACT_MAX_SEQ:
            return overview + [
                ExportRequest("pattern", {"layer": l, "head": h}, f"L{l}H{h}", required=(l, h) == (layer, head))
                for l, h in heads
            ]
        top = tile_levels(seq) - 1
        tiles = [
            ExportRequest(
                "tile",
                {"layer": l, "head": h, "level": top, "row": 0, "col": 0},
                f"L{l}H{h} overview",
                required=(l, h) == (layer, head),
            )
            for l, h in heads
        ]
        for level in range(top - 1, -1, -1):
            n_tiles = math.ceil(math.ceil(seq / 2**level) / TILE)
            tiles += [
                ExportRequest(
                    "tile",
                    {"layer": layer, "head": head, "level": level, "row": r, "col": c},
                    f"L{layer}H{head} level {level} tile {r},{c}",
                )
                for r in range(n_tiles)
                for c in range(n_tiles)
            ]
        return overview + tiles

    def _export_state(self) -> dict[str, Any]:
        return {"can_rerun": False}  # no kernel in the page: the prompt box shows the exported prompt only

    @endpoint("run", background=True)
    def _serve_run(self, params: dict[str, Any], buffers: list[memoryview], ctx: Context) -> Reply:
        if self._adapter is None:
            raise ValueError("this view shows fixed patterns (no model attached), so it cannot re-run")
        prompt = params.get("prompt")
        if not isinstance(prompt, str):
            raise TypeError(f"run expects a text prompt, got {type(prompt).__name__}")
        snapshot = self._compute(prompt, ctx)
        ctx.raise_if_cancelled()  # a newer prompt arrived: never show this one
        self._apply(snapshot)
        return Reply({"revision": snapshot.revision, "tokens": snapshot.tokens, "prompt": snapshot.prompt})

    # ----- internals ---------------------------------------------------------------------

    def _compute(self, prompt: str | torch.Tensor | Sequence[int], ctx: Context | None = None) -> _Snapshot:
        adapter = self._adapter
        assert adapter is not None
        tokens = adapter.to_tokens(prompt)
        total = adapter.n_layers

        def on_layer(layer: int) -> None:
            if ctx is not None:
                ctx.progress(layer + 1, total, f"layer {layer + 1}/{total}")

        layers = adapter.attention_patterns(tokens, on_layer=on_layer)
        text = prompt if isinstance(prompt, str) else ""
        thumbnails, top_tiles = _summaries(layers)
        return _Snapshot(
            self._new_revision(), text, adapter.token_labels(tokens[0]), layers, thumbnails, top_tiles=top_tiles
        )

    def _apply(self, snapshot: _Snapshot) -> bool:
        """Show ``snapshot``, unless a newer one (computed later, by a run in parallel) is shown already."""
        with self._applying, self.hold_sync():
            if snapshot.revision <= self.revision:
                return False
            self._snapshot = snapshot
            self._set_snapshot_traits(snapshot)
            sel = dict(self.selected or {})
            self.selected = {"layer": sel.get("layer", 0), "head": sel.get("head", 0), "query": None, "key": None}
            return True

    def _set_snapshot_traits(self, snapshot: _Snapshot) -> None:
        self.set_trait("tokens", list(snapshot.tokens))
        self.set_trait("head_names", list(snapshot.head_names))
        self.set_trait("color_scale", snapshot.scale.trait())
        self.set_trait("mask_upper_tri", snapshot.mask_upper_tri)
        self.set_trait("show_axis_labels", snapshot.show_axis_labels)
        self._bump_revision(snapshot.revision)
        self.prompt = snapshot.prompt  # equals the snapshot's prompt, so no re-run

    def _picture(self) -> Any:
        """Every head's thumbnail (layers down, heads across) and the selected head's pattern, labelled."""
        snap = self._snapshot
        thumbs = snap.thumbnails.float().cpu()
        n_layers, n_heads, size = thumbs.shape[0], thumbs.shape[1], thumbs.shape[-1]
        gap = 2
        grid = torch.full((n_layers * (size + gap) - gap, n_heads * (size + gap) - gap), math.nan)
        for layer in range(n_layers):
            for head in range(n_heads):
                y, x = layer * (size + gap), head * (size + gap)
                grid[y : y + size, x : x + size] = thumbs[layer, head]
        cell = max(1, round(48 / size))  # a thumbnail ~48 pixels across
        lo, hi, lut = snap.scale.lo, snap.scale.hi, snap.scale.lut()
        overview = picture.heatmap(grid, lo, hi, nan=picture.BACKGROUND, cell=cell, max_side=400, lut=lut)
        layer, head = self._check_head(self.selected.get("layer", 0), self.selected.get("head", 0))
        values = snap.layers[layer][head].float()
        if snap.top_tiles is not None:  # the view's overview tile, instead of pooling 4096 x 4096 again
            values = snap.top_tiles[layer, head].float().cpu()
        if snap.mask_upper_tri:  # drawn empty, as the view draws them
            values = values.masked_fill(torch.ones_like(values, dtype=torch.bool).triu(1), math.nan)
        empty = picture.EMPTY_RGB["light"] if snap.mask_upper_tri else picture.NAN_RGB
        pattern = picture.heatmap(values, lo, hi, cell=12, max_side=400, lut=lut, nan=empty)
        labels = list(snap.tokens) if snap.show_axis_labels else []
        name = self.head_name(layer, head)
        return picture.compose(
            f"AttentionView: {len(snap.tokens)} tokens, {n_layers} layers x {n_heads} heads",
            [
                picture.Panel(overview, f"every head (layers down, heads across), max-pooled to {size}x{size}"),
                picture.Panel(
                    picture.labelled_heatmap(pattern, labels, labels) if labels else pattern,
                    f"{name}: query rows, key columns",
                ),
            ],
            picture.NOTE,
        )

    def head_name(self, layer: int, head: int) -> str:
        """The head's name: one given to ``head_names``, else ``"L{layer}H{head}"``."""
        layer, head = self._check_head(layer, head)
        names = self._snapshot.head_names
        return names[layer * int(self._snapshot.layers[0].shape[0]) + head] if names else f"L{layer}H{head}"

    def _check_head(
        self, layer: Any, head: Any, error: type[Exception] = IndexError, prefix: str = ""
    ) -> tuple[int, int]:
        """``(layer, head)`` as ints in range; 1.7 or "1" is an error, never truncated to head 1."""
        n_layers, n_heads = len(self._snapshot.layers), int(self._snapshot.layers[0].shape[0])
        return index_in(f"{prefix}layer", layer, n_layers, error), index_in(f"{prefix}head", head, n_heads, error)


def attention_heads(attention: Any, tokens: Sequence[str], *, layer: int = 0, head: int = 0) -> AttentionView:
    """CircuitsVis-style entry point: ``attention`` is ``[heads, query, key]`` (torch or numpy, float).

    For CircuitsVis's full signature (head names, colours, ``mask_upper_tri``, nested lists) use
    ``mi_widgets.circuitsvis.attention.attention_heads``.
    """
    return AttentionView.from_patterns(attention, tokens, layer=layer, head=head)


def tile_levels(seq: int) -> int:
    """How many tile levels a ``seq``-token head has: 0 (full resolution) up to the first whose one tile holds
    the whole head (``ceil(seq / 2**level) <= TILE``); twin ``tileLevels`` in ``js/src/lib/tiles.ts``."""
    levels = 1
    while -(-seq // 2 ** (levels - 1)) > TILE:
        levels += 1
    return levels


def _summaries(shown: list[torch.Tensor], *, signed: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Thumbnails ``[layers, heads, s, s]`` and, past ``EXACT_MAX_SEQ`` tokens, every head's top-level tile
    (float16; the thumbnails are pooled from those, so the full patterns are read once)."""
    seq = int(shown[0].shape[-1])
    if seq <= EXACT_MAX_SEQ:
        return pattern_thumbnails(shown, signed=signed), None
    factor = 2 ** (tile_levels(seq) - 1)
    tops = [pool_max(layer, factor, signed=signed) for layer in shown]
    return pattern_thumbnails(tops, signed=signed), torch.stack(tops).to(torch.float16)


def _flag(value: Any, name: str) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {value!r}")
    return bool(value)


def _head_names(names: Sequence[str] | None, n_layers: int, n_heads: int) -> tuple[str, ...]:
    """Names per (layer, head), layer by layer: ``n_heads`` names are repeated in every layer."""
    if names is None:
        return ()
    if isinstance(names, str) or not isinstance(names, Sequence):
        raise TypeError(f"head names must be a list of strings, got {type(names).__name__}")
    if len(names) == n_heads:
        names = list(names) * n_layers
    elif len(names) != n_layers * n_heads:
        per_layer = f" or {n_layers * n_heads} (n_layers x n_heads)" if n_layers > 1 else ""
        raise ValueError(f"expected {n_heads} head names (one per head){per_layer}, got {len(names)}")
    bad = [n for n in names if not isinstance(n, str)]
    if bad:
        raise TypeError(f"head names must be strings, got {bad[0]!r}")
    return tuple(visible_texts(names))


def _as_tensor(attention: Any) -> torch.Tensor:
    if isinstance(attention, torch.Tensor):
        if attention.is_meta:
            raise ValueError("attention is on the meta device and holds no values: expected a tensor with data")
        return attention.detach()
    if isinstance(attention, np.ndarray):
        return torch.from_numpy(attention)
    raise TypeError(f"expected attention as a torch.Tensor or numpy.ndarray, got {type(attention).__name__}")


def _token_labels(tokens: Sequence[str]) -> list[str]:
    """User-given token labels as strings the kernel can send (a lone surrogate shows as ``\\ud800``)."""
    if isinstance(tokens, str) or not isinstance(tokens, Sequence):
        raise TypeError(f"expected tokens as a list of strings, got {type(tokens).__name__}")
    return visible_texts(tokens)
