"""LogitAttribution: which heads and MLPs push the model towards one answer over another.

Direct logit attribution of ``logit[answer] - logit[wrong]`` at one position (see
:mod:`mi_widgets.analysis.attribution` for the maths, exact without folding the model). The
view shows a layer x head heatmap, per-layer bars for attention and MLP, and the remaining
terms (embeddings, biases) as text; the numbers are tiny, but still travel as float32 arrays.
For a model with a soft cap on its logits (Gemma 2) the parts add up to the difference before
the cap (``total``); the model's own after it is ``output_total`` (see the analysis module).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import traitlets

from ..analysis.activations import symmetric_range
from ..analysis.attribution import Attribution, logit_attribution
from ..capture.adapter import adapter_for, require_transformer_lens
from ..capture.inputs import as_index
from ..capture.readout import attribution_inputs, single_token_id
from ..transport import picture
from ..transport.export import ExportRequest
from ..transport.protocol import Context, Reply
from .base import ProtocolWidget, endpoint, static_asset

COMPONENTS = ("head", "attn", "mlp")


class LogitAttribution(ProtocolWidget):
    """Direct logit attribution of every head, attention bias and MLP to ``logit[answer] - logit[wrong]``.

    ``LogitAttribution(model, prompt, answer=" Mary", wrong=" John", position=-1)``: ``answer`` and
    ``wrong`` are text of exactly one token each, or token ids. ``attr.heads`` is ``[layers, heads]``,
    ``attr.mlps`` and ``attr.attn`` (heads + ``b_O``) are ``[layers]``, ``attr.parts`` holds every
    term by name and sums to ``attr.total``, the model's own logit difference. The model is
    read, never changed: no compatibility mode needed (TransformerLens 4.x and 2.x alike).

    A soft cap on the logits (Gemma 2's ``final_logit_softcapping``, ``c * tanh(x / c)``) cannot be
    split into parts: then ``attr.total`` (what the parts sum to) is the difference *before* the cap,
    ``attr.output_total`` the model's own difference after it, and ``attr.softcap`` is ``c``
    (None without a cap, and then both totals are the same). Architectures whose parts cannot be
    made exact raise an error that names the part.

    A click in the view lands in ``attr.selected``: ``{"layer": l, "head": h, "component": "head"}``
    for a head, ``{"layer": l, "head": None, "component": "attn" | "mlp"}`` for a layer's bar, all
    None for nothing; ``attr.selected = {"layer": 1, "head": 2}`` or
    ``{"layer": 0, "component": "mlp"}`` selects from Python.
    """

    _esm = static_asset("logit_attribution.js")
    _css = static_asset("logit_attribution.css")

    n_layers = traitlets.Int(0, read_only=True).tag(sync=True)
    n_heads = traitlets.Int(0, read_only=True).tag(sync=True)
    has_mlp = traitlets.Bool(True, read_only=True).tag(sync=True)
    tokens = traitlets.List(traitlets.Unicode(), read_only=True).tag(sync=True)
    prompt = traitlets.Unicode("", read_only=True).tag(sync=True)
    position = traitlets.Int(0, read_only=True).tag(sync=True)
    answer_token = traitlets.Unicode("", read_only=True).tag(sync=True)
    wrong_token = traitlets.Unicode("", read_only=True).tag(sync=True)
    answer_id = traitlets.Int(0, read_only=True).tag(sync=True)
    wrong_id = traitlets.Int(0, read_only=True).tag(sync=True)
    total = traitlets.Float(0.0, read_only=True).tag(sync=True)
    output_total = traitlets.Float(0.0, read_only=True).tag(sync=True)
    softcap = traitlets.Float(None, allow_none=True, read_only=True).tag(sync=True)
    selected = traitlets.Dict().tag(sync=True)

    def __init__(
        self,
        model: Any,
        prompt: str | torch.Tensor | Sequence[int],
        answer: str | int,
        wrong: str | int,
        *,
        position: int = -1,
    ) -> None:
        adapter = adapter_for(model)
        require_transformer_lens(adapter, "LogitAttribution (direct logit attribution through W_O and W_U)")
        tokens = adapter.to_tokens(prompt)
        answer_id = single_token_id(adapter, answer, "answer")
        wrong_id = single_token_id(adapter, wrong, "wrong")
        inputs = attribution_inputs(adapter, tokens, position)
        self._adapter = adapter
        self._result: Attribution = logit_attribution(inputs, answer_id, wrong_id)
        super().__init__()
        answer_token, wrong_token = adapter.token_labels(torch.tensor([answer_id, wrong_id]))
        for name, value in [
            ("n_layers", adapter.n_layers),
            ("n_heads", adapter.n_heads),
            ("has_mlp", adapter.has_mlp),
            ("tokens", adapter.token_labels(tokens[0])),
            ("prompt", prompt if isinstance(prompt, str) else ""),
            ("position", inputs.position),
            ("answer_token", answer_token),
            ("wrong_token", wrong_token),
            ("answer_id", answer_id),
            ("wrong_id", wrong_id),
            ("total", self._result.total),
            ("output_total", self._result.output_total),
            ("softcap", self._result.softcap),
        ]:
            self.set_trait(name, value)
        self.selected = {}

    # ----- Python API ------------------------------------------------------------------

    @property
    def heads(self) -> torch.Tensor:
        """Each head's direct contribution ``[layers, heads]`` (float32, CPU)."""
        return self._result.heads.cpu()

    @property
    def mlps(self) -> torch.Tensor:
        """Each layer's MLP output's contribution ``[layers]`` (zeros for attention-only models)."""
        return self._result.mlps.cpu()

    @property
    def attn(self) -> torch.Tensor:
        """Each layer's attention contribution ``[layers]``: its heads plus its bias ``b_O``."""
        return self._result.attn.cpu()

    @property
    def parts(self) -> dict[str, float]:
        """Every term by name (``embed``, ``pos_embed``, ``L0H3``, ``L0 b_O``, ``L0 mlp``, ``ln_final bias``, ``b_U``)."""
        return dict(self._result.parts)

    @traitlets.validate("selected")
    def _check_selected(self, proposal: dict[str, Any]) -> dict[str, Any]:
        value = dict(proposal["value"])
        unknown = set(value) - {"layer", "head", "component"}
        if unknown:
            raise traitlets.TraitError(f"selected takes keys layer, head and component; got unknown {sorted(unknown)}")
        layer, head, component = value.get("layer"), value.get("head"), value.get("component")
        if layer is None and head is None and component is None:
            return {"layer": None, "head": None, "component": None}
        if component is None:
            component = "head" if head is not None else None
        if component not in COMPONENTS or layer is None:
            raise traitlets.TraitError(
                "selected is {'layer': l, 'head': h} for a head or {'layer': l, 'component': 'attn' | 'mlp'} "
                f"for a layer's bar, got {value}"
            )
        if component == "mlp" and not self.has_mlp:
            raise traitlets.TraitError("this model is attention-only: it has no MLP to select")
        if component == "head":
            if head is None:
                raise traitlets.TraitError(f"selected head needs a head index, got {value}")
            head = as_index("selected head", head, traitlets.TraitError)
        elif head is not None:
            raise traitlets.TraitError(f"selected {component!r} is a whole layer: head must be None, got {head}")
        layer = as_index("selected layer", layer, traitlets.TraitError)
        try:
            self._adapter.check_layer_head(layer, 0 if head is None else head)
        except IndexError as exc:
            raise traitlets.TraitError(f"selected: {exc}") from None
        return {"layer": layer, "head": head, "component": component}

    def _picture(self) -> Any:
        """Every head's direct logit attribution (layers down, heads across) and every MLP's, on one scale."""
        r = self._result
        parts = [r.heads.float().cpu()] + ([r.mlps.float().cpu().reshape(-1, 1)] if self.has_mlp else [])
        scale = symmetric_range(parts) or 1e-9
        rows = [f"L{layer}" for layer in range(self.n_layers)]
        panels = [
            picture.Panel(
                picture.labelled_heatmap(
                    picture.heatmap(parts[0], -scale, scale, diverging=True, cell=22, max_side=480),
                    rows,
                    [f"H{h}" for h in range(self.n_heads)],
                ),
                "heads",
            )
        ]
        if self.has_mlp:
            mlp = picture.heatmap(parts[1], -scale, scale, diverging=True, cell=22, max_side=480)
            panels.append(picture.Panel(picture.labelled_heatmap(mlp, rows, ["MLP"]), "MLPs"))
        return picture.compose(
            f"LogitAttribution: logit[{self.answer_token!r}] - logit[{self.wrong_token!r}] = {self.total:.3g}; "
            f"blue < 0 < red, up to {scale:.3g}",
            panels,
            picture.NOTE,
        )

    # ----- request handlers --------------------------------------------------------------

    def _export_requests(self) -> list[ExportRequest]:
        return [ExportRequest("attribution", {}, "attribution", required=True)]

    @endpoint("attribution")
    def _serve_attribution(self, params: dict[str, Any], buffers: list[memoryview], ctx: Context) -> Reply:
        r = self._result
        bias_terms = [("ln_final bias", r.norm_bias), ("b_U", r.unembed_bias)]
        terms = [("embed", r.embed)] + ([("pos_embed", r.pos_embed)] if r.pos_embed is not None else [])
        terms += [("attention biases (b_O)", float(r.attn_bias.sum()))] + bias_terms
        reply = Reply(
            {
                "n_layers": self.n_layers,
                "n_heads": self.n_heads,
                "has_mlp": self.has_mlp,
                "total": r.total,
                "output_total": r.output_total,
                "softcap": r.softcap,
                "terms": [name for name, _ in terms],
            }
        )
        out = reply.result
        out["heads"] = reply.add_array(r.heads.float(), "float32")
        out["attn"] = reply.add_array(r.attn.float(), "float32")
        out["attn_bias"] = reply.add_array(r.attn_bias.float(), "float32")
        out["mlps"] = reply.add_array(r.mlps.float(), "float32")
        out["term_values"] = reply.add_array(torch.tensor([v for _, v in terms], dtype=torch.float32), "float32")
        return reply
