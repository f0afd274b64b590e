"""Patching and PathPatching: which components carry the difference between clean and corrupted prompts.

``Patching`` runs exact activation patching (denoising: the corrupted prompts with one
component's clean activation put back) over the residual stream, attention and MLP outputs and
every head's output, queries, keys, values and pattern, batched (:mod:`mi_widgets.capture.patching`)
and streamed: the heatmaps fill in as batches finish, Stop keeps what is done. With
``method="attribution"`` the attribution-patching estimate of every component comes first (two
forward passes and one backward) and the exact sweep runs beside it, with their agreement.
``PathPatching`` measures sender heads' effects through chosen paths only (Wang et al. 2022).
Results are normalised: 0 is the corrupted run's metric, 1 the clean run's.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import ipywidgets
import torch
import traitlets

from ..analysis.activations import symmetric_range
from ..analysis.patching import (
    COMPONENTS,
    Component,
    LogitDiff,
    LogitMetric,
    agreement,
    as_metric,
    component,
    normalise,
)
from ..capture.adapter import ModelAdapter, adapter_for
from ..capture.inputs import index_in
from ..capture.patching import Patch, PatchingRun
from ..transport import picture
from ..transport.protocol import Context, Reply
from .attention import AttentionView
from .base import endpoint, static_asset
from .logit_attribution import LogitAttribution
from .streaming import StreamingWidget

DEFAULT_COMPONENTS = ("resid_pre", "head_out", "attn_out", "mlp_out", "q", "k", "v", "pattern", "head_out_pos")
METHODS = ("exact", "attribution")


def prompt_tokens(adapter: ModelAdapter, prompts: Any, what: str) -> torch.Tensor:
    """``[n, seq]`` token ids from a list of texts, a list of id lists, or an ``[n, seq]`` tensor."""
    if isinstance(prompts, str):
        prompts = [prompts]
    if isinstance(prompts, torch.Tensor):
        rows = [adapter.to_tokens(row)[0] for row in (prompts if prompts.ndim == 2 else prompts[None])]
    elif isinstance(prompts, (list, tuple)):
        rows = []
        for i, item in enumerate(prompts):
            try:
                rows.append(adapter.to_tokens(item)[0])
            except (TypeError, ValueError) as exc:
                raise type(exc)(f"{what}[{i}]: {exc}") from None
    else:
        raise TypeError(
            f"{what} must be a list of prompts or an [n, seq] tensor of token ids, got {type(prompts).__name__}"
        )
    if not rows:
        raise ValueError(f"{what} is empty: expected at least one prompt")
    lengths = sorted({int(r.shape[0]) for r in rows})
    if len(lengths) > 1:
        raise ValueError(f"{what} must all have one token length so positions line up, got lengths {lengths}")
    return torch.stack(rows)


def check_pair(clean: torch.Tensor, corrupted: torch.Tensor, adapter: ModelAdapter | None = None) -> list[int]:
    """Refuse clean and corrupted sets that cannot be patched position by position; the positions that differ."""
    if clean.shape[0] != corrupted.shape[0]:
        raise ValueError(
            f"expected one corrupted prompt per clean prompt, got {clean.shape[0]} clean and {corrupted.shape[0]} corrupted"
        )
    if clean.shape[1] != corrupted.shape[1]:
        short = min(clean.shape[1], corrupted.shape[1])
        differs = (clean[0, :short] != corrupted[0, :short]).nonzero().flatten()
        at = int(differs[0]) if len(differs) else short
        where = f"; prompt 0 first differs at position {at}"
        if adapter is not None and at < short:
            pair = adapter.token_labels(torch.stack([clean[0, at], corrupted[0, at]]))
            where += f" (clean {pair[0]!r}, corrupted {pair[1]!r})"
        raise ValueError(
            f"clean prompts are {clean.shape[1]} tokens long and corrupted prompts {corrupted.shape[1]}{where}: "
            "activation patching puts a clean activation into the same position of the corrupted run, so both need "
            "one length (pick corrupted prompts whose changed words are single tokens, like the ABC names)"
        )
    return [int(p) for p in (clean != corrupted).any(0).nonzero().flatten()]


class _PatchingBase(StreamingWidget):
    """What Patching and PathPatching share: the prompts, the run, the traits and the view's endpoints."""

    _esm = static_asset("patching.js")
    _css = static_asset("patching.css")
    _thread_name = "mi_widgets-patching"

    n_layers = traitlets.Int(0, read_only=True).tag(sync=True)
    n_heads = traitlets.Int(0, read_only=True).tag(sync=True)
    n_prompts = traitlets.Int(0, read_only=True).tag(sync=True)
    tokens = traitlets.List(traitlets.Unicode(), read_only=True).tag(sync=True)
    components = traitlets.List(traitlets.Dict(), read_only=True).tag(sync=True)
    method = traitlets.Unicode("exact", read_only=True).tag(sync=True)
    scale = traitlets.Dict(read_only=True).tag(sync=True)
    metric = traitlets.Dict(read_only=True).tag(sync=True)
    selected = traitlets.Dict().tag(sync=True)

    def _setup(self, model: Any, clean: Any, corrupted: Any, metric: Any, batch_size: int | None) -> None:
        adapter = adapter_for(model)
        self._adapter = adapter
        clean_ids = prompt_tokens(adapter, clean, "clean")
        corrupted_ids = prompt_tokens(adapter, corrupted, "corrupted")
        self.differing_positions = check_pair(clean_ids, corrupted_ids, adapter)
        self._run = PatchingRun(adapter, clean_ids, corrupted_ids, as_metric(metric))
        normalise(torch.zeros(()), float(self._run.clean_value), float(self._run.corrupted_value))  # refuse now
        if batch_size is not None and int(batch_size) < 1:
            raise ValueError(f"batch_size (patched copies per forward pass) must be at least 1, got {batch_size}")
        self._copies = int(batch_size) if batch_size is not None else self._run.copies_per_pass()
        self._prompt = clean_ids[0]

    def _link_views(self, model: Any) -> None:
        """The views a selected head opens: its attention pattern on the first clean prompt, and (for a logit
        difference) its direct logit attribution there; ``logit_attribution`` is None for other metrics and
        for architectures whose readout LogitAttribution refuses (``logit_attribution_error`` says why)."""
        adapter = self._adapter
        self.attention = AttentionView(model, self._prompt, layer=adapter.n_layers - 1, head=0)
        self.logit_attribution: LogitAttribution | None = None
        self.logit_attribution_error = ""
        metric = self._run.metric
        if not isinstance(metric, LogitDiff):
            self.logit_attribution_error = "the metric is not a logit difference"
            return
        position = metric.position if isinstance(metric.position, int) else int(metric.position[0])
        try:
            self.logit_attribution = LogitAttribution(
                model, self._prompt, answer=int(metric.answers[0]), wrong=int(metric.wrong[0]), position=position
            )
        except ValueError as exc:
            self.logit_attribution_error = str(exc)

    def _publish(self, method: str, grids: dict[str, tuple[int, int]], scale: dict[str, str]) -> None:
        run, adapter = self._run, self._adapter
        for name, value in [
            ("n_layers", adapter.n_layers),
            ("n_heads", adapter.n_heads),
            ("n_prompts", run.n),
            ("tokens", adapter.token_labels(self._prompt)),
            ("method", method),
            ("scale", scale),
            (
                "metric",
                {
                    "name": getattr(run.metric, "name", "metric"),
                    "clean": float(run.clean_value),
                    "corrupted": float(run.corrupted_value),
                },
            ),
            (
                "components",
                [
                    {
                        "name": n,
                        "title": _title(n, c, adapter.n_heads),
                        "rows": _axes(n)[0],
                        "cols": _axes(n)[1],
                        "n_rows": r,
                        "n_cols": c,
                    }
                    for n, (r, c) in grids.items()
                ],
            ),
        ]:
            self.set_trait(name, value)

    # ----- Python API ------------------------------------------------------------------

    @property
    def clean_metric(self) -> float:
        """The metric on the clean prompts (1 on the normalised scale)."""
        return float(self._run.clean_value)

    @property
    def corrupted_metric(self) -> float:
        """The metric on the corrupted prompts (0 on the normalised scale)."""
        return float(self._run.corrupted_value)

    def close(self) -> None:
        super().close()
        for name in ("attention", "logit_attribution", "_display"):
            child = getattr(self, name, None)
            if child is not None:
                if isinstance(child, ipywidgets.Box):
                    child.layout.close()
                child.close()

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        """The heatmaps above the selected head's attention pattern and direct logit attribution."""
        if getattr(self, "_display", None) is None:
            linked = [self.attention] + ([self.logit_attribution] if self.logit_attribution is not None else [])
            self._display = ipywidgets.VBox([self, *linked])
        return self._display._repr_mimebundle_(**kwargs)

    def _picture(self) -> Any:
        """Each result normalised (1 = clean, 0 = corrupted; blue < 0 < red), cells not patched yet empty."""
        panels = []
        for name, values in self.results.items():
            grid = values.detach().float().cpu()
            grid = grid.reshape(1, -1) if grid.ndim == 1 else grid.reshape(grid.shape[0], -1)
            scale = max(1.0, symmetric_range([grid]))
            image = picture.heatmap(grid, -scale, scale, diverging=True, nan=picture.EMPTY_RGB["light"], cell=16)
            panels.append(picture.Panel(image, f"{name} {list(values.shape)}, up to +-{scale:.3g}"))
        return picture.compose(
            f"{type(self).__name__}: clean metric {self.clean_metric:.3g}, corrupted {self.corrupted_metric:.3g}",
            panels,
            self._picture_note(),
        )

    def _normalise(self, values: torch.Tensor) -> torch.Tensor:
        return normalise(values, self.clean_metric, self.corrupted_metric)

    def _per_prompt_normalised(self, values: torch.Tensor) -> torch.Tensor:
        """Each prompt's patched metric minus its corrupted one, over the mean clean - corrupted gap
        (not its own gap, which can be near 0): the mean over prompts is the normalised result."""
        corrupted = self._run.corrupted_per_prompt
        if corrupted is None:
            raise ValueError(
                f"the metric {self._run.metric.name!r} has no per-prompt values: use mw.logit_diff or mw.answer_prob"
            )
        return (values - corrupted[0]) / (self.clean_metric - self.corrupted_metric)

    @traitlets.validate("selected")
    def _check_selected(self, proposal: dict[str, Any]) -> dict[str, Any]:
        value = dict(proposal["value"])
        unknown = set(value) - {"component", "layer", "head", "position"}
        if unknown:
            raise traitlets.TraitError(f"selected takes component, layer, head and position; got {sorted(unknown)}")
        name = value.get("component")
        empty = {"component": None, "layer": None, "head": None, "position": None}
        if name is None:
            return empty
        grids = {c["name"]: c for c in self.components}
        if name not in grids:
            raise traitlets.TraitError(f"selected component must be one of {', '.join(grids)}, got {name!r}")
        info = grids[name]
        out = dict(empty, component=name)
        out["layer"] = index_in("selected layer", value.get("layer"), self.n_layers, traitlets.TraitError)
        if "head" in (info["rows"], info["cols"]) or info["rows"] == "layer_head":
            out["head"] = index_in("selected head", value.get("head"), self.n_heads, traitlets.TraitError)
        if info["cols"] == "position":
            out["position"] = index_in(
                "selected position", value.get("position"), len(self.tokens), traitlets.TraitError
            )
        return out

    @traitlets.observe("selected")
    def _open_head(self, change: dict[str, Any]) -> None:
        sel = change["new"]
        if sel.get("head") is not None and getattr(self, "attention", None) is not None:
            head = sel["head"]
            shape = getattr(self, "_shapes", {}).get(sel["component"])
            if shape is not None and len(shape) == 2 and 0 < shape[1] < self.n_heads:  # a GQA key/value head: open
                head *= self.n_heads // shape[1]  # the first query head of its group (HF's repeat_kv order)
            self.attention.selected = {"layer": sel["layer"], "head": head, "query": None, "key": None}
            if self.logit_attribution is not None:
                self.logit_attribution.selected = {"layer": sel["layer"], "head": head}

    # ----- what subclasses fill in ------------------------------------------------------------

    def _grids(self) -> dict[str, torch.Tensor]:
        """Normalised display grids ``{name: [rows, cols]}``, NaN where not computed yet."""
        raise NotImplementedError

    def _cell_per_prompt(
        self, name: str, layer: int, head: int | None, position: int | None
    ) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    # ----- request handlers --------------------------------------------------------------

    @endpoint("results")
    def _serve_results(self, params: dict[str, Any], buffers: list[memoryview], ctx: Context) -> Reply:
        grids = self._grids()
        reply = Reply({"names": list(grids), "values": {}})
        for name, grid in grids.items():
            reply.result["values"][name] = reply.add_array(grid.float(), "float32")
        self._add_extra(reply)
        return reply

    def _add_extra(self, reply: Reply) -> None:
        """More for the ``results`` reply (attribution estimates)."""

    @endpoint("per_prompt")
    def _serve_per_prompt(self, params: dict[str, Any], buffers: list[memoryview], ctx: Context) -> Reply:
        sel = self._check_selected({"value": {k: params.get(k) for k in ("component", "layer", "head", "position")}})
        if sel["component"] is None:
            raise ValueError("per_prompt needs a component")
        arrays = self._cell_per_prompt(sel["component"], sel["layer"], sel["head"], sel["position"])
        reply = Reply({"prompts": self._prompt_labels()})
        for key, values in arrays.items():
            reply.result[key] = reply.add_array(values.float(), "float32")
        return reply

    def _prompt_labels(self) -> list[str]:
        labels = []
        for row in self._run.clean[:, 1:] if self._adapter.bos_id is not None else self._run.clean:
            text = "".join(self._adapter.token_labels(row))
            labels.append(text if len(text) <= 80 else text[:79] + "…")
        return labels


class Patching(_PatchingBase):
    """Exact (and attribution) activation patching of every component, streamed into heatmaps.

    ``Patching(model, clean, corrupted, metric=mw.logit_diff(answers, wrong))``: ``clean`` and
    ``corrupted`` are lists of prompts (or ``[n, seq]`` token ids) of one token length, one
    corrupted prompt per clean one; ``metric`` maps logits ``[n, seq, vocab]`` to a scalar
    (``mw.logit_diff``, ``mw.answer_prob`` or your own function). ``patch.results[name]`` is
    normalised (0 = corrupted, 1 = clean) in TransformerLens's shapes: ``[layers, pos]`` for
    ``resid_pre``/``attn_out``/``mlp_out``, ``[layers, heads]`` for ``head_out``/``q``/``k``/``v``/
    ``pattern``, ``[layers, pos, heads]`` for ``head_out_pos``; ``patch.raw`` has the metric itself.
    NaN marks what is not computed yet. A click in the view lands in ``patch.selected``, and
    ``patch.per_prompt(...)`` gives one component's effect on each prompt.

    ``method="attribution"``: ``patch.attribution`` (same shapes, normalised) is the
    attribution-patching estimate, computed first in two forward passes and one backward; the exact
    sweep follows unless ``compare=False``, and ``patch.agreement(name)`` compares the two.
    """

    def __init__(
        self,
        model: Any,
        clean: Any,
        corrupted: Any,
        metric: Any,
        *,
        components: Sequence[str] | None = None,
        method: str = "exact",
        compare: bool = True,
        batch_size: int | None = None,
        autostart: bool = True,
    ) -> None:
        if method not in METHODS:
            raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
        self._setup(model, clean, corrupted, metric, batch_size)
        adapter = self._adapter
        self._components = self._pick_components(adapter, components)
        self._shapes = {c.name: self._shape(c) for c in self._components}
        self._method = method
        self._exact = method == "exact" or compare
        self._plan = self._plan_steps()
        self._raw: dict[str, torch.Tensor] = {}
        self._per_prompt: dict[str, torch.Tensor] = {}
        self._attr: dict[str, torch.Tensor] = {}
        self._attr_per_prompt: dict[str, torch.Tensor] = {}
        self._clear()
        self._link_views(model)
        self._display: ipywidgets.VBox | None = None
        super().__init__()
        grids = {c.name: tuple(self._grid(c.name, torch.zeros(self._shapes[c.name])).shape) for c in self._components}
        self._publish(method, grids, {"low": "corrupted", "high": "clean"})  # type: ignore[arg-type]
        self.selected = {}
        if autostart:
            self.start()

    # ----- Python API ------------------------------------------------------------------

    @property
    def results(self) -> dict[str, torch.Tensor]:
        """Normalised results of the exact sweep so far (``attribution`` ones if the sweep is off)."""
        if not self._exact:
            return self.attribution
        return {name: self._normalise(raw) for name, raw in self._raw.items()}

    @property
    def raw(self) -> dict[str, torch.Tensor]:
        """The metric itself on each patched run (what TransformerLens's patching functions return)."""
        return {name: raw.clone() for name, raw in self._raw.items()}

    @property
    def attribution(self) -> dict[str, torch.Tensor]:
        """Attribution-patching estimates, normalised like ``results`` (empty unless ``method="attribution"``)."""
        return {name: a / (self.clean_metric - self.corrupted_metric) for name, a in self._attr.items()}

    def agreement(self, name: str, k: int = 5) -> dict[str, Any]:
        """How attribution patching agrees with exact patching on ``name``: Pearson ``correlation`` over
        the cells both have, and the ``k`` components where they ``disagree`` most."""
        comp = component(name)
        if comp.name not in self._attr:
            raise ValueError("agreement needs method='attribution'")
        return self._agreement(comp, self.results.get(comp.name), self.attribution[comp.name], k)

    def _agreement(
        self, comp: Component, exact: torch.Tensor | None, estimate: torch.Tensor, k: int = 5
    ) -> dict[str, Any]:
        if exact is None or not self._exact:
            exact = torch.full_like(estimate, float("nan"))
        corr, worst = agreement(exact, estimate, k)
        shape = self._shapes[comp.name]
        disagree = []
        for flat, e, a in worst:
            where = dict(zip(("layer", *comp.index), _unravel(flat, shape), strict=True))
            disagree.append({"layer": where["layer"], "head": where.get("head"), "position": where.get("pos"),
                             "exact": e, "attribution": a})  # fmt: skip
        return {"correlation": corr, "disagree": disagree}

    def per_prompt(
        self, name: str, layer: int, head: int | None = None, position: int | None = None
    ) -> dict[str, torch.Tensor]:
        """One component's normalised effect on each prompt: ``{"exact": [n]}`` (NaN until done), plus
        ``"attribution"`` with ``method="attribution"``. Needs a metric with per-prompt values."""
        comp = component(name)
        if comp.name not in self._shapes:
            raise ValueError(f"{name!r} is not among this sweep's components: {', '.join(self._shapes)}")
        index = self._index(comp, layer, head, position)
        out: dict[str, torch.Tensor] = {}
        if self._per_prompt:
            per = self._per_prompt[comp.name][(slice(None), *index)]
            out["exact"] = self._per_prompt_normalised(per)
        if comp.name in self._attr_per_prompt:
            span = self.clean_metric - self.corrupted_metric
            out["attribution"] = self._attr_per_prompt[comp.name][(slice(None), *index)] / span
        if not out:
            raise ValueError(
                f"the metric {self._run.metric.name!r} has no per-prompt values: use mw.logit_diff or mw.answer_prob"
            )
        return out

    # ----- the sweep -------------------------------------------------------------------------

    @staticmethod
    def _pick_components(adapter: ModelAdapter, names: Sequence[str] | None) -> list[Component]:
        if names is None:
            picked = [COMPONENTS[n] for n in DEFAULT_COMPONENTS if n != "mlp_out" or adapter.has_mlp]
            return [c for c in picked if _has_hook(adapter, c.hook_name(0))]
        if isinstance(names, str):
            names = [names]
        comps = [component(n) for n in names]
        if not comps:
            raise ValueError(f"components is empty: pick some of {', '.join(COMPONENTS)}")
        for c in comps:
            if c.name == "mlp_out" and not adapter.has_mlp:
                raise ValueError("this model is attention-only: it has no mlp_out to patch")
            getattr(adapter, "resolve_patch_hook", adapter.resolve_hook)(c.hook_name(0))
        return list(dict.fromkeys(comps))

    def _shape(self, comp: Component) -> tuple[int, ...]:
        """Results shape (TransformerLens's): layers, then the component's index dims."""
        act = self._run.activations("clean", [comp.hook_name(0)])[comp.hook_name(0)]
        sizes = dict(zip(comp.dims, act.shape[1:], strict=True))
        return (self._adapter.n_layers, *(int(sizes[d]) for d in comp.index))

    def _plan_steps(self) -> list[tuple[Component, list[Patch]]]:
        steps: list[tuple[Component, list[Patch]]] = []
        if not self._exact:
            return steps
        for comp in self._components:
            shape = self._shapes[comp.name]
            patches = [(int(i[0]), tuple(int(x) for x in i[1:])) for i in torch.cartesian_prod(
                *[torch.arange(s) for s in shape]).reshape(-1, len(shape)).tolist()]  # fmt: skip
            for start in range(0, len(patches), self._copies):
                steps.append((comp, patches[start : start + self._copies]))
        return steps

    def _clear(self) -> None:
        nan = float("nan")
        self._raw = {n: torch.full(s, nan) for n, s in self._shapes.items()} if self._exact else {}
        per = self._run.clean_per_prompt is not None and self._exact
        self._per_prompt = {n: torch.full((self._run.n, *s), nan) for n, s in self._shapes.items()} if per else {}
        self._attr, self._attr_per_prompt = {}, {}

    def _n_steps(self) -> int:
        return len(self._plan) + (self._method == "attribution")

    def _reset(self) -> None:
        self._clear()

    def _scan_step(self, index: int) -> None:
        if self._method == "attribution":
            if index == 0:
                for name, (estimate, per_prompt) in self._run.attribution(self._components).items():
                    self._attr[name] = estimate
                    if per_prompt is not None:
                        self._attr_per_prompt[name] = per_prompt
                return
            index -= 1
        comp, patches = self._plan[index]
        values, per_prompt = self._run.exact(comp, patches)
        raw, per = self._raw[comp.name], self._per_prompt.get(comp.name)
        for k, (layer, idx) in enumerate(patches):
            raw[(layer, *idx)] = values[k]
            if per is not None and per_prompt is not None:
                per[(slice(None), layer, *idx)] = per_prompt[k]

    # ----- the view ---------------------------------------------------------------------------

    def _grid(self, name: str, values: torch.Tensor) -> torch.Tensor:
        """A result in TransformerLens's shape as the view's 2-D grid (``head_out_pos``: rows ``L{l}H{h}``)."""
        if name == "head_out_pos":  # [layers, pos, heads] -> [layers * heads, pos]
            return values.permute(0, 2, 1).reshape(-1, values.shape[1])
        return values

    def _grids(self) -> dict[str, torch.Tensor]:
        results = self.results if self._exact else {}
        return {c.name: self._grid(c.name, results.get(c.name, torch.full(self._shapes[c.name], float("nan"))))
                for c in self._components}  # fmt: skip

    def _add_extra(self, reply: Reply) -> None:
        if not self._attr:
            return
        attribution, results = self.attribution, self.results  # normalised once per reply
        reply.result["attribution"] = {
            name: reply.add_array(self._grid(name, a).float(), "float32") for name, a in attribution.items()
        }
        reply.result["agreement"] = {
            name: self._agreement(component(name), results.get(name), a) for name, a in attribution.items()
        }

    def _index(self, comp: Component, layer: int, head: int | None, position: int | None) -> tuple[int, ...]:
        shape = self._shapes[comp.name]
        given = {"pos": position, "head": head}
        index = [index_in("layer", layer, shape[0])]
        for dim, size in zip(comp.index, shape[1:], strict=True):
            what = "position" if dim == "pos" else dim
            if given[dim] is None:
                raise ValueError(f"{comp.name} needs a {what}")
            index.append(index_in(what, given[dim], size))
        return tuple(index)

    def _cell_per_prompt(
        self, name: str, layer: int, head: int | None, position: int | None
    ) -> dict[str, torch.Tensor]:
        out = self.per_prompt(name, layer, head, position)
        return {"values": out.get("exact", torch.full((self._run.n,), float("nan"))),
                **({"attribution": out["attribution"]} if "attribution" in out else {})}  # fmt: skip


class PathPatching(_PatchingBase):
    """Path patching (Wang et al. 2022): each sender head's effect through the receivers only.

    ``PathPatching(model, data, receivers=[(layer, head, "q"), ...])`` (``data`` from
    ``mw.ioi_prompts``, or ``clean=``/``corrupted=``/``metric=``): for each sender head (default:
    every head in the layers before the first receiver; with ``receivers="logits"`` every head),
    the clean run with that head's output set to its corrupted value and every other head frozen
    at its clean output; the receivers' ``q``/``k``/``v`` from that run go into a clean run, whose
    metric is the result (``"logits"``: the metric of the frozen run itself, the sender's direct
    effect and through MLPs). ``path.results`` is ``[layers, heads]``, normalised (1 = clean, i.e.
    no effect; lower = the path carries the clean behaviour), NaN for heads that are not senders.
    """

    def __init__(
        self,
        model: Any,
        data: Any = None,
        *,
        receivers: Any = "logits",
        senders: Sequence[tuple[int, int]] | None = None,
        clean: Any = None,
        corrupted: Any = None,
        metric: Any = None,
        batch_size: int | None = None,
        autostart: bool = True,
    ) -> None:
        if data is not None:
            clean = data.clean if clean is None else clean
            corrupted = data.corrupted if corrupted is None else corrupted
            metric = LogitDiff(data.answers, data.wrong) if metric is None else metric
        if clean is None or corrupted is None or metric is None:
            raise ValueError("PathPatching needs data (from mw.ioi_prompts) or clean=, corrupted= and metric=")
        self._setup(model, clean, corrupted, metric, batch_size)
        adapter = self._adapter
        self._receivers = self._check_receivers(adapter, receivers)
        self._senders = self._check_senders(adapter, senders, self._receivers)
        self._plan = [self._senders[i : i + self._copies] for i in range(0, len(self._senders), self._copies)]
        self._values = torch.full((adapter.n_layers, adapter.n_heads), float("nan"))
        self._per = torch.full((self._run.n, adapter.n_layers, adapter.n_heads), float("nan"))
        self._link_views(model)
        self._display: ipywidgets.VBox | None = None
        super().__init__()
        label = "logits" if self._receivers is None else ", ".join(f"L{l}H{h}.{k}" for l, h, k in self._receivers)
        self._publish("path", {"path": (adapter.n_layers, adapter.n_heads)}, {"low": "corrupted", "high": "clean"})
        self.set_trait("components", [dict(self.components[0], title=f"sender heads -> {label}")])
        self.selected = {}
        if autostart:
            self.start()

    @property
    def results(self) -> dict[str, torch.Tensor]:
        """``{"path": [layers, heads]}`` normalised (1 = clean), NaN for heads not scanned yet or not senders."""
        return {"path": self._normalise(self._values)}

    @property
    def receivers(self) -> list[tuple[int, int, str]] | str:
        return "logits" if self._receivers is None else list(self._receivers)

    @property
    def senders(self) -> list[tuple[int, int]]:
        return list(self._senders)

    @staticmethod
    def _check_receivers(adapter: ModelAdapter, receivers: Any) -> list[tuple[int, int, str]] | None:
        if receivers == "logits" or receivers is None:
            return None
        if not isinstance(receivers, (list, tuple)) or not receivers:
            raise ValueError(
                f"receivers must be 'logits' or a list of (layer, head, 'q' | 'k' | 'v'), got {receivers!r}"
            )
        out = []
        for item in receivers:
            if not (isinstance(item, (list, tuple)) and len(item) == 3 and item[2] in ("q", "k", "v")):
                raise ValueError(f"each receiver is (layer, head, 'q' | 'k' | 'v'), got {item!r}")
            adapter.check_layer_head(item[0], item[1])
            adapter.resolve_hook(component(item[2]).hook_name(int(item[0])))
            out.append((int(item[0]), int(item[1]), str(item[2])))
        return out

    @staticmethod
    def _check_senders(
        adapter: ModelAdapter, senders: Sequence[tuple[int, int]] | None, receivers: list[tuple[int, int, str]] | None
    ) -> list[tuple[int, int]]:
        first = adapter.n_layers if receivers is None else min(layer for layer, _, _ in receivers)
        if senders is None:
            out = [(layer, head) for layer in range(first) for head in range(adapter.n_heads)]
            if not out:
                raise ValueError("receivers in layer 0 have no heads before them to send")
            return out
        out = []
        for item in senders:
            layer, head = int(item[0]), int(item[1])
            adapter.check_layer_head(layer, head)
            if layer >= first:
                raise ValueError(f"sender L{layer}H{head} is not before the receivers (first receiver layer {first})")
            out.append((layer, head))
        if not out:
            raise ValueError("senders is empty: give (layer, head) pairs, or None for every head before the receivers")
        return out

    def _n_steps(self) -> int:
        return len(self._plan)

    def _reset(self) -> None:
        self._values = torch.full_like(self._values, float("nan"))
        self._per = torch.full_like(self._per, float("nan"))

    def _scan_step(self, index: int) -> None:
        senders = self._plan[index]
        values, per_prompt = self._run.path(senders, self._receivers)
        for k, (layer, head) in enumerate(senders):
            self._values[layer, head] = values[k]
            if per_prompt is not None:
                self._per[:, layer, head] = per_prompt[k]

    def _grids(self) -> dict[str, torch.Tensor]:
        return self.results

    def _cell_per_prompt(
        self, name: str, layer: int, head: int | None, position: int | None
    ) -> dict[str, torch.Tensor]:
        assert head is not None
        return {"values": self._per_prompt_normalised(self._per[:, layer, head])}


def _has_hook(adapter: ModelAdapter, name: str) -> bool:
    try:
        getattr(adapter, "resolve_patch_hook", adapter.resolve_hook)(name)  # nnsight: some hooks are read-only
    except ValueError:
        return False
    return True


def _title(name: str, n_cols: int = 0, n_heads: int = 0) -> str:
    if name not in COMPONENTS:
        return "sender heads"
    title = COMPONENTS[name].title
    if COMPONENTS[name].cols == "head" and 0 < n_cols < n_heads:  # grouped-query attention's keys and values
        title += f" ({n_cols} key/value heads, each read by {n_heads // n_cols} query heads)"
    return title


def _axes(name: str) -> tuple[str, str]:
    if name not in COMPONENTS:
        return ("layer", "head")
    comp = COMPONENTS[name]
    return comp.rows, comp.cols


def _unravel(flat: int, shape: Sequence[int]) -> tuple[int, ...]:
    out = []
    for size in reversed(shape):
        out.append(flat % size)
        flat //= size
    return tuple(reversed(out))


__all__ = ["LogitMetric", "Patching", "PathPatching"]
