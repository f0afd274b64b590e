"""HeadScan: previous-token, duplicate-token and induction scores of every head, streamed.

The scan runs on a worker thread (:class:`~.streaming.StreamingWidget`), batch
by batch, reducing each layer's patterns to running sums inside the hook
(nothing else is kept), so the kernel stays free, the heatmaps fill in as
batches finish, and Stop takes effect at the next batch with the partial scores
kept in Python.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from typing import Any

import ipywidgets
import numpy as np
import torch
import traitlets

from ..analysis.head_scores import HEAD_TYPES, RunningHeadScores, check_detection_pattern, detection_patterns
from ..capture.adapter import PATTERN_HOOK, ModelAdapter, adapter_for
from ..capture.inputs import index_in
from ..transport import picture
from ..transport.export import ExportRequest
from ..transport.protocol import Context, Reply
from .attention import AttentionView
from .base import endpoint, static_asset
from .streaming import StreamingWidget

MIN_REPEAT = 8
MAX_REPEAT = 32


class HeadScan(StreamingWidget):
    """Scores every head of a TransformerLens model on repeated random tokens (or your sequences).

    ``scan.scores[name]`` is ``[n_layers, n_heads]``; ``scan.top(name, k)`` ranks heads.
    Clicking a head opens its pattern on the scan sequence in ``scan.attention``. ``start()``
    rescans from zero, ``stop()`` keeps the scores so far, ``wait()`` blocks until the scan ends.
    Score definitions: :mod:`mi_widgets.analysis.head_scores`.
    """

    _esm = static_asset("head_scan.js")
    _css = static_asset("head_scan.css")
    _thread_name = "mi_widgets-head-scan"

    n_layers = traitlets.Int(0, read_only=True).tag(sync=True)
    n_heads = traitlets.Int(0, read_only=True).tag(sync=True)
    score_names = traitlets.List(traitlets.Unicode(), read_only=True).tag(sync=True)
    selected = traitlets.Dict().tag(sync=True)

    def __init__(
        self,
        model: Any,
        *,
        sequences: torch.Tensor | Sequence[str] | None = None,
        detection_pattern: torch.Tensor | None = None,
        n_batches: int = 8,
        batch_size: int = 16,
        seed: int = 0,
        autostart: bool = True,
    ) -> None:
        adapter = adapter_for(model)
        for layer in range(adapter.n_layers):  # fail now, not in the worker, if patterns cannot be hooked
            adapter.resolve_hook(PATTERN_HOOK.format(layer=layer))
        self._adapter = adapter
        self._batches = self._plan_batches(adapter, sequences, n_batches, batch_size, seed)
        names = HEAD_TYPES
        self._custom: torch.Tensor | None = None
        if detection_pattern is not None:
            seq = int(self._batches[0].shape[-1])
            if any(int(b.shape[-1]) != seq for b in self._batches):
                raise ValueError(
                    "a detection pattern needs sequences of one length: pass `sequences` as one [n, seq] tensor"
                )
            self._custom = check_detection_pattern(torch.as_tensor(detection_pattern), seq).to(adapter.device)
            names = names + ("custom",)
        self._names: tuple[str, ...] = names
        self._running = RunningHeadScores(adapter.n_layers, adapter.n_heads, names, adapter.device)
        self._display: ipywidgets.VBox | None = None
        self.attention = AttentionView(model, self._batches[0][0], layer=adapter.n_layers - 1, head=0)
        super().__init__()
        self.set_trait("n_layers", adapter.n_layers)
        self.set_trait("n_heads", adapter.n_heads)
        self.set_trait("score_names", list(names))
        self.selected = {"score": "induction", "layer": None, "head": None}
        if autostart:
            self.start()

    # ----- Python API ------------------------------------------------------------------

    @property
    def scores(self) -> dict[str, torch.Tensor]:
        """Scores so far, ``{name: [n_layers, n_heads]}`` (NaN before the first batch)."""
        return {name: s.cpu() for name, s in self._running.scores().items()}

    def top(self, name: str = "induction", k: int = 5) -> list[tuple[int, int, float]]:
        """The ``k`` highest-scoring heads as ``(layer, head, score)``."""
        if name not in self._names:
            raise ValueError(f"unknown score {name!r}; this scan has {', '.join(self._names)}")
        scores = self.scores[name]
        flat = torch.nan_to_num(scores.flatten(), nan=float("-inf"))
        order = flat.argsort(descending=True)[: max(0, int(k))]
        n_heads = scores.shape[1]
        return [
            (int(i) // n_heads, int(i) % n_heads, float(scores.flatten()[i])) for i in order if flat[i] > float("-inf")
        ]

    def close(self) -> None:
        """Close the scan with its linked AttentionView and the box that shows them together."""
        super().close()
        attention = getattr(self, "attention", None)
        if attention is not None:
            attention.close()
        display = getattr(self, "_display", None)
        if display is not None:
            display.layout.close()
            display.close()

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        """Show the score heatmaps above the pattern of the selected head."""
        if self._display is None:
            self._display = ipywidgets.VBox([self, self.attention])
        return self._display._repr_mimebundle_(**kwargs)

    @traitlets.validate("selected")
    def _check_selected(self, proposal: dict[str, Any]) -> dict[str, Any]:
        value = dict(proposal["value"])
        score = value.get("score", "induction")
        if score not in self._names:
            raise traitlets.TraitError(f"selected score must be one of {', '.join(self._names)}, got {score!r}")
        layer, head = value.get("layer"), value.get("head")
        if (layer is None) != (head is None):
            raise traitlets.TraitError("selected layer and head must both be set or both be None")
        if layer is not None:  # 1.7 or "1" is refused, never truncated to head 1
            layer = index_in("selected layer", layer, self.n_layers, traitlets.TraitError)
            head = index_in("selected head", head, self.n_heads, traitlets.TraitError)
        return {"score": score, "layer": layer, "head": head}

    @traitlets.observe("selected")
    def _open_head(self, change: dict[str, Any]) -> None:
        layer, head = change["new"]["layer"], change["new"]["head"]
        if layer is not None:
            self.attention.selected = {"layer": layer, "head": head, "query": None, "key": None}

    def _picture(self) -> Any:
        """One heatmap per score (layers down, heads across, 0 to 1); heads without a score yet stay empty."""
        rows = [f"L{layer}" for layer in range(self.n_layers)]
        cols = [f"H{head}" for head in range(self.n_heads)]
        panels = [
            picture.Panel(
                picture.labelled_heatmap(
                    picture.heatmap(scores, 0.0, 1.0, nan=picture.EMPTY_RGB["light"], cell=20, max_side=360),
                    rows,
                    cols,
                ),
                name,
            )
            for name, scores in self.scores.items()
        ]
        return picture.compose(f"HeadScan: {self.n_layers} layers x {self.n_heads} heads", panels, self._picture_note())

    # ----- internals ---------------------------------------------------------------------

    def _export_requests(self) -> list[ExportRequest]:
        if self.status == "running":
            done, total = self.progress.get("done", 0), self.progress.get("total", 0)
            raise ValueError(f"the scan is still running ({done} of {total}): export it when it is done or stopped")
        return [ExportRequest("scores", {}, "scores", required=True)]

    @endpoint("scores")
    def _serve_scores(self, params: dict[str, Any], buffers: list[memoryview], ctx: Context) -> Reply:
        scores = self._running.scores()
        reply = Reply({"names": list(self._names)})
        reply.result["scores"] = reply.add_array(torch.stack([scores[n] for n in self._names]), "float32")
        return reply

    def _n_steps(self) -> int:
        return len(self._batches)

    def _reset(self) -> None:
        self._running = RunningHeadScores(self.n_layers, self.n_heads, self._names, self._adapter.device)

    def _scan_step(self, index: int) -> None:
        tokens = self._batches[index]
        targets = detection_patterns(tokens)
        if self._custom is not None:
            targets["custom"] = self._custom.expand(tokens.shape[0], -1, -1)
        running = self._running
        self._adapter.each_pattern(tokens, lambda layer, p: running.update(layer, p, targets))

    @staticmethod
    def _plan_batches(
        adapter: ModelAdapter, sequences: Any, n_batches: int, batch_size: int, seed: int
    ) -> Sequence[torch.Tensor]:
        if sequences is not None:
            if isinstance(sequences, str):
                sequences = [sequences]
            if isinstance(sequences, torch.Tensor):
                tokens = sequences if sequences.ndim == 2 else sequences[None]
                rows = [adapter.to_tokens(row)[0] for row in tokens]
            elif isinstance(sequences, (list, tuple)):
                rows = []
                for i, item in enumerate(sequences):
                    try:
                        rows.append(adapter.to_tokens(item)[0])
                    except (TypeError, ValueError) as exc:
                        raise type(exc)(f"sequences[{i}]: {exc}") from None
            else:
                raise TypeError(
                    "sequences must be a list of texts (or of token-id lists) or a [n, seq] tensor of token ids, "
                    f"got {type(sequences).__name__}"
                )
            if not rows:
                raise ValueError("sequences is empty: expected at least one sequence to scan")
            if any(int(r.shape[-1]) < 2 for r in rows):
                raise ValueError("every sequence needs at least 2 tokens")
            groups = [rows[i : i + batch_size] for i in range(0, len(rows), batch_size)]
            for group in groups:
                lengths = sorted({int(r.shape[-1]) for r in group})
                if len(lengths) > 1:
                    raise ValueError(f"sequences in one batch must have one length, got lengths {lengths}")
            return [torch.stack(group) for group in groups]
        if n_batches < 1 or batch_size < 1:
            raise ValueError(f"n_batches and batch_size must be at least 1, got {n_batches} and {batch_size}")
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
        bos = adapter.bos_id
        longest = min(MAX_REPEAT, (adapter.n_ctx - (bos is not None)) // 2)
        if longest < 2:
            raise ValueError(f"the model's context (n_ctx={adapter.n_ctx}) is too short for repeated sequences")
        d_vocab = int(getattr(adapter.cfg, "d_vocab", 0))
        return RepeatedRandomBatches(
            n_batches, batch_size, (min(MIN_REPEAT, longest), longest), d_vocab, bos, seed, adapter.device
        )


class RepeatedRandomBatches(Sequence[torch.Tensor]):
    """``n`` batches of random tokens repeated once (``[BOS] x x``), each made when it is read from ``(seed, i)``:
    a scan of 10**5 batches starts at once and holds one batch at a time."""

    def __init__(
        self,
        n: int,
        batch_size: int,
        repeat: tuple[int, int],
        d_vocab: int,
        bos: int | None,
        seed: int,
        device: torch.device,
    ) -> None:
        self._n, self._batch_size, self._repeat = n, batch_size, repeat
        self._d_vocab, self._bos, self._seed, self._device = d_vocab, bos, seed, device

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, i: int) -> torch.Tensor:  # type: ignore[override]  # no slices: one batch at a time
        i = operator.index(i)
        if not -self._n <= i < self._n:
            raise IndexError(f"batch {i} of {self._n}")
        i %= self._n
        gen = torch.Generator().manual_seed(int(np.random.SeedSequence([self._seed, i]).generate_state(1)[0]))
        low, high = self._repeat
        repeat = int(torch.randint(low, high + 1, (1,), generator=gen))
        x = torch.randint(1, self._d_vocab, (self._batch_size, repeat), generator=gen)
        parts = [x, x] if self._bos is None else [torch.full((self._batch_size, 1), self._bos), x, x]
        return torch.cat(parts, dim=1).to(self._device)
