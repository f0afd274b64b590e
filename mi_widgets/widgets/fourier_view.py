"""FourierView: read the trigonometric algorithm of a modular-addition transformer (Nanda et al. 2023).

One run over all ``p * p`` pairs (``capture/modular.py``) at construction; everything the view asks for is served
from what that run kept: the embedding's Fourier spectrum, the share of the logits each frequency's
``cos(w (a + b - c))`` explains, the neurons clustered by their dominant frequency, a neuron's activations and a
head's attention over the ``(a, b)`` grid, and one pair's logits against the key-frequency prediction.
"""

from __future__ import annotations

from typing import Any

import torch
import traitlets

from ..analysis import fourier
from ..capture.adapter import adapter_for, require_transformer_lens
from ..capture.inputs import index_in
from ..capture.modular import check_modular_model, run_all_pairs
from ..transport import picture
from ..transport.protocol import Context, Reply
from .base import ProtocolWidget, endpoint, int_param, static_asset


class FourierView(ProtocolWidget):
    """The paper's analyses of a trained modular-addition model; click a frequency, a neuron, a head or a pair.

    ``mw.FourierView(model)`` for a model on ``[a, b, =]`` (``zoo.load("modadd-113")``, ``Grokking.to_model()``
    or your own TransformerLens model of that shape: ``d_vocab_out == p``, the "=" token id ``p`` unless
    ``equals=`` says otherwise). The paper's model has one layer; a deeper one (or one with LayerNorm) is read at
    ``layer`` (default the last): its MLP neurons and attention there, and the logits of the whole model.
    ``key_frequencies`` are found from the neurons (:func:`~mi_widgets.analysis.fourier.neuron_key_frequencies`);
    ``key_fraction`` is the share of the logits their ``cos/sin(w (a + b - c))`` explain. ``selected`` is the
    view's and Python's alike: ``{"frequency": k or None, "neuron": n or None, "head": h, "a": a, "b": b}`` (a
    click on a frequency, a neuron, a head or a cell of the (a, b) grids).
    """

    _esm = static_asset("fourier_view.js")
    _css = static_asset("fourier_view.css")

    p = traitlets.Int(read_only=True).tag(sync=True)
    n_neurons = traitlets.Int(read_only=True).tag(sync=True)
    n_heads = traitlets.Int(read_only=True).tag(sync=True)
    key_frequencies = traitlets.List(traitlets.Int(), read_only=True).tag(sync=True)
    key_fraction = traitlets.Float(read_only=True).tag(sync=True)
    selected = traitlets.Dict().tag(sync=True)

    def __init__(
        self, model: Any, p: int | None = None, *, equals: int | None = None, layer: int | None = None
    ) -> None:
        adapter = adapter_for(model)
        require_transformer_lens(adapter, "FourierView (W_E and a modular-addition model's layout)")
        p, equals, layer = check_modular_model(adapter, p, equals, layer)
        run = run_all_pairs(adapter, p, equals, layer)
        self.run = run
        self.embed_norms = fourier.fourier_norms(run.embed, p).cpu()
        self.logit_fractions = fourier.logit_frequency_fractions(run.logits, p).cpu()
        frequency, fraction, _ = fourier.neuron_frequencies(run.neurons, p)
        self.neuron_frequency, self.neuron_fraction = frequency.cpu(), fraction.cpu()
        keys = fourier.neuron_key_frequencies(self.neuron_frequency, self.neuron_fraction)
        self._prediction = (
            run.logits.double().mean(-1, keepdim=True) + fourier.key_frequency_logits(run.logits.double(), keys, p)
        ).float()
        x, y = run.logits.flatten().double(), self._prediction.flatten().double()
        self.correlation = float(torch.corrcoef(torch.stack([x, y]))[0, 1]) if keys else 0.0
        super().__init__()
        with self.hold_sync():
            self.set_trait("p", p)
            self.set_trait("n_neurons", int(run.neurons.shape[1]))
            self.set_trait("n_heads", int(run.attention.shape[1]))
            self.set_trait("key_frequencies", keys)
            self.set_trait("key_fraction", float(self.logit_fractions[keys].sum()) if keys else 0.0)
            first = keys[0] if keys else None
            neuron = self.neurons(first)[0] if first is not None else None
            self.selected = {"frequency": first, "neuron": neuron, "head": 0, "a": 0, "b": 0}

    # ----- Python API ------------------------------------------------------------------

    def neurons(self, frequency: int) -> list[int]:
        """The neurons whose dominant frequency is ``frequency``, the best explained first."""
        idx = (self.neuron_frequency == frequency).nonzero().flatten()
        return idx[self.neuron_fraction[idx].argsort(descending=True)].tolist()

    @property
    def clusters(self) -> list[dict[str, Any]]:
        """The neurons grouped by dominant frequency: ``[{frequency, count, mean_fraction}]``, largest first
        (frequency 0: neurons without variance over the pairs)."""
        counts = torch.bincount(self.neuron_frequency, minlength=fourier.n_frequencies(self.p) + 1)
        out = []
        for k in counts.argsort(descending=True).tolist():
            if counts[k] == 0:
                break
            mean = float(self.neuron_fraction[self.neuron_frequency == k].mean())
            out.append({"frequency": int(k), "count": int(counts[k]), "mean_fraction": mean})
        return out

    @property
    def logits(self) -> torch.Tensor:
        """[p*p, p] the model's logits at the last position, row ``a * p + b``."""
        return self.run.logits

    def progress_measures(self, train_mask: torch.Tensor | None = None) -> dict[str, float]:
        """:func:`~mi_widgets.analysis.fourier.progress_measures` of the model with its key frequencies (without
        ``train_mask`` every pair counts as training data, and the test numbers are NaN)."""
        labels = fourier.all_pairs(self.p)[1].to(self.run.logits.device)
        mask = torch.ones(self.p * self.p, dtype=torch.bool) if train_mask is None else train_mask
        return fourier.progress_measures(self.run.logits, labels, mask, list(self.key_frequencies), self.p)

    # ----- selections ------------------------------------------------------------------

    @traitlets.validate("selected")
    def _check_selected(self, proposal: dict[str, Any]) -> dict[str, Any]:
        value = dict(proposal["value"])
        unknown = set(value) - {"frequency", "neuron", "head", "a", "b"}
        if unknown:
            raise traitlets.TraitError(f"selected takes frequency, neuron, head, a and b; got {sorted(unknown)}")
        k, n = value.get("frequency"), value.get("neuron")
        error = traitlets.TraitError
        return {
            "frequency": None
            if k is None
            else index_in("selected frequency", k, fourier.n_frequencies(self.p) + 1, error) or None,
            "neuron": None if n is None else index_in("selected neuron", n, self.n_neurons, error, " or None"),
            "head": index_in("selected head", value.get("head", 0), self.n_heads, error),
            "a": index_in("selected a", value.get("a", 0), self.p, error),
            "b": index_in("selected b", value.get("b", 0), self.p, error),
        }

    def _picture(self) -> Any:
        """The embedding's spectrum and each frequency's share of the logits, the key frequencies marked."""
        keys = list(self.key_frequencies)
        labels = [str(k) for k in range(len(self.embed_norms))]
        return picture.compose(
            f"FourierView: p = {self.p}; key frequencies {', '.join(map(str, keys)) or 'none'} explain "
            f"{self.key_fraction:.1%} of the logits",
            [
                picture.Panel(picture.bar_chart(self.embed_norms, keys, labels=labels), "embedding norm per frequency"),
                picture.Panel(
                    picture.bar_chart(self.logit_fractions, keys, labels=labels), "share of the logits per frequency"
                ),
            ],
            picture.NOTE,
        )

    # ----- endpoints ---------------------------------------------------------------------

    @endpoint("summary")
    def _serve_summary(self, params: dict[str, Any], buffers: list[memoryview], ctx: Context) -> Reply:
        reply = Reply(
            {
                "p": self.p,
                "key_frequencies": list(self.key_frequencies),
                "key_fraction": self.key_fraction,
                "clusters": self.clusters,
            }
        )
        reply.result["embed_norms"] = reply.add_array(self.embed_norms.float(), "float32")
        reply.result["logit_fractions"] = reply.add_array(self.logit_fractions.float(), "float32")
        reply.result["neuron_frequency"] = reply.add_array(self.neuron_frequency.to(torch.int32), "int32")
        reply.result["neuron_fraction"] = reply.add_array(self.neuron_fraction.float(), "float32")
        return reply

    @endpoint("grid")
    def _serve_grid(self, params: dict[str, Any], buffers: list[memoryview], ctx: Context) -> Reply:
        kind, index = params.get("kind"), int_param(params, "index")
        if kind == "neuron":
            if not 0 <= index < self.n_neurons:
                raise ValueError(f"neuron must be 0..{self.n_neurons - 1}, got {index}")
            values = self.run.neurons[:, index]
            k = int(self.neuron_frequency[index])
            label = f"neuron {index}" + (
                f": frequency {k}, {float(self.neuron_fraction[index]):.0%} of its variance" if k else ""
            )
        elif kind == "attention":
            if not 0 <= index < self.n_heads:
                raise ValueError(f"head must be 0..{self.n_heads - 1}, got {index}")
            values = self.run.attention[:, index]
            label = f"head {self.run.layer}.{index}: attention from '=' to a"
        else:
            raise ValueError(f"kind must be 'neuron' or 'attention', got {kind!r}")
        grid = values.reshape(self.p, self.p).float().cpu()
        reply = Reply(
            {"kind": kind, "index": index, "min": float(grid.min()), "max": float(grid.max()), "label": label}
        )
        reply.result["values"] = reply.add_array(grid.half(), "float16")
        return reply

    @endpoint("logits")
    def _serve_logits(self, params: dict[str, Any], buffers: list[memoryview], ctx: Context) -> Reply:
        a, b = int_param(params, "a"), int_param(params, "b")
        if not (0 <= a < self.p and 0 <= b < self.p):
            raise ValueError(f"a and b must be in 0..{self.p - 1}, got a={a}, b={b}")
        row = a * self.p + b
        reply = Reply({"a": a, "b": b, "answer": (a + b) % self.p, "correlation": self.correlation})
        reply.result["logits"] = reply.add_array(self.run.logits[row].float().cpu(), "float32")
        reply.result["prediction"] = reply.add_array(self._prediction[row].float().cpu(), "float32")
        return reply
