"""The forward passes of activation, attribution and path patching, batched.

One :class:`PatchingRun` holds a clean and a corrupted set of prompts, the metric, and the clean
(and, for path patching, the corrupted heads') activations of the hooks it patches. Exact patching
stacks K copies of the corrupted prompts along the batch, copy ``k`` getting component ``k``'s clean
activation, so a sweep over hundreds of components costs a few large forward passes instead of one
small pass per component; a patch that would put back what is already there (a position before the
first token that differs) is not run. A metric that reads one position (:class:`~..analysis.patching.LogitMetric`)
is read from the last residual stream at that position only, through the model's own final norm
and unembedding (checked once against the model's logits), not from ``[K*n, seq, vocab]`` logits.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from ..analysis.patching import (
    Component,
    FunctionMetric,
    LogitMetric,
    attribution_scores,
    component,
    patch_mask,
)
from .adapter import ModelAdapter

# Budget for one batched pass: copies * prompts * positions (activations scale with it).
BATCH_TOKENS = 4096
# And for full logits (a metric of the whole logits): copies * prompts * positions * vocab floats.
LOGIT_FLOATS = 64 * 2**20
Patch = tuple[int, tuple[int, ...]]  # (layer, index in the component's `index` order)


class PatchingRun:
    """Clean and corrupted prompts, a metric, and the batched patched runs over them."""

    def __init__(self, adapter: ModelAdapter, clean: torch.Tensor, corrupted: torch.Tensor, metric: Any) -> None:
        self.adapter = adapter
        self.clean = clean
        self.corrupted = corrupted
        self.metric: LogitMetric | FunctionMetric = metric
        self.n, self.seq = int(clean.shape[0]), int(clean.shape[1])
        self._acts: dict[tuple[str, str], torch.Tensor] = {}
        self._differs: dict[str, list[torch.Tensor]] = {}
        self._final = f"blocks.{adapter.n_layers - 1}.hook_resid_post"
        self.readout = isinstance(metric, LogitMetric) and self._readout_matches()
        self.clean_value, self.clean_per_prompt = self._score(self._logits(clean, {}), 1)
        self.corrupted_value, self.corrupted_per_prompt = self._score(self._logits(corrupted, {}), 1)

    # ----- activations ------------------------------------------------------------------------

    def activations(self, which: str, hooks: Sequence[str]) -> dict[str, torch.Tensor]:
        """The ``"clean"`` or ``"corrupted"`` run's activations of ``hooks`` (captured once, kept)."""
        tokens = self.clean if which == "clean" else self.corrupted
        wanted = [h for h in dict.fromkeys(hooks) if (which, h) not in self._acts]
        if wanted:
            for name, act in self.adapter.capture(tokens, wanted).items():
                self._acts[(which, name)] = act
        return {h: self._acts[(which, h)] for h in hooks}

    # ----- exact patching -----------------------------------------------------------------------

    def copies_per_pass(self) -> int:
        """How many patched copies of the prompts one forward pass holds."""
        k = BATCH_TOKENS // max(1, self.n * self.seq)
        if not self.readout:
            vocab = int(getattr(self.adapter.cfg, "d_vocab", 50257))
            k = min(k, LOGIT_FLOATS // max(1, self.n * self.seq * vocab))
        return max(1, k)

    def exact(self, comp: Component | str, patches: Sequence[Patch]) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Metric with each patch applied alone: ``([K], [K, n] per prompt or None)``, one forward pass.

        A patch whose clean and corrupted activations are equal (a position before the first token
        that differs, in a causal model) changes nothing: it gets the corrupted run's values without
        a forward pass.
        """
        comp = component(comp) if isinstance(comp, str) else comp
        changes = self._changes(comp, patches)
        values = self.corrupted_value.expand(len(patches)).clone()
        per = self.corrupted_per_prompt
        per_prompt = per.expand(len(patches), -1).clone() if per is not None else None
        todo = [k for k, change in enumerate(changes) if change]
        if todo:
            run = [patches[k] for k in todo]
            hooks = self._patch_hooks(comp, run, "corrupted", "clean")
            got, got_per = self._score(self._logits(self.corrupted.repeat(len(run), 1), hooks), len(run))
            values[todo] = got
            if per_prompt is not None and got_per is not None:
                per_prompt[todo] = got_per
        return values, per_prompt

    def _changes(self, comp: Component, patches: Sequence[Patch]) -> list[bool]:
        """Whether each patch puts in anything that differs from the corrupted run's activation."""
        differs = self._differences(comp)
        return [bool(differs[layer][index]) for layer, index in patches]

    def _differences(self, comp: Component) -> list[torch.Tensor]:
        """Per layer, a bool tensor over the component's index (e.g. ``[pos]``, ``[head]``, ``[pos, head]``): where
        the clean and corrupted activations differ in any prompt. Kept instead of the corrupted activations."""
        if comp.name not in self._differs:
            names = [comp.hook_name(layer) for layer in range(self.adapter.n_layers)]
            clean = self.activations("clean", names)
            corrupted = self.adapter.capture(self.corrupted, names)
            keep = [comp.dims.index(d) + 1 for d in comp.index]
            rows = []
            for name in names:
                unequal = clean[name] != corrupted[name]
                drop = [d for d in range(unequal.ndim) if d not in keep]
                summary = unequal.any(dim=drop) if drop else unequal
                order = sorted(keep)  # kept dims are in dims order after the reduction; put them in index order
                rows.append(summary.permute([order.index(d) for d in keep]).cpu())
            self._differs[comp.name] = rows
        return self._differs[comp.name]

    def _patch_hooks(
        self, comp: Component, patches: Sequence[Patch], base: str, source: str
    ) -> dict[str, Callable[[torch.Tensor], torch.Tensor]]:
        """Hook functions that put ``source``'s activation into copy ``k`` where patch ``k`` says."""
        n_copies = len(patches)
        layers = sorted({layer for layer, _ in patches})
        names = [comp.hook_name(layer) for layer in layers]
        acts = self.activations(source, names)
        hooks: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {}
        for layer, name in zip(layers, names, strict=True):
            act = acts[name]
            mask = patch_mask(comp, [idx if at == layer else None for at, idx in patches], act.shape[1:])
            hooks[name] = _replacer(act, mask.to(act.device), n_copies)
        return hooks

    # ----- attribution patching -------------------------------------------------------------------

    def attribution(self, comps: Sequence[Component | str]) -> dict[str, tuple[torch.Tensor, torch.Tensor | None]]:
        """Attribution patching of every component at once: clean run, corrupted run with gradients, one backward.

        Per component: ``(estimate [layers, *index], per prompt [n, layers, *index] or None)``, the
        linear estimate of ``metric(patched) - metric(corrupted)`` for each patch.
        """
        comps = [component(c) if isinstance(c, str) else c for c in comps]
        layers = range(self.adapter.n_layers)
        names = list(dict.fromkeys(c.hook_name(layer) for c in comps for layer in layers))
        clean = self.activations("clean", names)
        kept: dict[str, torch.Tensor] = {}
        leaf = "blocks.0.hook_resid_pre"

        def keep(name: str) -> Callable[[torch.Tensor], torch.Tensor]:
            def fn(t: torch.Tensor) -> torch.Tensor:
                if name == leaf:  # a leaf early in the graph, so activations need grad even if weights are frozen
                    t = t.detach().requires_grad_(True)
                # Returned, not just kept: a bridge may hand a hook a reshaped view (hook_z of o's input),
                # and only what the hook returns is on the path to the logits.
                kept[name] = t
                return t

            return fn

        hook_fns = {name: keep(name) for name in dict.fromkeys([leaf, *names])}
        logits = self.adapter.run_patched(self.corrupted, hook_fns, grad=True)
        assert logits is not None
        metric = self.metric
        total = metric.per_prompt(logits).sum() if isinstance(metric, LogitMetric) else metric(logits)
        grads = torch.autograd.grad(total, [kept[n] for n in names], allow_unused=True)
        grad_of = dict(zip(names, grads, strict=True))
        out: dict[str, tuple[torch.Tensor, torch.Tensor | None]] = {}
        for comp in comps:
            rows = []
            for layer in layers:
                name = comp.hook_name(layer)
                grad = grad_of[name]
                diff = clean[name] - kept[name].detach()
                grad = torch.zeros_like(diff) if grad is None else grad.detach()
                rows.append(attribution_scores(comp, diff, grad))
            per_prompt = torch.stack(rows, dim=1).cpu()  # [n, layers, *index]
            if isinstance(metric, LogitMetric):
                out[comp.name] = (per_prompt.mean(0), per_prompt)
            else:
                out[comp.name] = (per_prompt.sum(0), None)
        return out

    # ----- path patching -------------------------------------------------------------------------

    def path(
        self, senders: Sequence[tuple[int, int]], receivers: Sequence[tuple[int, int, str]] | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Path patching (Wang et al. 2022), one sender head per copy, everything else held at clean values.

        Each copy runs the clean prompts with every head's output frozen at its clean value except
        the sender's, which takes its corrupted value (MLPs recompute). ``receivers=None``: the metric
        of that run (the sender's effect on the logits through the direct path and MLPs). Otherwise
        the receivers' ``q``/``k``/``v`` inputs of that run are patched into a plain clean run, and the
        metric of that run is the effect of the path sender -> receivers.
        """
        n_copies = len(senders)
        z = component("head_out")
        top = self.adapter.n_layers if receivers is None else max(layer for layer, _, _ in receivers) + 1
        z_names = [z.hook_name(layer) for layer in range(top)]
        clean_z = self.activations("clean", z_names)
        corrupted_z = self.activations("corrupted", z_names)
        hooks: dict[str, Callable[[torch.Tensor], torch.Tensor | None]] = {}
        for layer, name in enumerate(z_names):
            mask = patch_mask(z, [(h,) if at == layer else None for at, h in senders], clean_z[name].shape[1:])
            hooks[name] = _freezer(clean_z[name], corrupted_z[name], mask.to(clean_z[name].device), n_copies)
        tokens = self.clean.repeat(n_copies, 1)
        if receivers is None:
            return self._score(self._logits(tokens, hooks), n_copies)
        # Run 2: the receivers' inputs with the sender changed and every other head frozen.
        got: dict[str, torch.Tensor] = {}
        kinds = {kind: component(kind) for _, _, kind in receivers}
        recv_names = list(dict.fromkeys(kinds[kind].hook_name(layer) for layer, _, kind in receivers))
        for name in recv_names:
            prev = hooks.get(name)
            hooks[name] = _recorder(got, name, prev)
        # Every q/k/v of a layer fires before its hook_z: stop after the last receiver layer's.
        self.adapter.run_patched(tokens, hooks, stop_at=z_names[-1])
        # Run 3: clean prompts, only the receivers' q/k/v replaced by run 2's.
        patch_hooks: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {}
        for name in recv_names:
            heads = [h for layer, h, kind in receivers if kinds[kind].hook_name(layer) == name]
            act = got[name]
            mask = torch.zeros((1, 1, act.shape[2], 1), dtype=torch.bool, device=act.device)
            mask[0, 0, heads] = True
            patch_hooks[name] = _copywise(act, mask)
        return self._score(self._logits(tokens, patch_hooks), n_copies)

    # ----- running and scoring ---------------------------------------------------------------------

    def _logits(self, tokens: torch.Tensor, hooks: dict[str, Callable[[torch.Tensor], Any]]) -> torch.Tensor:
        """Logits at the metric's position ``[batch, vocab]`` (readout) or the full logits."""
        if not self.readout:
            logits = self.adapter.run_patched(tokens, hooks)
            assert logits is not None
            return logits
        final: dict[str, torch.Tensor] = {}
        hooks = dict(hooks)
        prev = hooks.get(self._final)
        hooks[self._final] = _recorder(final, "resid", prev)
        self.adapter.run_patched(tokens, hooks, stop_at=self._final)
        return self._readout(final["resid"])

    def _readout(self, resid: torch.Tensor) -> torch.Tensor:
        metric = self.metric
        assert isinstance(metric, LogitMetric)
        n = self.n
        copies = resid.shape[0] // n
        if isinstance(metric.position, torch.Tensor):
            pos = metric.position.to(resid.device).repeat(copies)
            picked = resid[torch.arange(resid.shape[0], device=resid.device), pos]
        else:
            picked = resid[:, metric.position]
        return self.adapter.unembed(picked)

    def _score(self, logits: torch.Tensor, copies: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``([copies], [copies, n] or None)`` metric values of a batch of ``copies`` x ``n`` prompts."""
        metric = self.metric
        n = self.n
        if isinstance(metric, LogitMetric):
            at = logits if self.readout else _at_position(metric, logits, n)
            per_prompt = torch.stack([metric.per_prompt_at(at[k * n : (k + 1) * n]) for k in range(copies)])
            per_prompt = per_prompt.float().cpu()
            if not bool(torch.isfinite(per_prompt).all()):
                raise ValueError("the metric gave NaN or inf on a patched run: check the model and the metric")
            return per_prompt.mean(1), per_prompt
        values = torch.stack([metric(logits[k * n : (k + 1) * n]).detach().float().cpu() for k in range(copies)])
        return values, None

    def _readout_matches(self) -> bool:
        """Whether the last residual stream through the model's own readout gives its logits (else use full logits)."""
        try:
            self.adapter.check_readout("reading the metric's position only")
        except ValueError:
            return False
        final: dict[str, torch.Tensor] = {}
        logits = self.adapter.run_patched(self.corrupted, {self._final: _recorder(final, "resid", None)})
        assert logits is not None and isinstance(self.metric, LogitMetric)
        ours = self._readout(final["resid"]).float()
        theirs = _at_position(self.metric, logits, self.n).float()
        tol = 1e-3 if logits.dtype == torch.float32 else 5e-2
        return bool(torch.allclose(ours, theirs, atol=tol * max(1.0, float(theirs.abs().max())), rtol=0))


def _at_position(metric: LogitMetric, logits: torch.Tensor, n: int) -> torch.Tensor:
    """``[copies*n, seq, vocab]`` -> ``[copies*n, vocab]`` at the metric's position in each prompt."""
    if isinstance(metric.position, torch.Tensor):
        pos = metric.position.to(logits.device).repeat(logits.shape[0] // n)
        return logits[torch.arange(logits.shape[0], device=logits.device), pos]
    return logits[:, metric.position]


def _replacer(source: torch.Tensor, mask: torch.Tensor, copies: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """Copy ``k`` of a ``[copies*n, ...]`` activation takes ``source [n, ...]`` where ``mask[k]`` is True."""

    def fn(t: torch.Tensor) -> torch.Tensor:
        view = t.reshape(copies, -1, *t.shape[1:])
        return torch.where(mask[:, None], source[None].to(t.dtype), view).reshape(t.shape)

    return fn


def _freezer(
    clean: torch.Tensor, corrupted: torch.Tensor, mask: torch.Tensor, copies: int
) -> Callable[[torch.Tensor], torch.Tensor]:
    """Every copy takes the clean activation, except where ``mask[k]`` says: there the corrupted one."""

    def fn(t: torch.Tensor) -> torch.Tensor:
        out = torch.where(mask[:, None], corrupted[None].to(t.dtype), clean[None].to(t.dtype))
        return out.expand(copies, *clean.shape).reshape(t.shape)

    return fn


def _copywise(source: torch.Tensor, mask: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    """Replace the activation by ``source`` (same batch) where ``mask`` (broadcast) is True."""

    def fn(t: torch.Tensor) -> torch.Tensor:
        return torch.where(mask, source.to(t.dtype), t)

    return fn


def _recorder(
    into: dict[str, torch.Tensor], key: str, then: Callable[[torch.Tensor], torch.Tensor | None] | None
) -> Callable[[torch.Tensor], torch.Tensor | None]:
    """Keep the activation (after ``then``, if another function also patches this hook)."""

    def fn(t: torch.Tensor) -> torch.Tensor | None:
        out = then(t) if then is not None else None
        into[key] = (out if out is not None else t).detach()
        return out

    return fn
