"""Activation patching maths: metrics, components, masks, normalisation, attribution and agreement.

Tensors in, tensors out (the forward passes are :mod:`mi_widgets.capture.patching`'s). The
conventions follow TransformerLens's ``transformer_lens.patching`` so results can be checked
against it: *denoising* patches (run the corrupted prompts, put the clean activation of one
component back) and a metric of the logits that is a scalar per run. ``normalise`` maps the
corrupted run's metric to 0 and the clean run's to 1.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

__all__ = [
    "COMPONENTS",
    "Component",
    "FunctionMetric",
    "LogitDiff",
    "LogitMetric",
    "AnswerProb",
    "agreement",
    "answer_prob",
    "as_metric",
    "attribution_scores",
    "component",
    "logit_diff",
    "normalise",
    "patch_mask",
]


# ----- metrics ---------------------------------------------------------------------------------


def _check_metric_value(value: Any, what: str) -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        value = torch.as_tensor(value, dtype=torch.float32)
    if value.numel() != 1:
        raise ValueError(f"{what} must return a scalar (one number for the batch), got shape {list(value.shape)}")
    if not bool(torch.isfinite(value.detach()).all()):
        raise ValueError(f"{what} returned {float(value.detach().reshape(()))}: expected a finite number")
    return value.reshape(())


class LogitMetric:
    """A metric read from the logits at one position of each prompt (mean over prompts).

    Knowing the position lets a patching run unembed only that position, and ``per_prompt`` gives
    each prompt's value (a click in the view shows them).
    """

    name = "metric"

    def __init__(self, position: int | torch.Tensor = -1) -> None:
        self.position = position

    def at_position(self, logits: torch.Tensor) -> torch.Tensor:
        """``[n, seq, vocab]`` logits -> ``[n, vocab]`` at each prompt's position."""
        if logits.ndim != 3:
            raise ValueError(f"expected logits [batch, position, vocab], got shape {list(logits.shape)}")
        if isinstance(self.position, torch.Tensor):
            rows = torch.arange(logits.shape[0], device=logits.device)
            return logits[rows, self.position.to(logits.device)]
        return logits[:, self.position]

    def per_prompt_at(self, logits_at: torch.Tensor) -> torch.Tensor:
        """``[n, vocab]`` logits at the metric's position -> ``[n]`` values."""
        raise NotImplementedError

    def per_prompt(self, logits: torch.Tensor) -> torch.Tensor:
        return self.per_prompt_at(self.at_position(logits))

    def __call__(self, logits: torch.Tensor) -> torch.Tensor:
        return self.per_prompt(logits).mean()


class LogitDiff(LogitMetric):
    """``logit[answer] - logit[wrong]`` per prompt (IOI: IO minus subject)."""

    name = "logit difference"

    def __init__(self, answers: torch.Tensor, wrong: torch.Tensor, position: int | torch.Tensor = -1) -> None:
        super().__init__(position)
        self.answers = _token_ids(answers, "answers")
        self.wrong = _token_ids(wrong, "wrong")
        if self.answers.shape != self.wrong.shape:
            raise ValueError(
                f"answers and wrong must have one token per prompt each, got {len(self.answers)} and {len(self.wrong)}"
            )

    def per_prompt_at(self, logits_at: torch.Tensor) -> torch.Tensor:
        _check_rows(logits_at, len(self.answers))
        a = self.answers.to(logits_at.device)[:, None]
        w = self.wrong.to(logits_at.device)[:, None]
        return (logits_at.gather(-1, a) - logits_at.gather(-1, w))[:, 0]


class AnswerProb(LogitMetric):
    """The probability of the answer token per prompt."""

    name = "answer probability"

    def __init__(self, answers: torch.Tensor, position: int | torch.Tensor = -1) -> None:
        super().__init__(position)
        self.answers = _token_ids(answers, "answers")

    def per_prompt_at(self, logits_at: torch.Tensor) -> torch.Tensor:
        _check_rows(logits_at, len(self.answers))
        probs = logits_at.float().softmax(-1)
        return probs.gather(-1, self.answers.to(logits_at.device)[:, None])[:, 0]


class FunctionMetric:
    """A user's function of the full logits ``[n, seq, vocab] -> scalar``: no per-prompt values."""

    per_prompt = None

    def __init__(self, fn: Callable[[torch.Tensor], Any]) -> None:
        self.fn = fn
        self.name = getattr(fn, "__name__", "metric")

    def __call__(self, logits: torch.Tensor) -> torch.Tensor:
        return _check_metric_value(self.fn(logits), f"the metric {self.name}")


def logit_diff(answers: Any, wrong: Any, position: int | torch.Tensor = -1) -> LogitDiff:
    """Metric: mean ``logit[answer] - logit[wrong]`` at ``position`` (a per-prompt tensor works too)."""
    return LogitDiff(answers, wrong, position)


def answer_prob(answers: Any, position: int | torch.Tensor = -1) -> AnswerProb:
    """Metric: mean probability of the answer token at ``position``."""
    return AnswerProb(answers, position)


def as_metric(metric: Any) -> LogitMetric | FunctionMetric:
    """A built-in metric as it is; any other callable ``logits -> scalar`` wrapped and checked."""
    if isinstance(metric, (LogitMetric, FunctionMetric)):
        return metric
    if not callable(metric):
        raise TypeError(
            "metric must be mw.logit_diff(...), mw.answer_prob(...) or a function of the logits "
            f"[batch, position, vocab] returning a scalar, got {type(metric).__name__}"
        )
    return FunctionMetric(metric)


def _token_ids(values: Any, what: str) -> torch.Tensor:
    ids = torch.as_tensor(values)
    if ids.ndim == 0:
        ids = ids[None]
    if ids.ndim != 1 or ids.dtype.is_floating_point or ids.dtype == torch.bool:
        raise ValueError(f"{what} must be one integer token id per prompt ([n]), got {ids.dtype} {list(ids.shape)}")
    return ids.long()


def _check_rows(logits_at: torch.Tensor, n: int) -> None:
    if logits_at.shape[0] != n:
        raise ValueError(f"the metric has {n} answers but the logits have {logits_at.shape[0]} prompts")


def normalise(values: torch.Tensor, clean: float, corrupted: float) -> torch.Tensor:
    """``(values - corrupted) / (clean - corrupted)``: 0 is the corrupted run, 1 the clean run."""
    span = clean - corrupted
    if not abs(span) > 1e-6 * max(1.0, abs(clean), abs(corrupted)):
        raise ValueError(
            f"the metric is {clean:.4g} on the clean prompts and {corrupted:.4g} on the corrupted ones: "
            "patching needs a metric that tells them apart"
        )
    return (values - corrupted) / span


# ----- components ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Component:
    """What one kind of patch replaces, and how its results are laid out.

    ``hook`` is the per-layer hook; ``dims`` names the activation's dims after the batch
    (``pos``, ``head``, ``query``, ``key``, ``d``); ``index`` names which of them one patch
    picks (besides the layer); ``grid`` is the displayed ``(rows, cols)``; ``shape`` of the
    results follows TransformerLens (``[layer, pos]``, ``[layer, head]``, ``[layer, pos, head]``).
    """

    name: str
    title: str
    hook: str
    dims: tuple[str, ...]
    index: tuple[str, ...]
    rows: str
    cols: str

    def hook_name(self, layer: int) -> str:
        return self.hook.format(layer=layer)


COMPONENTS: dict[str, Component] = {
    c.name: c
    for c in (
        Component("resid_pre", "residual stream (layer input)", "blocks.{layer}.hook_resid_pre",
                  ("pos", "d"), ("pos",), "layer", "position"),
        Component("attn_out", "attention output", "blocks.{layer}.hook_attn_out",
                  ("pos", "d"), ("pos",), "layer", "position"),
        Component("mlp_out", "MLP output", "blocks.{layer}.hook_mlp_out",
                  ("pos", "d"), ("pos",), "layer", "position"),
        Component("head_out", "head output (all positions)", "blocks.{layer}.attn.hook_z",
                  ("pos", "head", "d"), ("head",), "layer", "head"),
        Component("head_out_pos", "head output by position", "blocks.{layer}.attn.hook_z",
                  ("pos", "head", "d"), ("pos", "head"), "layer_head", "position"),
        Component("q", "head queries", "blocks.{layer}.attn.hook_q",
                  ("pos", "head", "d"), ("head",), "layer", "head"),
        Component("k", "head keys", "blocks.{layer}.attn.hook_k",
                  ("pos", "head", "d"), ("head",), "layer", "head"),
        Component("v", "head values", "blocks.{layer}.attn.hook_v",
                  ("pos", "head", "d"), ("head",), "layer", "head"),
        Component("pattern", "attention pattern", "blocks.{layer}.attn.hook_pattern",
                  ("head", "query", "key"), ("head",), "layer", "head"),
    )
}  # fmt: skip


def component(name: str) -> Component:
    """The component called ``name``, or a ValueError that lists them."""
    try:
        return COMPONENTS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown component {name!r}; components are {', '.join(COMPONENTS)}") from None


def patch_mask(comp: Component, indices: Sequence[Sequence[int] | None], act_shape: Sequence[int]) -> torch.Tensor:
    """Boolean mask ``[K, *act_shape]`` (``act_shape`` without the batch), True where copy ``k`` patches.

    ``indices[k]`` holds the ``comp.index`` values of copy ``k`` (e.g. ``(pos,)`` or ``(pos, head)``),
    or None where copy ``k`` patches nothing here. The mask broadcasts: dims not indexed have size 1.
    """
    shape = [len(indices)] + [1] * len(comp.dims)
    for name in comp.index:
        shape[1 + comp.dims.index(name)] = act_shape[comp.dims.index(name)]
    mask = torch.zeros(shape, dtype=torch.bool)
    for k, index in enumerate(indices):
        if index is None:
            continue
        where: list[Any] = [k] + [0] * len(comp.dims)
        for name, value in zip(comp.index, index, strict=True):
            where[1 + comp.dims.index(name)] = int(value)
        mask[tuple(where)] = True
    return mask


def attribution_scores(comp: Component, diff: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """Per-prompt attribution ``(clean - corrupted) * grad`` summed over what one patch covers.

    ``diff`` and ``grad`` are ``[n, *dims]`` for one layer; the result is ``[n, *index]`` in
    ``comp.index`` order (e.g. ``[n, pos]``, ``[n, head]``, ``[n, pos, head]``).
    """
    prod = diff.float() * grad.float()
    keep = [comp.dims.index(name) + 1 for name in comp.index]
    drop = [d for d in range(1, prod.ndim) if d not in keep]
    summed = prod.sum(dim=drop) if drop else prod
    # After summing, the kept dims are in dims order; put them in index order.
    order = sorted(keep)
    perm = [0] + [1 + order.index(d) for d in keep]
    return summed.permute(perm)


def agreement(
    exact: torch.Tensor, estimate: torch.Tensor, k: int = 5
) -> tuple[float | None, list[tuple[int, float, float]]]:
    """Pearson correlation of two result grids over the cells both have, and the ``k`` cells where they differ most.

    Returns ``(correlation or None if under 3 cells or no spread, [(flat index, exact, estimate)])``.
    """
    a = exact.flatten().double()
    b = estimate.flatten().double()
    both = torch.isfinite(a) & torch.isfinite(b)
    if int(both.sum()) < 3:
        return None, []
    x, y = a[both], b[both]
    x0, y0 = x - x.mean(), y - y.mean()
    denom = float(x0.norm() * y0.norm())
    corr = float((x0 * y0).sum()) / denom if denom > 0 else None
    gap = torch.where(both, (a - b).abs(), torch.full_like(a, -1.0))
    order = gap.argsort(descending=True)[: min(k, int(both.sum()))]
    return corr, [(int(i), float(a[i]), float(b[i])) for i in order]
