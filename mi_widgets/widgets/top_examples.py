"""TopExamples: the top-activating contexts of many neurons over a corpus, streamed.

The corpus is cut into windows the model can read and scanned batch by batch on a worker
thread (:class:`~.streaming.StreamingWidget`). Only the one hook is captured; inside it the
chosen neurons are selected and merged into a running top-k on the device
(:class:`~mi_widgets.analysis.top_examples.RunningTopK`), so memory is O(k x neurons) however
long the corpus. The view's overview fills in as batches finish; Stop keeps what was found.

The activations around each example are not stored: ``examples[n]`` reruns the model on the
(at most k) windows holding neuron ``n``'s examples, once per neuron and scan state.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import torch
import traitlets

from ..analysis.top_examples import RunningTopK, pad_rows
from ..capture.adapter import adapter_for
from ..capture.arrays import as_float_tensor, check_finite, token_list
from ..capture.arrays import labels as arrays_labels
from ..capture.corpus import Example, TopContexts, plan_corpus, probe_units, resolve_layer_hook
from ..capture.inputs import as_index
from ..transport import picture
from ..transport.protocol import Context, Reply
from .base import add_examples, endpoint, int_param, static_asset
from .streaming import StreamingWidget

DEFAULT_NEURONS = 64


class NeuronExamples(Mapping[int, list[Example]]):
    """``examples[neuron]``: that neuron's top contexts so far, best first (keyed by neuron id)."""

    def __init__(self, owner: TopExamples) -> None:
        self._owner = owner

    def __getitem__(self, neuron: int) -> list[Example]:
        return self._owner._examples(neuron)

    def __iter__(self) -> Iterator[int]:
        return iter(self._owner.neurons)

    def __len__(self) -> int:
        return len(self._owner.neurons)

    def __repr__(self) -> str:
        return f"<top examples of {len(self)} neurons; index by neuron id, e.g. examples[{self._owner.neurons[0]}]>"


class TopExamples(StreamingWidget):
    """The ``k`` top-activating contexts of each of ``neurons`` at ``hook``, over ``corpus``.

    ``TopExamples(model, corpus, hook="blocks.1.mlp.hook_post", neurons=range(64))``:

    * ``corpus``: a list of strings (each tokenized without BOS, then cut into windows of at most
      ``n_ctx`` tokens that each start with BOS, so long texts give several windows), or token ids
      (a ``[batch, seq]`` / ``[seq]`` tensor or a list of them; each row is one window, used as is).
    * ``hook``: a full hook name, or a per-layer shorthand (``"mlp.post"``, ``"resid_post"``, ...)
      with ``layer=``. Any hook with one activation vector per token works; its trailing dimensions
      are flattened into units (e.g. ``attn.hook_z`` gives ``head * d_head + i``).
    * ``neurons``: unit ids (default: the first 64); ``k`` examples per neuron; ``batch_size``
      windows per forward pass; ``context``/``after``: tokens shown before/after each maximum.

    ``ex.examples[17]`` lists neuron 17's :class:`Example` s; ``ex.maxima`` is each neuron's best
    value so far; ``start()``/``stop()``/``wait()`` drive the scan; clicking a neuron in the view
    sets ``ex.selected = {"neuron": 17}`` (and setting it shows that neuron).
    """

    _esm = static_asset("top_examples.js")
    _css = static_asset("top_examples.css")
    _thread_name = "mi_widgets-top-examples"

    hook = traitlets.Unicode(read_only=True).tag(sync=True)
    neurons = traitlets.List(traitlets.Int(), read_only=True).tag(sync=True)
    k = traitlets.Int(0, read_only=True).tag(sync=True)
    n_windows = traitlets.Int(0, read_only=True).tag(sync=True)
    n_tokens = traitlets.Int(0, read_only=True).tag(sync=True)
    unit_labels = traitlets.List(traitlets.Unicode(), read_only=True, help="per neuron ([] = 'neuron 12')").tag(
        sync=True
    )
    window_name = traitlets.Unicode("window", read_only=True, help="what an example's window is called").tag(sync=True)
    selected = traitlets.Dict().tag(sync=True)

    @classmethod
    def from_samples(
        cls,
        tokens: Sequence[Sequence[Sequence[str]]],
        activations: Sequence[Sequence[Any]],
        *,
        unit_labels: Sequence[str] | None = None,
        source: str = "given samples",
    ) -> TopExamples:
        """Top examples you already have, without a model or a scan: per unit (neuron), its samples' tokens
        (``tokens[unit][sample]``, a list of strings) and their activations (``activations[unit][sample]``, one
        number per token; tensors, arrays or lists). Each unit's samples are shown best first (by their largest
        activation), each with all its tokens; ``unit_labels`` names the units. Activations must be finite.
        """
        if isinstance(tokens, str) or not isinstance(tokens, Sequence) or not tokens:
            raise TypeError("tokens must be a non-empty list (one entry per unit) of lists of samples' token lists")
        if not isinstance(activations, Sequence) or len(activations) != len(tokens):
            n = len(activations) if isinstance(activations, Sequence) else type(activations).__name__
            raise ValueError(f"expected activations for each of the {len(tokens)} units, got {n}")
        per_unit: list[list[Example]] = []
        n_tokens = 0
        for u, (unit_tokens, unit_acts) in enumerate(zip(tokens, activations)):
            if isinstance(unit_tokens, str) or not isinstance(unit_tokens, Sequence):
                raise TypeError(
                    f"tokens[{u}] must be a list of samples (token lists), got {type(unit_tokens).__name__}"
                )
            if len(unit_acts) != len(unit_tokens):
                raise ValueError(
                    f"unit {u} has {len(unit_tokens)} token samples but {len(unit_acts)} activation samples"
                )
            examples = []
            for i, (sample_tokens, sample_acts) in enumerate(zip(unit_tokens, unit_acts)):
                where = f"tokens[{u}][{i}]"
                labels = token_list(sample_tokens, where)
                acts = as_float_tensor(sample_acts, f"activations[{u}][{i}]").float().reshape(-1).cpu()
                if acts.numel() != len(labels):
                    raise ValueError(
                        f"activations[{u}][{i}] has {acts.numel()} values but {where} has {len(labels)} tokens"
                    )
                if not labels:
                    raise ValueError(f"{where} is empty: expected at least one token")
                check_finite(acts, f"activations[{u}][{i}]", ("token",))
                top = int(acts.argmax())
                examples.append(Example(labels, acts, top, float(acts[top]), i, top, i))
                n_tokens += len(labels)
            examples.sort(key=lambda e: -e.value)
            per_unit.append(examples)
        names = arrays_labels(unit_labels, len(per_unit), "unit_labels", "one per unit")
        return cls(_fixed=(per_unit, names, source))

    def __init__(
        self,
        model: Any = None,
        corpus: Sequence[str] | str | torch.Tensor | Sequence[torch.Tensor] | None = None,
        hook: str = "blocks.1.mlp.hook_post",
        neurons: Iterable[int] | torch.Tensor | None = None,
        *,
        layer: int | None = None,
        k: int = 10,
        batch_size: int = 8,
        context: int = 20,
        after: int = 4,
        autostart: bool = True,
        _fixed: tuple[list[list[Example]], list[str], str] | None = None,
    ) -> None:
        self._fixed: list[list[Example]] | None = None
        if _fixed is not None:
            self._init_fixed(*_fixed)
            return
        if model is None or corpus is None:
            raise TypeError(
                "TopExamples(model, corpus) needs a model (TransformerLens, or an nnsight LanguageModel) and a "
                "corpus; to show examples you already have use TopExamples.from_samples(tokens, activations)"
            )
        adapter = adapter_for(model)
        for name, value, low in (
            ("k", k, 1),
            ("batch_size", batch_size, 1),
            ("context", context, 0),
            ("after", after, 0),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
        self._adapter = adapter
        self._hook = resolve_layer_hook(adapter, hook, layer)
        self._rows, self._sources = plan_corpus(adapter, corpus)
        self._batch_size = batch_size
        self._context, self._after = context, after
        n_units = probe_units(adapter, self._hook, self._rows[0])
        ids = _check_neurons(neurons, n_units, self._hook)
        self._n_units = n_units
        self._col = {n: i for i, n in enumerate(ids)}
        lo = ids[0]
        contiguous = ids == list(range(lo, lo + len(ids)))
        self._units: slice | torch.Tensor = (
            slice(lo, lo + len(ids)) if contiguous else torch.tensor(ids, device=adapter.device)
        )
        self._k = k
        self._topk = RunningTopK(len(ids), k, adapter.device)
        self._contexts = TopContexts(adapter, self._hook, self._rows, self._sources, context, after)
        super().__init__()
        self.set_trait("hook", self._hook)
        self.set_trait("neurons", ids)
        self.set_trait("k", k)
        self.set_trait("n_windows", len(self._rows))
        self.set_trait("n_tokens", sum(int(r.shape[0]) for r in self._rows))
        self.selected = {"neuron": None}
        if autostart:
            self.start()

    def _init_fixed(self, per_unit: list[list[Example]], names: list[str], source: str) -> None:
        self._fixed = per_unit
        ids = list(range(len(per_unit)))
        self._col = {n: n for n in ids}
        self._k = max((len(e) for e in per_unit), default=0)
        super().__init__()
        self.set_trait("hook", source)
        self.set_trait("neurons", ids)
        self.set_trait("k", self._k)
        self.set_trait("n_windows", max((e.window + 1 for ex in per_unit for e in ex), default=0))
        self.set_trait("n_tokens", sum(len(e.tokens) for ex in per_unit for e in ex))
        self.set_trait("unit_labels", names)
        self.set_trait("window_name", "sample")
        self.set_trait("status", "done")
        self.set_trait("progress", {"done": 0, "total": 0})
        self.selected = {"neuron": 0 if ids else None}

    # ----- Python API ------------------------------------------------------------------

    @property
    def examples(self) -> NeuronExamples:
        """``examples[neuron]`` -> list of :class:`Example`, best first (what the scan has found so far)."""
        return NeuronExamples(self)

    @property
    def maxima(self) -> torch.Tensor:
        """Best activation so far of each neuron, in the order of ``neurons`` (NaN before any)."""
        if self._fixed is not None:
            return torch.tensor([ex[0].value if ex else math.nan for ex in self._fixed], dtype=torch.float32)
        values = self._topk.snapshot()[0][:, 0]
        return torch.where(torch.isinf(values), float("nan"), values).cpu()

    def _picture(self) -> Any:
        """Each neuron's best activation so far, and the top contexts of the selected neuron (else the one with
        the highest maximum) coloured by activation."""
        maxima = self.maxima
        neuron = self.selected.get("neuron")
        if neuron is None and bool(torch.isfinite(maxima).any()):
            neuron = self.neurons[int(torch.nan_to_num(maxima, nan=-math.inf).argmax())]
        marked = [self.neurons.index(neuron)] if neuron in self.neurons else []
        labels = list(self.unit_labels) or [str(n) for n in self.neurons]
        bars = picture.bar_chart(maxima, marked, labels=labels, width=min(720, 8 * len(maxima) + 40))
        panels = [picture.Panel(bars, "best activation per neuron")]
        if neuron is not None:
            examples = self.examples[neuron][:5]
            top = max([float(e.activations.max()) for e in examples] + [1e-9])
            for i, e in enumerate(examples):
                strip = picture.token_strip(e.tokens, e.activations, 0.0, top, width=640, max_tokens=64)
                name = self.unit_labels[neuron] if self.unit_labels else f"neuron {neuron}"
                panels.append(picture.Panel(strip, f"{name}, example {i + 1}: {e.value:.3g}"))
        return picture.compose(f"TopExamples: {len(self.neurons)} neurons of {self.hook}", panels, self._picture_note())

    @traitlets.validate("selected")
    def _check_selected(self, proposal: dict[str, Any]) -> dict[str, Any]:
        value = dict(proposal["value"])
        unknown = set(value) - {"neuron"}
        if unknown:
            raise traitlets.TraitError(f"selected takes the key 'neuron'; got unknown {sorted(unknown)}")
        neuron = value.get("neuron")
        if neuron is None:
            return {"neuron": None}
        expected = f"one of the scanned neurons ({_describe(self.neurons)})"
        neuron = as_index("selected neuron", neuron, traitlets.TraitError, f"an integer, {expected}")  # 1.7 is refused
        if neuron not in self._col:
            raise traitlets.TraitError(f"selected neuron must be {expected}, got {neuron!r}")
        return {"neuron": neuron}

    # ----- the scan ----------------------------------------------------------------------

    def _n_steps(self) -> int:
        if self._fixed is not None:  # nothing to scan: the examples were given
            return 0
        return -(-len(self._rows) // self._batch_size)

    def _reset(self) -> None:
        if self._fixed is not None:
            return
        self._topk = RunningTopK(len(self._col), self._k, self._adapter.device)
        self._contexts.clear()

    def _batch(self, index: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Tokens ``[b, seq]``, mask ``[b, seq]`` and window ids ``[b]`` of batch ``index``, on the model's device."""
        start = index * self._batch_size
        rows = self._rows[start : start + self._batch_size]
        tokens, mask = pad_rows(rows)
        device = self._adapter.device
        windows = torch.arange(start, start + len(rows), device=device)
        return tokens.to(device), mask.to(device), windows

    def _scan_step(self, index: int) -> None:
        tokens, mask, windows = self._batch(index)
        topk, units = self._topk, self._units

        def reduce(_: int, activation: torch.Tensor) -> None:
            flat = activation.reshape(activation.shape[0], activation.shape[1], -1)
            chosen = flat[..., units] if isinstance(units, slice) else flat.index_select(-1, units)
            topk.update(chosen, windows, mask)

        self._adapter.each_activation(tokens, [self._hook], reduce)

    # ----- examples ------------------------------------------------------------------------

    def _examples(self, neuron: int) -> list[Example]:
        try:
            neuron = as_index("neuron", neuron)  # numpy ints too; 1.7 is not neuron 1
        except TypeError:
            raise KeyError(
                f"neuron {neuron!r} was not scanned: neurons are integer ids; scanned neurons: {_describe(self.neurons)}"
            ) from None
        col = self._col.get(neuron)
        if col is None:
            raise KeyError(f"neuron {neuron!r} was not scanned; scanned neurons: {_describe(self.neurons)}")
        if self._fixed is not None:
            return list(self._fixed[col])

        def unit(activation: torch.Tensor) -> torch.Tensor:
            return activation.reshape(activation.shape[0], activation.shape[1], -1)[..., neuron]

        return self._contexts.examples(self._topk, col, unit)

    # ----- request handlers --------------------------------------------------------------

    @endpoint("overview")
    def _serve_overview(self, params: dict[str, Any], buffers: list[memoryview], ctx: Context) -> Reply:
        if self._fixed is not None:
            maxima = self.maxima
            filled = torch.tensor([len(ex) for ex in self._fixed], dtype=torch.int32)
        else:
            values = self._topk.snapshot()[0]
            maxima = torch.where(torch.isinf(values[:, 0]), float("nan"), values[:, 0])
            filled = (values > float("-inf")).sum(-1).int()
        reply = Reply({"neurons": list(self.neurons)})
        reply.result["maxima"] = reply.add_array(maxima, "float16")
        reply.result["filled"] = reply.add_array(filled, "int32")
        return reply

    @endpoint("examples", background=True)
    def _serve_examples(self, params: dict[str, Any], buffers: list[memoryview], ctx: Context) -> Reply:
        neuron = int_param(params, "neuron")
        if neuron not in self._col:
            raise ValueError(f"neuron {neuron} was not scanned; scanned neurons: {_describe(self.neurons)}")
        examples = self._examples(neuron)
        ctx.raise_if_cancelled()
        reply = Reply({"neuron": neuron})
        add_examples(reply, examples)
        return reply


# ----- construction helpers --------------------------------------------------------------


def _check_neurons(neurons: Any, n_units: int, hook: str) -> list[int]:
    if neurons is None:
        return list(range(min(DEFAULT_NEURONS, n_units)))
    if isinstance(neurons, int) and not isinstance(neurons, bool):
        neurons = [neurons]
    items = torch.as_tensor(neurons).flatten().tolist() if isinstance(neurons, torch.Tensor) else list(neurons)
    if not items:
        raise ValueError("neurons is empty: expected at least one neuron index")
    ids = []
    for n in items:
        if isinstance(n, bool) or not hasattr(n, "__index__"):
            raise TypeError(f"neurons must be integers, got {n!r}")
        ids.append(operator.index(n))
    bad = [n for n in ids if not 0 <= n < n_units]
    if bad:
        raise IndexError(f"neurons must be in 0..{n_units - 1} ({hook} has {n_units} units), got {bad[:5]}")
    if len(set(ids)) != len(ids):
        raise ValueError("neurons must be distinct")
    return ids


def _describe(ids: Sequence[int]) -> str:
    ids = list(ids)
    if ids and ids == list(range(ids[0], ids[0] + len(ids))):
        return f"{ids[0]}..{ids[-1]}"
    return ", ".join(map(str, ids[:8])) + (", ..." if len(ids) > 8 else "")
