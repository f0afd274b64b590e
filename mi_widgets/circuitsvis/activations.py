"""Activation visualisations: CircuitsVis's ``circuitsvis.activations``, returning :class:`ActivationView`.

Samples are the view's prompts; the first dimension is its layer axis, the second its unit axis (named as given).
CircuitsVis shows up to 5 samples at a time with a range picker; the view shows every sample. Each unit is coloured
over +-its largest magnitude over all samples (CircuitsVis: min..max of the shown samples). Hover a token for its top
units; click a token or a unit to select it (``view.selected``).
"""

from __future__ import annotations

import numpy as np
import torch

from ..widgets.activation import ActivationView

__all__ = ["text_neuron_activations"]


def text_neuron_activations(
    tokens: list[str] | list[list[str]],
    activations: np.ndarray | torch.Tensor | list[np.ndarray] | list[torch.Tensor],
    first_dimension_name: str | None = "Layer",
    second_dimension_name: str | None = "Neuron",
    first_dimension_labels: list[str] | None = None,
    second_dimension_labels: list[str] | None = None,
) -> ActivationView:
    """Tokens of a text (or of several) coloured by one unit: ``activations [tokens, layers, neurons]`` for one
    text, a list of such arrays for several (``tokens`` a list of token lists)."""
    if not isinstance(activations, (np.ndarray, torch.Tensor, list)):
        raise TypeError(
            f"activations must be of type np.ndarray, torch.Tensor, or list, not {type(activations).__name__}"
        )
    arrays = activations if isinstance(activations, list) else [activations]
    for i, act in enumerate(arrays):
        ndim = getattr(act, "ndim", None)
        if ndim != 3:
            shape = list(act.shape) if hasattr(act, "shape") else type(act).__name__
            raise ValueError(f"activations must be of shape [tokens x layers x neurons]; sample {i} is {shape}")
    return ActivationView.from_activations(
        tokens,
        activations,
        layer_name=first_dimension_name or "",
        unit_name=second_dimension_name or "",
        layer_labels=first_dimension_labels,
        unit_labels=second_dimension_labels,
    )
