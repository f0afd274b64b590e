"""ActivationView: prompts' tokens coloured by one neuron, or by any direction, of a hooked space.

The model runs once, with only the requested hooks, and the activations stay in the
kernel on the model's device: per prompt ``[layers, seq, d]`` in the dtype the model
computes in (no upcast). That costs ``total tokens x layers x d x itemsize`` bytes
(``view.nbytes``): gpt2-small ``mlp.post`` over 1024 tokens and 12 layers is 151 MB in
float32; pin one layer with a full hook name (``"blocks.5.mlp.hook_post"``) to keep a
twelfth of that. The view asks for what it draws: one ``[tokens]`` value array per
(layer, unit) in float16, and the top neurons of one position on hover.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
import traitlets

from ..analysis.activations import (
    activation_nbytes,
    check_direction,
    check_neuron,
    check_per_token_hook,
    per_token,
    symmetric_range,
    top_units,
    unit_values,
)
from ..capture.adapter import ModelAdapter, adapter_for
from ..capture.arrays import as_float_tensor, check_finite, is_token_list, labels, token_list
from ..capture.inputs import index_in
from ..transport import picture
from ..transport.protocol import Context, Reply
from ..transport.scale import ColorScale
from .base import ProtocolWidget, endpoint, int_param, static_asset

Prompt = str | torch.Tensor | Sequence[int]

MAX_BATCH = 16  # prompts of equal length run together, at most this many per forward pass
MAX_TOP_K = 100
_FLOAT16_MAX = 65504.0
_BLOCK = re.compile(r"^blocks\.(\d+)\.")


@dataclass
class _Arrays:
    """What the view shows, from a model run or from the user's arrays."""

    acts: list[torch.Tensor]  # per prompt [layers, seq, d]
    tokens: list[list[str]]
    hook: str
    hooks: list[str]
    layers: list[int]
    device: torch.device
    names: dict[str, Any] = field(default_factory=dict)  # layer_name, unit_name, *_labels traits
    scale: ColorScale | None = None


class ActivationView(ProtocolWidget):
    """Tokens of one or more prompts coloured by a neuron or a direction; hover a token for its top neurons.

    ``ActivationView(model, prompts, hook="mlp.post")`` with ``prompts`` a string, a list of
    strings, or token ids (``[seq]`` / ``[batch, seq]`` tensor, a list of ints, or a list of
    those). ``hook`` is a full hook name (one layer) or a per-layer shorthand (``"mlp.post"``,
    ``"resid_post"``, ``"attn_out"``, ``"z"``, ... : every layer, picked in the view).

    ``direction`` (a ``[d]`` vector, e.g. a probe or an SAE feature) colours tokens by
    ``acts @ direction``, not normalised: pass ``direction / direction.norm()`` for the
    projection length. ``neuron=None`` means the direction when one is given, else neuron 0;
    ``layer=None`` means the first hooked layer.

    The selection ``view.selected = {"layer", "neuron", "prompt_index", "position"}`` is synced with
    the view both ways (``neuron`` None = the direction; ``prompt_index``/``position`` None = no token);
    a partial dict changes only the keys it names.

    Memory: all activations are kept on the model's device, ``view.nbytes`` = total tokens x
    layers x d x itemsize (gpt2-small ``mlp.post``, 1024 tokens, 12 layers, float32: 151 MB).
    Prompts of equal length run together (up to 16 per forward pass); none is padded.
    """

    _esm = static_asset("activation.js")
    _css = static_asset("activation.css")

    hook = traitlets.Unicode("", read_only=True).tag(sync=True)
    hooks = traitlets.List(traitlets.Unicode(), read_only=True, help="full hook name per available layer").tag(
        sync=True
    )
    layers = traitlets.List(traitlets.Int(), read_only=True, help="model layer numbers that can be shown").tag(
        sync=True
    )
    n_layers = traitlets.Int(0, read_only=True, help="len(layers)").tag(sync=True)
    d = traitlets.Int(0, read_only=True, help="width of the hooked activations").tag(sync=True)
    tokens = traitlets.List(traitlets.List(traitlets.Unicode()), read_only=True).tag(sync=True)
    has_direction = traitlets.Bool(False, read_only=True).tag(sync=True)
    layer_name = traitlets.Unicode("layer", read_only=True, help="what the first axis is called").tag(sync=True)
    unit_name = traitlets.Unicode("neuron", read_only=True, help="what a unit is called").tag(sync=True)
    layer_labels = traitlets.List(traitlets.Unicode(), read_only=True, help="per layer ([] = 'L0')").tag(sync=True)
    unit_labels = traitlets.List(traitlets.Unicode(), read_only=True, help="per unit ([] = 'n12')").tag(sync=True)
    prompt_labels = traitlets.List(traitlets.Unicode(), read_only=True, help="per prompt ([] = its index)").tag(
        sync=True
    )
    color_scale = traitlets.Dict(
        read_only=True, help="{} = +-max|value| of the shown unit; else a fixed {lo, hi, negative, positive}"
    ).tag(sync=True)
    selected = traitlets.Dict().tag(sync=True)

    def __init__(
        self,
        model: Any = None,
        prompts: Prompt | Sequence[Prompt] | None = None,
        hook: str = "mlp.post",
        *,
        layer: int | None = None,
        neuron: int | None = None,
        direction: Any = None,
        _arrays: _Arrays | None = None,
    ) -> None:
        self._adapter: ModelAdapter | None = None
        if _arrays is None:
            if model is None or prompts is None:
                raise TypeError(
                    "ActivationView(model, prompts, hook) needs a model (TransformerLens, or an nnsight "
                    "LanguageModel) and prompts; to show activations you already have use "
                    "ActivationView.from_activations(tokens, activations)"
                )
            adapter = adapter_for(model)
            self._adapter = adapter
            names = [check_per_token_hook(name) for name in adapter.layer_hooks(hook)]
            token_batches = _prompt_tokens(adapter, prompts)
            _arrays = _Arrays(
                _capture(adapter, token_batches, names),
                [adapter.token_labels(t[0]) for t in token_batches],
                hook,
                names,
                [_layer_number(name, i) for i, name in enumerate(names)],
                adapter.device,
            )
        self._acts = _arrays.acts
        self._device = _arrays.device
        self._scale = _arrays.scale
        self._direction: torch.Tensor | None = None
        width = int(self._acts[0].shape[-1])
        if direction is not None:
            self._direction = check_direction(direction, width, self._device)
        layer_numbers = _arrays.layers
        super().__init__()
        self.set_trait("hook", _arrays.hook)
        self.set_trait("hooks", _arrays.hooks)
        self.set_trait("layers", layer_numbers)
        self.set_trait("n_layers", len(layer_numbers))
        self.set_trait("d", width)
        self.set_trait("tokens", _arrays.tokens)
        self.set_trait("has_direction", self._direction is not None)
        for name, value in _arrays.names.items():
            self.set_trait(name, value)
        self.set_trait("color_scale", {} if self._scale is None else self._scale.trait())
        if neuron is None and self._direction is None:
            neuron = 0
        try:
            self.selected = {
                "layer": layer_numbers[0] if layer is None else layer,
                "neuron": neuron,
                "prompt_index": None,
                "position": None,
            }
        except traitlets.TraitError:
            self.close()  # no half-made widget left open in the kernel
            raise

    # ----- other ways in -------------------------------------------------------------------

    @classmethod
    def from_activations(
        cls,
        tokens: Sequence[str] | Sequence[Sequence[str]],
        activations: Any,
        *,
        layer_name: str = "layer",
        unit_name: str = "neuron",
        layer_labels: Sequence[str] | None = None,
        unit_labels: Sequence[str] | None = None,
        prompt_labels: Sequence[str] | None = None,
        min_value: float | None = None,
        max_value: float | None = None,
        negative_color: str | None = None,
        positive_color: str | None = None,
        layer: int | None = None,
        neuron: int | None = None,
        direction: Any = None,
        _missing_ok: bool = False,
    ) -> ActivationView:
        """Show activations you already have, without a model.

        One prompt: ``tokens`` a list of strings and ``activations`` ``[seq, layers, units]`` or ``[seq, units]``
        (torch, numpy or nested lists; CircuitsVis's ``text_neuron_activations`` layout). Several: a list of token
        lists and a list of such arrays, one per prompt (lengths may differ; layers and units may not). Values must
        be finite. ``layer_name``/``unit_name`` say what the two axes are (CircuitsVis's dimension names), and
        ``*_labels`` name each layer, unit and prompt. Without ``min_value``/``max_value`` each unit is coloured
        over +-its largest magnitude (as the model path); with either, the scale is fixed and zero-anchored, and
        ``negative_color``/``positive_color`` (CSS colours) replace the blue/red map (see :mod:`..transport.scale`).
        """
        if is_token_list(tokens) or (
            isinstance(tokens, Sequence) and any(isinstance(t, str) for t in tokens)  # one prompt, a bad token
        ):
            token_rows = [token_list(tokens)]
            arrays = [activations]
        else:
            if isinstance(tokens, str) or not isinstance(tokens, Sequence) or not tokens:
                raise TypeError(
                    "tokens must be a list of strings (one prompt) or a non-empty list of such lists (several), "
                    f"got {type(tokens).__name__ if not isinstance(tokens, Sequence) else tokens!r:.80}"
                )
            token_rows = [token_list(t, f"tokens[{i}]") for i, t in enumerate(tokens)]
            if isinstance(activations, (torch.Tensor, np.ndarray)) and activations.ndim >= 3:
                arrays = list(activations) if activations.ndim == 4 else [activations]
            elif isinstance(activations, (list, tuple)):
                arrays = list(activations)
            else:
                raise TypeError(
                    f"with {len(token_rows)} token lists, activations must be a list of {len(token_rows)} arrays "
                    f"[seq, layers, units], got {type(activations).__name__}"
                )
            if len(arrays) != len(token_rows):
                raise ValueError(
                    f"got {len(token_rows)} token lists but {len(arrays)} activation arrays: expected one per prompt"
                )
        acts: list[torch.Tensor] = []
        for i, (row, array) in enumerate(zip(token_rows, arrays)):
            name = "activations" if len(arrays) == 1 else f"activations[{i}]"
            t = as_float_tensor(array, name)
            if t.ndim == 2:
                t = t[:, None, :]
            if t.ndim != 3:
                raise ValueError(f"{name} must be [seq, layers, units] or [seq, units], got shape {list(t.shape)}")
            if t.shape[0] != len(row):
                raise ValueError(
                    f"{name} covers {t.shape[0]} tokens (its first axis) but {len(row)} tokens were given"
                    + (f" for prompt {i}" if len(arrays) > 1 else "")
                )
            if 0 in t.shape:
                raise ValueError(f"{name} is empty: shape {list(t.shape)}")
            if acts and (t.shape[1], t.shape[2]) != (acts[0].shape[0], acts[0].shape[2]):
                raise ValueError(
                    f"{name} has {t.shape[1]} layers x {t.shape[2]} units but the first prompt has "
                    f"{acts[0].shape[0]} x {acts[0].shape[2]}: every prompt needs the same"
                )
            if not _missing_ok:
                check_finite(t, name, ("token", "layer", "unit"))
            acts.append(t.to(torch.float32).permute(1, 0, 2).contiguous())
        n_layers, width = int(acts[0].shape[0]), int(acts[0].shape[2])
        scale = None
        if min_value is not None or max_value is not None or negative_color is not None or positive_color is not None:
            extent = symmetric_range([a.reshape(-1) for a in acts]) or 1.0
            scale = ColorScale.from_options(
                min_value, max_value, negative_color, positive_color, default_lo=-extent, default_hi=extent
            )
        for text, value in (("layer_name", layer_name), ("unit_name", unit_name)):
            if not isinstance(value, str):
                raise TypeError(f"{text} must be a string, got {type(value).__name__}")
        names = {
            "layer_name": layer_name,
            "unit_name": unit_name,
            "layer_labels": labels(layer_labels, n_layers, "layer_labels", "one per layer"),
            "unit_labels": labels(unit_labels, width, "unit_labels", f"one per {unit_name}"),
            "prompt_labels": labels(prompt_labels, len(acts), "prompt_labels", "one per prompt"),
        }
        layer_numbers = list(range(n_layers))
        arrays_ = _Arrays(acts, token_rows, "", [""] * n_layers, layer_numbers, acts[0].device, names, scale)
        return cls(_arrays=arrays_, layer=layer, neuron=neuron, direction=direction)

    # ----- Python API ------------------------------------------------------------------

    @property
    def activations(self) -> list[torch.Tensor]:
        """Per prompt ``[layers, seq, d]`` on the model's device (layers in the order of ``view.layers``)."""
        return list(self._acts)

    @property
    def nbytes(self) -> int:
        """Memory the kept activations take: total tokens x layers x d x itemsize."""
        a = self._acts[0]
        return activation_nbytes(sum(int(x.shape[1]) for x in self._acts), int(a.shape[0]), int(a.shape[2]), a.dtype)

    @property
    def direction(self) -> torch.Tensor | None:
        """The ``[d]`` direction tokens can be coloured by (float32, on the model's device), or None."""
        return self._direction

    @direction.setter
    def direction(self, value: Any) -> None:
        vector = None if value is None else check_direction(value, self.d, self._device)
        with self.hold_sync():
            self._direction = vector
            self.set_trait("has_direction", vector is not None)
            self._bump_revision()
            if vector is None and self.selected.get("neuron") is None:
                self.selected = {**self.selected, "neuron": 0}

    def values(self, layer: int | None = None, neuron: int | Literal["direction"] | None = None) -> list[torch.Tensor]:
        """Per prompt ``[seq]`` float32 values (on the model's device) of a unit or the direction.

        ``layer``/``neuron`` default to the selection; ``neuron="direction"`` asks for the direction.
        """
        index = self._layer_index(self.selected["layer"] if layer is None else layer)
        unit = self.selected["neuron"] if neuron is None else neuron
        if unit is None or unit == "direction":
            if self._direction is None:
                raise ValueError("this view has no direction: pass direction=... or set view.direction")
            return [unit_values(acts[index], direction=self._direction) for acts in self._acts]
        unit = check_neuron(unit, self.d)
        return [unit_values(acts[index], neuron=unit) for acts in self._acts]

    def top_neurons(self, prompt: int, position: int, k: int = 10, layer: int | None = None) -> list[tuple[int, float]]:
        """The ``k`` most active units at one token, as ``(neuron, value)`` pairs, largest first."""
        index = self._layer_index(self.selected["layer"] if layer is None else layer)
        acts = self._prompt_acts(prompt)
        position = index_in("position", position, int(acts.shape[1]), IndexError)
        values, indices = top_units(acts[index, position], k)
        return list(zip(indices.tolist(), values.tolist()))

    # ----- validation ------------------------------------------------------------------

    @traitlets.validate("selected")
    def _check_selected(self, proposal: dict[str, Any]) -> dict[str, Any]:
        value = dict(proposal["value"])
        unknown = set(value) - {"layer", "neuron", "prompt_index", "position"}
        if unknown:
            raise traitlets.TraitError(
                f"selected takes keys layer, neuron, prompt_index, position; got unknown {sorted(unknown)}"
            )
        merged = {**(self.selected or {}), **value}  # a partial dict changes only what it names
        layer = merged.get("layer")
        try:
            self._layer_index(layer)
        except (IndexError, TypeError) as exc:
            raise traitlets.TraitError(f"selected {exc}") from None
        neuron = merged.get("neuron")
        if neuron is None:
            if self._direction is None:
                raise traitlets.TraitError(
                    f"selected neuron must be in 0..{self.d - 1} (None means the direction, and this view has none)"
                )
        else:
            extra = " or None for the direction" if self._direction is not None else ""
            neuron = index_in("selected neuron", neuron, self.d, traitlets.TraitError, extra)
        prompt, position = merged.get("prompt_index"), merged.get("position")
        if prompt is not None:
            prompt = index_in("selected prompt_index", prompt, len(self._acts), traitlets.TraitError, " or None")
        if position is not None:
            if prompt is None:
                raise traitlets.TraitError("selected position needs a prompt_index: give both, or both None")
            position = index_in(
                "selected position",
                position,
                int(self._acts[prompt].shape[1]),
                traitlets.TraitError,
                f" (prompt {prompt}) or None",
            )
        return {"layer": int(layer), "neuron": neuron, "prompt_index": prompt, "position": position}

    def _picture(self) -> Any:
        """Each prompt's tokens on the selected unit's colour (blue < 0 < red, one scale for all prompts)."""
        values = self.values()
        extent = symmetric_range(values) or 1.0
        lo, hi, lut = -extent, extent, None
        if self._scale is not None:
            lo, hi, lut = self._scale.lo, self._scale.hi, self._scale.lut()
        sel = self.selected
        unit = "the direction" if sel.get("neuron") is None else self._unit_text(sel["neuron"])
        prompt_labels = list(self.prompt_labels) or [f"prompt {i}" for i in range(len(self.tokens))]
        strips = [
            picture.Panel(picture.token_strip(tokens, v, lo, hi, diverging=True, lut=lut), prompt_labels[i])
            for i, (tokens, v) in enumerate(zip(self.tokens[:8], values[:8]))
        ]
        more = f"; {len(self.tokens) - 8} more prompts not drawn" if len(self.tokens) > 8 else ""
        index = self._layer_index(sel["layer"])
        where = self.hooks[index] or (
            self.layer_labels[index] if self.layer_labels else f"{self.layer_name} {sel['layer']}"
        )
        colour = f"up to +-{extent:.3g}" if self._scale is None else f"colour {lo:.3g}..{hi:.3g}"
        return picture.compose(f"ActivationView: {unit} of {where}, {colour}{more}", strips, picture.NOTE)

    def _unit_text(self, neuron: int) -> str:
        return self.unit_labels[neuron] if self.unit_labels else f"{self.unit_name} {neuron}"

    # ----- request handlers --------------------------------------------------------------

    @endpoint("values")
    def _serve_values(self, params: dict[str, Any], buffers: list[memoryview], ctx: Context) -> Reply:
        layer = int_param(params, "layer")
        neuron = params.get("neuron")
        if neuron is not None:
            neuron = int_param(params, "neuron")
        values = self.values(layer, "direction" if neuron is None else neuron)
        extent = symmetric_range(values)
        flat = torch.cat(values)
        offsets = torch.tensor([0] + [int(v.shape[0]) for v in values]).cumsum(0)
        reply = Reply({"layer": layer, "neuron": neuron, "range": extent})
        # float16 unless a value would overflow it (an unnormalised direction can give large dot products)
        wire = "float16" if extent <= _FLOAT16_MAX else "float32"
        reply.result["values"] = reply.add_array(flat.to(getattr(torch, wire)), wire)
        reply.result["offsets"] = reply.add_array(offsets, "int32")
        return reply

    @endpoint("top")
    def _serve_top(self, params: dict[str, Any], buffers: list[memoryview], ctx: Context) -> Reply:
        prompt, position, layer = (
            int_param(params, "prompt_index"),
            int_param(params, "position"),
            int_param(params, "layer"),
        )
        k = int_param(params, "k")
        if not 1 <= k <= MAX_TOP_K:
            raise ValueError(f"k must be in 1..{MAX_TOP_K}, got {k}")
        index = self._layer_index(layer)
        acts = self._prompt_acts(prompt)
        position = index_in("position", position, int(acts.shape[1]), IndexError)
        values, indices = top_units(acts[index, position], k)
        reply = Reply({"prompt_index": prompt, "position": position, "layer": layer})
        reply.result["indices"] = reply.add_array(indices, "int32")
        wire = "float16" if float(values.abs().max()) <= _FLOAT16_MAX else "float32"
        reply.result["values"] = reply.add_array(values.to(getattr(torch, wire)), wire)
        return reply

    # ----- internals ---------------------------------------------------------------------

    def _layer_index(self, layer: Any) -> int:
        """Position in ``layers`` of a model layer number, or an error naming the available ones."""
        if isinstance(layer, bool):
            raise TypeError(f"layer must be an integer, got {layer!r}")
        try:
            number = operator.index(layer)
        except TypeError:
            raise TypeError(f"layer must be an integer, got {layer!r}") from None
        layers = list(self.layers)
        if number not in layers:
            raise IndexError(f"layer must be {_describe(layers)} (the layers of hook {self.hook!r}), got {number}")
        return layers.index(number)

    def _prompt_acts(self, prompt: Any) -> torch.Tensor:
        return self._acts[index_in("prompt", prompt, len(self._acts), IndexError)]


def _describe(layers: list[int]) -> str:
    if len(layers) == 1:
        return f"{layers[0]}"
    if layers == list(range(layers[0], layers[-1] + 1)):
        return f"in {layers[0]}..{layers[-1]}"
    return f"one of {layers}"


def _layer_number(name: str, index: int) -> int:
    match = _BLOCK.match(name)
    return int(match.group(1)) if match else index


def _prompt_tokens(adapter: ModelAdapter, prompts: Any) -> list[torch.Tensor]:
    """Each prompt as ``[1, seq]`` tokens on the model's device (checked against n_ctx by the adapter)."""
    if isinstance(prompts, str):
        items: list[Any] = [prompts]
    elif isinstance(prompts, np.ndarray) and prompts.dtype.kind in "USO":  # an array of texts
        items = [prompts.item()] if prompts.ndim == 0 else prompts.tolist()
    elif isinstance(prompts, torch.Tensor) or hasattr(prompts, "__array__"):
        ids = torch.as_tensor(prompts)
        if ids.ndim == 2 and ids.shape[0] == 0:
            raise ValueError("prompts is an empty batch: expected at least one prompt")
        items = list(ids) if ids.ndim == 2 else [ids]
    elif isinstance(prompts, Sequence):
        if len(prompts) == 0:
            raise ValueError("prompts is empty: expected a string, a list of strings, or token ids")
        is_id = [isinstance(p, (int, np.integer)) and not isinstance(p, (bool, np.bool_)) for p in prompts]
        if any(is_id) and not all(is_id):
            kinds = ", ".join(sorted({type(p).__name__ for p, i in zip(prompts, is_id) if not i}))
            raise TypeError(
                f"prompts mixes token ids (ints) with {kinds}: pass one list of ints (one prompt), or a list of "
                "prompts (strings, or token-id lists / tensors)"
            )
        items = [list(prompts)] if all(is_id) else list(prompts)
    else:
        raise TypeError(
            f"prompts must be a string, a list of strings, or token ids ([seq] / [batch, seq]), got {type(prompts).__name__}"
        )
    tokens = []
    for i, item in enumerate(items):
        try:
            tokens.append(adapter.to_tokens(item))
        except (ValueError, TypeError) as exc:
            if len(items) == 1:
                raise
            raise type(exc)(f"prompt {i}: {exc}") from None
    return tokens


def _capture(adapter: ModelAdapter, tokens: list[torch.Tensor], names: list[str]) -> list[torch.Tensor]:
    """Per prompt ``[layers, seq, d]``: prompts of equal length run as one batch, each hook copied once into place."""
    out: list[torch.Tensor | None] = [None] * len(tokens)
    by_length: dict[int, list[int]] = {}
    for i, t in enumerate(tokens):
        by_length.setdefault(int(t.shape[1]), []).append(i)
    for seq, members in by_length.items():
        for start in range(0, len(members), MAX_BATCH):
            group = members[start : start + MAX_BATCH]
            batch = torch.cat([tokens[i] for i in group])
            stacked: list[torch.Tensor] = []  # [batch, layers, seq, d], allocated at the first hook

            def keep(index: int, activation: torch.Tensor, seq: int = seq, stacked: list = stacked) -> None:
                acts = per_token(activation, seq, names[index])
                if not stacked:
                    stacked.append(acts.new_empty((acts.shape[0], len(names), seq, acts.shape[2])))
                if acts.shape[2] != stacked[0].shape[3]:
                    raise ValueError(f"hooks {names} have different widths: {names[index]} is {acts.shape[2]} wide")
                stacked[0][:, index].copy_(acts)

            adapter.each_activation(batch, names, keep)
            for row, i in enumerate(group):
                out[i] = stacked[0][row]
    return [t for t in out if t is not None]
