"""CompositionView: how much each head reads what an earlier head writes (Q, K or V).

The view is one writer x reader matrix over all heads, rows and columns grouped by
layer, so every layer-to-layer block is visible at once; by default it shows each
score minus the random baseline (see :mod:`mi_widgets.analysis.composition`),
because raw composition scores are far from 0 even for random weights.
Scores are computed from the weights once per mode and cached in the kernel.
"""

from __future__ import annotations

import math
import threading
from typing import Any

import torch
import traitlets

from ..analysis.activations import symmetric_range
from ..analysis.composition import COMPOSITION_MODES, composition_baseline
from ..capture.adapter import adapter_for, require_transformer_lens
from ..capture.inputs import index_in
from ..transport import picture
from ..transport.export import ExportRequest
from ..transport.protocol import Context, Reply
from .base import ProtocolWidget, endpoint, static_asset


class CompositionView(ProtocolWidget):
    """Q-, K- and V-composition scores between heads of different layers (Elhage et al. 2021).

    ``CompositionView(model, mode="K")``; ``view.scores("K")`` is ``[layers, heads, layers, heads]``
    (writer first), ``view.top("K", k)`` ranks pairs, and a click in the view lands in
    ``view.selected`` as ``{"writer": [layer, head], "reader": [layer, head]}``.
    """

    _esm = static_asset("composition.js")
    _css = static_asset("composition.css")

    n_layers = traitlets.Int(0, read_only=True).tag(sync=True)
    n_heads = traitlets.Int(0, read_only=True).tag(sync=True)
    mode = traitlets.Enum(COMPOSITION_MODES, default_value="K").tag(sync=True)
    relative = traitlets.Bool(True, help="show score minus the random baseline").tag(sync=True)
    baseline = traitlets.Float(0.0, read_only=True).tag(sync=True)
    selected = traitlets.Dict().tag(sync=True)

    def __init__(self, model: Any, mode: str = "K", *, relative: bool = True) -> None:
        adapter = adapter_for(model)
        require_transformer_lens(adapter, "CompositionView (composition scores from W_Q, W_K, W_V, W_O)")
        if not adapter.has_composition_scores:
            raise TypeError(
                "CompositionView needs a TransformerLens model with stacked W_Q, W_K, W_V, W_O "
                f"(TransformerBridge or HookedTransformer), got {type(model).__qualname__}"
            )
        self._adapter = adapter
        self._cache: dict[str, torch.Tensor] = {}
        self._lock = threading.Lock()
        cfg = adapter.cfg
        super().__init__(mode=mode, relative=relative)
        self.set_trait("n_layers", adapter.n_layers)
        self.set_trait("n_heads", adapter.n_heads)
        self.set_trait("baseline", composition_baseline(int(cfg.d_model), int(cfg.d_head)))
        self.selected = {"writer": None, "reader": None}

    # ----- Python API ------------------------------------------------------------------

    def scores(self, mode: str | None = None) -> torch.Tensor:
        """Raw scores ``[layers, heads, layers, heads]`` (writer, reader) of ``mode`` (default: the view's)."""
        return self._scores(mode or self.mode).cpu()

    def top(self, mode: str | None = None, k: int = 5) -> list[tuple[int, int, int, int, float]]:
        """The ``k`` strongest pairs with writer layer < reader layer, as ``(l1, h1, l2, h2, score)``."""
        scores = self.scores(mode)
        n_layers, n_heads = scores.shape[:2]
        valid = _valid_pairs(n_layers, n_heads).reshape(scores.shape)
        flat = torch.where(valid, scores, torch.tensor(float("-inf"))).flatten()
        order = flat.argsort(descending=True)[: max(0, int(k))]
        out = []
        for i in order.tolist():
            if flat[i] == float("-inf"):
                break
            l1, h1, l2, h2 = torch.unravel_index(torch.tensor(i), scores.shape)
            out.append((int(l1), int(h1), int(l2), int(h2), float(flat[i])))
        return out

    def refresh(self) -> None:
        """Recompute from the current weights (after training or editing the model)."""
        with self._lock:
            self._cache.clear()
        self._bump_revision()

    @traitlets.validate("selected")
    def _check_selected(self, proposal: dict[str, Any]) -> dict[str, Any]:
        value = dict(proposal["value"])
        unknown = set(value) - {"writer", "reader"}
        if unknown:
            raise traitlets.TraitError(f"selected takes keys writer and reader; got unknown {sorted(unknown)}")
        writer, reader = value.get("writer"), value.get("reader")
        if (writer is None) != (reader is None):
            raise traitlets.TraitError("selected writer and reader must both be [layer, head] or both None")
        if writer is None:
            return {"writer": None, "reader": None}
        pair = []
        for name, head in (("writer", writer), ("reader", reader)):
            if not isinstance(head, (list, tuple)) or len(head) != 2:
                raise traitlets.TraitError(f"selected {name} must be [layer, head], got {head!r}")
            layer = index_in(f"selected {name} layer", head[0], self.n_layers, traitlets.TraitError)  # 1.7 is refused,
            index = index_in(f"selected {name} head", head[1], self.n_heads, traitlets.TraitError)  # never truncated
            pair.append([layer, index])
        if pair[0][0] >= pair[1][0]:
            raise traitlets.TraitError(
                f"the writer's layer must come before the reader's, got writer layer {pair[0][0]} and reader layer {pair[1][0]}"
            )
        return {"writer": pair[0], "reader": pair[1]}

    def _picture(self) -> Any:
        """The score matrix of the view's mode, writers down and readers across, as the view colours it: score
        minus the random baseline on a symmetric scale, or raw scores on [0, max]; impossible pairs empty."""
        n = self.n_layers * self.n_heads
        matrix = torch.where(_valid_pairs(self.n_layers, self.n_heads), self.scores().reshape(n, n).float(), math.nan)
        values = matrix - self.baseline if self.relative else matrix
        top = symmetric_range([values]) or 1.0
        lo = -top if self.relative else 0.0
        image = picture.heatmap(
            values, lo, top, diverging=self.relative, nan=picture.EMPTY_RGB["light"], cell=12, max_side=480
        )
        heads = [f"L{i // self.n_heads}H{i % self.n_heads}" for i in range(n)]
        what = (
            f"score - baseline ({self.baseline:.3g}), up to +-{top:.3g}" if self.relative else f"score, 0 to {top:.3g}"
        )
        return picture.compose(
            f"CompositionView: {self.mode}-composition, writers down, readers across",
            [picture.Panel(picture.labelled_heatmap(image, heads, heads), what)],
            picture.NOTE,
        )

    # ----- request handlers --------------------------------------------------------------

    def _export_requests(self) -> list[ExportRequest]:
        """Every mode's scores (the view switches between them), the shown mode's first."""
        modes = [self.mode] + [m for m in COMPOSITION_MODES if m != self.mode]
        return [ExportRequest("scores", {"mode": m}, f"{m}-composition", required=m == self.mode) for m in modes]

    @endpoint("scores", background=True)
    def _serve_scores(self, params: dict[str, Any], buffers: list[memoryview], ctx: Context) -> Reply:
        mode = params.get("mode")
        if mode not in COMPOSITION_MODES:
            raise ValueError(f"mode must be one of {', '.join(COMPOSITION_MODES)}, got {mode!r}")
        scores = self._scores(mode)
        n = self.n_layers * self.n_heads
        matrix = torch.where(
            _valid_pairs(self.n_layers, self.n_heads).to(scores.device), scores.reshape(n, n).float(), float("nan")
        )
        reply = Reply({"mode": mode, "baseline": self.baseline})
        reply.result["scores"] = reply.add_array(matrix, "float16")
        return reply

    # ----- internals ---------------------------------------------------------------------

    def _scores(self, mode: str) -> torch.Tensor:
        if mode not in COMPOSITION_MODES:
            raise ValueError(f"mode must be one of {', '.join(COMPOSITION_MODES)}, got {mode!r}")
        with self._lock:
            if mode not in self._cache:
                self._cache[mode] = self._adapter.composition_scores(mode)
            return self._cache[mode]


def _valid_pairs(n_layers: int, n_heads: int) -> torch.Tensor:
    """``[L*H, L*H]`` mask of (writer, reader) pairs whose writer layer is earlier."""
    layer = torch.arange(n_layers).repeat_interleave(n_heads)
    return layer[:, None] < layer[None, :]
