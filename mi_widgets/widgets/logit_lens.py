"""LogitLens: per layer and position, what the model would predict if it stopped there.

Rows are the residual stream before each block (``embed`` = before block 0) and after the last
one, read through the model's own final norm and unembedding (see
:mod:`mi_widgets.analysis.logit_lens`); columns are the prompt's positions. The kernel keeps the
residual streams (small) and, per cell, the top-k tokens and a target token's probability and
rank; the vocabulary-sized logits are never held whole. The view gets int32 ids, float16
probabilities and the strings of just the tokens that occur.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import traitlets

from ..analysis.logit_lens import LensResult, logit_lens
from ..capture.adapter import ModelAdapter, adapter_for
from ..capture.arrays import as_float_tensor
from ..capture.inputs import as_index, visible_texts
from ..capture.readout import checked_logit_lens, lens_row_labels, model_unembed, single_token_id, token_strings
from ..transport import picture
from ..transport.protocol import Context, Reply
from .base import ProtocolWidget, endpoint, static_asset

Target = int | str | None


@dataclass(frozen=True)
class _Snapshot:
    """One prompt's lens with one target; replaced whole so a request never mixes two."""

    revision: int
    resid: torch.Tensor | None  # [rows, seq, d_model] on the model's device; None from log probs
    result: LensResult
    target: Target  # as given (text or id)
    target_id: int | None
    target_token: str
    vocab_ids: list[int]  # the token ids that occur in the top-k (and the target), sorted
    vocab: list[str]  # their strings
    target_ids: torch.Tensor | None = None  # [rows, seq] a target per cell (-1: none), from_log_probs' next tokens


class LogitLens(ProtocolWidget):
    """The logit lens of a prompt: top-k next-token predictions per layer and position.

    ``LogitLens(model, prompt, target=" Mary", k=5)``. Each cell is ``softmax(unembed(ln_final(resid)))``
    of one layer's residual stream at one position, the model's own final norm and unembedding
    applied afresh to that layer's vector (nostalgebraist's logit lens, as in recent TransformerLens's
    ``accumulated_resid(apply_ln=True)``; ``apply_ln_to_stack`` instead divides every layer by the
    final layer's cached norm scale).
    The last row is exactly the model's next-token distribution, whatever the model does after its
    unembedding (Gemma 2's logit soft cap included): that is checked on every run, and a model whose
    readout the lens cannot reproduce is refused with the reason.

    ``lens.top(layer, position)`` lists a cell's top-k as ``(token, prob)``; ``lens.target_probs``
    and ``lens.target_ranks`` are ``[rows, seq]``; ``lens.target = " John"`` (or a token id, or
    None) re-reads the target; a click in the view lands in ``lens.selected`` as
    ``{"layer": row, "position": col}`` (row 0 = embeddings, row ``l + 1`` = after block ``l``).
    """

    _esm = static_asset("logit_lens.js")
    _css = static_asset("logit_lens.css")

    n_layers = traitlets.Int(0, read_only=True).tag(sync=True)
    rows = traitlets.List(traitlets.Unicode(), read_only=True).tag(sync=True)
    tokens = traitlets.List(traitlets.Unicode(), read_only=True).tag(sync=True)
    prompt = traitlets.Unicode("", read_only=True).tag(sync=True)
    k = traitlets.Int(5, read_only=True).tag(sync=True)
    target = traitlets.Union([traitlets.Int(), traitlets.Unicode()], default_value=None, allow_none=True).tag(sync=True)
    target_id = traitlets.Int(None, allow_none=True, read_only=True).tag(sync=True)
    target_token = traitlets.Unicode("", read_only=True).tag(sync=True)
    can_retarget = traitlets.Bool(True, read_only=True, help="False: fixed predictions (no model to re-read)").tag(
        sync=True
    )
    selected = traitlets.Dict().tag(sync=True)

    def __init__(
        self,
        model: Any = None,
        prompt: str | torch.Tensor | Sequence[int] | None = None,
        *,
        target: Target = None,
        k: int = 5,
        _fixed: tuple[_Snapshot, list[str], list[str]] | None = None,
    ) -> None:
        self._adapter: ModelAdapter | None = None
        self._applying = threading.Lock()
        if _fixed is not None:  # from_log_probs: (snapshot, rows, tokens)
            self._lens, rows, labels = _fixed
            super().__init__()
            self.set_trait("k", int(self._lens.result.top_ids.shape[-1]))
            self.set_trait("rows", rows)
            self.set_trait("tokens", labels)
            self.set_trait("can_retarget", False)
            self._set_lens_traits(self._lens)
            self.selected = {"layer": None, "position": None}
            return
        if model is None or prompt is None:
            raise TypeError(
                "LogitLens(model, prompt) needs a model (TransformerLens, or an nnsight LanguageModel) and a "
                "prompt; to show log probs you already have use LogitLens.from_log_probs(token_ids, log_probs, "
                "to_string)"
            )
        adapter = adapter_for(model)
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= 50:
            raise ValueError(f"k must be an integer in 1..50 (top tokens per cell), got {k!r}")
        self._adapter = adapter
        tokens = adapter.to_tokens(prompt)
        target_id = None if target is None else single_token_id(adapter, target, "target")
        resid, result = checked_logit_lens(adapter, tokens, k=k, target=target_id)
        self._lens = self._snapshot(resid, result, target, target_id)
        super().__init__()
        self.set_trait("k", k)
        self.set_trait("n_layers", adapter.n_layers)
        self.set_trait("rows", lens_row_labels(adapter.n_layers))
        self.set_trait("tokens", adapter.token_labels(tokens[0]))
        self.set_trait("prompt", prompt if isinstance(prompt, str) else "")
        self._set_lens_traits(self._lens)
        self.selected = {"layer": None, "position": None}

    @classmethod
    def from_log_probs(
        cls,
        token_ids: Any,
        log_probs: Any,
        to_string: Callable[[int], str],
        *,
        k: int | None = None,
        row: str = "output",
    ) -> LogitLens:
        """One row of predictions you already have: ``log_probs [seq, d_vocab]`` (or ``[1, seq, d_vocab]``) for
        the next token after each of ``token_ids [seq]``, e.g. ``model(tokens).log_softmax(-1)``. Each cell shows
        its top-``k`` tokens (default 10, or the vocabulary if smaller), and its target is the token that actually came next (the last position has none):
        its probability colours the cell, and the readout gives its rank. ``to_string`` turns an id into text.
        Values are shown as probabilities (``exp``); ``lens.target_probs.log()`` gives the log probs back.
        """
        ids = torch.as_tensor(token_ids.detach() if isinstance(token_ids, torch.Tensor) else token_ids)
        if ids.ndim == 2 and ids.shape[0] == 1:
            ids = ids[0]
        if ids.ndim != 1 or ids.dtype.is_floating_point or ids.dtype == torch.bool or ids.numel() == 0:
            raise ValueError(
                f"token_ids must be integer ids of shape [seq] (or [1, seq]), got {ids.dtype} of shape {list(ids.shape)}"
            )
        lp = as_float_tensor(log_probs, "log_probs")
        if lp.ndim == 3 and lp.shape[0] == 1:
            lp = lp[0]
        if lp.ndim != 2:
            raise ValueError(f"log_probs must be [seq, d_vocab] (or [1, seq, d_vocab]), got shape {list(lp.shape)}")
        if lp.shape[0] != ids.shape[0]:
            raise ValueError(
                f"Number of tokens and log prob vectors must be identical: {ids.shape[0]} token ids but "
                f"{lp.shape[0]} log prob vectors"
            )
        vocab_size = int(lp.shape[1])
        if bool(((ids < 0) | (ids >= vocab_size)).any()):
            raise ValueError(f"token_ids must be in 0..{vocab_size - 1} (the log probs' vocabulary)")
        if k is None:
            k = min(10, vocab_size)
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= min(50, vocab_size):
            raise ValueError(f"k must be an integer in 1..{min(50, vocab_size)} (top tokens per cell), got {k!r}")
        if bool(torch.isnan(lp).any()) or bool((lp == math.inf).any()):
            bad = torch.isnan(lp) | (lp == math.inf)
            position, token = (int(i) for i in bad.nonzero()[0])
            raise ValueError(
                f"log_probs at position {position}, token {token} is {float(lp[position, token])}: expected log "
                "probabilities (finite or -inf)"
            )
        if bool((lp > 1e-4).any()):  # logits, not log probabilities: exp() would give "probabilities" above 1
            position, token = (int(i) for i in (lp > 1e-4).nonzero()[0])
            raise ValueError(
                f"log_probs at position {position}, token {token} is {float(lp[position, token])} > 0: expected log "
                "probabilities (pass logits.log_softmax(-1))"
            )
        if not callable(to_string):
            raise TypeError(f"to_string must be a function from a token id to its text, got {type(to_string).__name__}")
        lp = lp.float()
        top_lp, top_ids = lp.topk(k, dim=-1)
        seq = int(ids.shape[0])
        ids = ids.to(lp.device).long()
        targets = torch.full((seq,), -1, dtype=torch.long, device=lp.device)
        targets[:-1] = ids[1:]
        target_probs = torch.full((seq,), math.nan, device=lp.device)
        target_ranks = torch.zeros(seq, dtype=torch.long, device=lp.device)
        if seq > 1:
            chosen = lp[:-1].gather(-1, ids[1:, None])
            target_probs[:-1] = chosen[:, 0].exp()
            target_ranks[:-1] = (lp[:-1] > chosen).sum(-1) + 1
        result = LensResult(top_ids[None], top_lp.exp()[None], target_probs[None], target_ranks[None])
        vocab_ids = sorted(set(top_ids.unique().tolist()) | set(ids.tolist()))
        strings = {i: to_string(i) for i in vocab_ids}
        bad = [i for i, t in strings.items() if not isinstance(t, str)]
        if bad:
            raise TypeError(f"to_string must return text, got {type(strings[bad[0]]).__name__} for id {bad[0]}")
        vocab = visible_texts([strings[i] for i in vocab_ids])
        labels = visible_texts([strings[i] for i in ids.tolist()])
        snapshot = _Snapshot(
            cls._new_revision(), None, result, None, None, "the next token", vocab_ids, vocab, targets[None]
        )
        return cls(_fixed=(snapshot, [row], labels))

    # ----- Python API ------------------------------------------------------------------

    @property
    def top_ids(self) -> torch.Tensor:
        """Top-k token ids ``[rows, seq, k]`` per cell, most likely first."""
        return self._lens.result.top_ids.cpu()

    @property
    def top_probs(self) -> torch.Tensor:
        """Their probabilities ``[rows, seq, k]`` (float32)."""
        return self._lens.result.top_probs.cpu()

    @property
    def target_probs(self) -> torch.Tensor:
        """The target token's probability ``[rows, seq]`` (float32)."""
        return self._target_tensor("target_probs")

    @property
    def target_ranks(self) -> torch.Tensor:
        """The target token's rank ``[rows, seq]``, 1 = the most likely token."""
        return self._target_tensor("target_ranks")

    def top(self, layer: int, position: int) -> list[tuple[str, float]]:
        """The top-k ``(token, probability)`` of one cell; ``layer`` is the row (0 = embeddings)."""
        self._check_cell(layer, position, IndexError)
        lens = self._lens
        ids = lens.result.top_ids[layer, position].tolist()
        probs = lens.result.top_probs[layer, position].tolist()
        labels = dict(zip(lens.vocab_ids, lens.vocab))
        return [(labels[i], float(p)) for i, p in zip(ids, probs)]

    @traitlets.validate("target")
    def _retarget(self, proposal: dict[str, Any]) -> Target:
        """Setting ``lens.target`` re-reads the target row; a bad target raises and changes nothing."""
        value = proposal["value"]
        if value == self._lens.target and type(value) is type(self._lens.target):  # also _apply's own write
            return value
        try:
            applied = self._apply(self._retargeted(value))
        except (ValueError, TypeError) as exc:
            raise traitlets.TraitError(str(exc)) from None
        # A target a view applied meanwhile (a newer snapshot) wins: the trait says what is shown.
        return value if applied else self._lens.target

    @traitlets.validate("selected")
    def _check_selected(self, proposal: dict[str, Any]) -> dict[str, Any]:
        value = dict(proposal["value"])
        unknown = set(value) - {"layer", "position"}
        if unknown:
            raise traitlets.TraitError(f"selected takes keys layer and position; got unknown {sorted(unknown)}")
        layer, position = value.get("layer"), value.get("position")
        if layer is None and position is None:
            return {"layer": None, "position": None}
        if layer is None or position is None:
            raise traitlets.TraitError(f"selected layer and position must both be set or both None, got {value}")
        layer = as_index("selected layer", layer, traitlets.TraitError)
        position = as_index("selected position", position, traitlets.TraitError)
        self._check_cell(layer, position, traitlets.TraitError)
        return {"layer": layer, "position": position}

    def _picture(self) -> Any:
        """Layers down, positions across, coloured by the top-1 probability (or the target's, with a target)."""
        lens = self._lens
        result = lens.result
        target = result.target_probs is not None
        values = result.target_probs if result.target_probs is not None else result.top_probs[..., 0]
        per_cell = lens.target_ids is not None  # from_log_probs: the next token, none at the end
        nan = picture.EMPTY_RGB["light"] if per_cell else picture.NAN_RGB
        cells = picture.heatmap(values, 0.0, 1.0, cell=16, max_side=640, nan=nan)
        what = f"probability of {lens.target_token!r}" if target else "top-1 probability"
        if per_cell:
            what = "probability of the token that came next"
        return picture.compose(
            f"LogitLens: {len(self.tokens)} tokens, {self.n_layers} layers",
            [picture.Panel(picture.labelled_heatmap(cells, list(self.rows), list(self.tokens)), f"colour: {what}")],
            picture.NOTE,
        )

    # ----- request handlers --------------------------------------------------------------

    @endpoint("lens")
    def _serve_lens(self, params: dict[str, Any], buffers: list[memoryview], ctx: Context) -> Reply:
        lens = self._lens
        result = lens.result
        rows, seq, k = result.top_ids.shape
        reply = Reply(
            {
                "revision": lens.revision,
                "rows": rows,
                "seq": seq,
                "k": k,
                "target_id": lens.target_id,
                "target_token": lens.target_token,
                "vocab": lens.vocab,
            }
        )
        out = reply.result
        out["top_ids"] = reply.add_array(result.top_ids.to(torch.int32), "int32")
        out["top_probs"] = reply.add_array(result.top_probs.to(torch.float16), "float16")
        out["vocab_ids"] = reply.add_array(torch.tensor(lens.vocab_ids, dtype=torch.int32), "int32")
        if result.target_probs is not None and result.target_ranks is not None:
            out["target_probs"] = reply.add_array(result.target_probs.to(torch.float16), "float16")
            out["target_ranks"] = reply.add_array(result.target_ranks.clamp(max=2**31 - 1).to(torch.int32), "int32")
        else:
            out["target_probs"] = out["target_ranks"] = None
        if lens.target_ids is not None:  # a target per cell (-1: none)
            out["target_ids"] = reply.add_array(lens.target_ids.to(torch.int32), "int32")
        return reply

    @endpoint("target", background=True)
    def _serve_target(self, params: dict[str, Any], buffers: list[memoryview], ctx: Context) -> Reply:
        value = params.get("target")
        if isinstance(value, str) and value == "":
            value = None
        if value is not None and (isinstance(value, bool) or not isinstance(value, (str, int))):
            raise TypeError(f"target must be text, a token id or empty, got {value!r}")
        lens = self._retargeted(value, ctx)
        ctx.raise_if_cancelled()  # a newer target arrived: never show this one
        self._apply(lens)
        return Reply({"revision": lens.revision, "target_id": lens.target_id, "target_token": lens.target_token})

    # ----- internals ---------------------------------------------------------------------

    def _retargeted(self, value: Target, ctx: Context | None = None) -> _Snapshot:
        old = self._lens
        if self._adapter is None or old.resid is None:
            raise ValueError(
                "this lens shows fixed predictions (from_log_probs, no model), so its target cannot change: each "
                "position's target is the token that came next"
            )
        target_id = None if value is None else single_token_id(self._adapter, value, "target")
        rows = int(old.resid.shape[0])

        def on_row(row: int) -> None:
            if ctx is not None:
                ctx.progress(row + 1, rows, f"layer {row + 1}/{rows}")

        if target_id is None:
            result = LensResult(old.result.top_ids, old.result.top_probs, None, None)
        else:
            fresh = logit_lens(model_unembed(self._adapter), old.resid, k=0, target=target_id, on_row=on_row)
            result = LensResult(old.result.top_ids, old.result.top_probs, fresh.target_probs, fresh.target_ranks)
        return self._snapshot(old.resid, result, value, target_id)

    def _snapshot(self, resid: torch.Tensor, result: LensResult, target: Any, target_id: int | None) -> _Snapshot:
        if not isinstance(target, str) and target is not None:
            target = target_id  # numpy ints, 0-d tensors: the trait holds a plain int
        ids = torch.unique(result.top_ids).tolist()
        if target_id is not None and target_id not in ids:
            ids = sorted(ids + [target_id])
        vocab = token_strings(self._adapter, ids)
        label = "" if target_id is None else vocab[ids.index(target_id)]
        return _Snapshot(self._new_revision(), resid, result, target, target_id, label, ids, vocab)

    def _apply(self, lens: _Snapshot) -> bool:
        """Show ``lens``, unless a newer snapshot (computed later, in parallel) is shown already."""
        with self._applying, self.hold_sync():
            if lens.revision <= self.revision:
                return False
            self._lens = lens
            self._set_lens_traits(lens)
            return True

    def _set_lens_traits(self, lens: _Snapshot) -> None:
        self.set_trait("target_id", lens.target_id)
        self.set_trait("target_token", lens.target_token)
        self._bump_revision(lens.revision)
        self.target = lens.target  # equals the snapshot's target, so no recompute

    def _target_tensor(self, name: str) -> torch.Tensor:
        value = getattr(self._lens.result, name)
        if value is None:
            raise ValueError('no target token is set: set one with lens.target = " Mary" (one token) or a token id')
        return value.cpu()

    def _check_cell(self, layer: int, position: int, error: type[Exception]) -> None:
        rows, seq = int(self._lens.result.top_ids.shape[0]), int(self._lens.result.top_ids.shape[1])
        if not 0 <= layer < rows:
            raise error(f"layer must be a row in 0..{rows - 1} (0 = embeddings, {rows - 1} = the output), got {layer}")
        if not 0 <= position < seq:
            raise error(f"position must be in 0..{seq - 1}, got {position}")
