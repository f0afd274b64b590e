"""CircuitsVis's ``circuitsvis.topk_samples``, returning :class:`TopExamples`.

Each (zeroth, first) pair, e.g. (layer, neuron), is one unit of the view, named like ``"Layer 0, Neuron 3"``; its
samples are listed best first (by their largest activation), each coloured by that unit. Click a unit to see its
samples (``view.selected = {"neuron": unit}``; units are numbered zeroth-major). Differences from CircuitsVis: one
grid of every unit's best activation instead of two drop-downs, and each sample's colour scale is +-the largest
magnitude among the shown samples.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..widgets.top_examples import TopExamples

__all__ = ["topk_samples"]


def _name(labels: list[str] | None, i: int, name: str | None, what: str) -> str:
    if labels is not None:
        if i >= len(labels):
            raise ValueError(f"{what}_labels has {len(labels)} entries but there are more {what}s ({i + 1} at least)")
        return str(labels[i])
    return f"{name} {i}" if name else str(i)


def topk_samples(
    tokens: list[list[list[list[str]]]],
    activations: list[list[list[list[float]]]],
    zeroth_dimension_name: str | None = "Layer",
    first_dimension_name: str | None = "Neuron",
    zeroth_dimension_labels: list[str] | None = None,
    first_dimension_labels: list[str] | None = None,
) -> TopExamples:
    """``tokens`` and ``activations`` of shape ``[layers x neurons x samples x tokens]`` (nested lists; the
    activations may also be arrays or tensors at any level)."""
    if not isinstance(tokens, Sequence) or isinstance(tokens, str):
        raise TypeError(
            f"tokens must be nested lists [layers x neurons x samples x tokens], got {type(tokens).__name__}"
        )
    if len(activations) != len(tokens):
        raise ValueError(
            f"tokens and activations must have the same zeroth dimension: {len(tokens)} and {len(activations)}"
        )
    unit_tokens: list[Any] = []
    unit_acts: list[Any] = []
    labels: list[str] = []
    for z, (z_tokens, z_acts) in enumerate(zip(tokens, activations)):
        if len(z_acts) != len(z_tokens):
            raise ValueError(
                f"tokens[{z}] has {len(z_tokens)} entries in the first dimension but activations[{z}] has {len(z_acts)}"
            )
        for f, (f_tokens, f_acts) in enumerate(zip(z_tokens, z_acts)):
            unit_tokens.append(f_tokens)
            unit_acts.append(f_acts)
            zeroth = _name(zeroth_dimension_labels, z, zeroth_dimension_name, "zeroth_dimension")
            first = _name(first_dimension_labels, f, first_dimension_name, "first_dimension")
            labels.append(f"{zeroth}, {first}")
    if not unit_tokens:
        raise ValueError("tokens holds no samples: expected [layers x neurons x samples x tokens]")
    source = " x ".join(n for n in (zeroth_dimension_name, first_dimension_name) if n) or "given samples"
    return TopExamples.from_samples(unit_tokens, unit_acts, unit_labels=labels, source=source)
