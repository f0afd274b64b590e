"""CircuitsVis's ``circuitsvis.topk_tokens``, returning :class:`ActivationView`.

CircuitsVis tabulates, per sample and layer, each neuron's ``max_k`` top and bottom tokens. The view shows the same
data whole: each sample is a prompt whose every token is coloured by the selected neuron (the top tokens are the
reddest, the bottom ones the bluest), and hovering a token lists the neurons most active there. ``max_k`` bounded
what CircuitsVis sent to the page; the view sends one unit's values on demand and needs no bound, so a ``max_k``
other than the default warns that it changes nothing.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import torch

from ..capture.arrays import as_float_tensor, check_finite
from ..widgets.activation import ActivationView

__all__ = ["topk_tokens"]


def topk_tokens(
    tokens: list[list[str]],
    activations: list[np.ndarray],
    max_k: int = 10,
    first_dimension_name: str = "Layer",
    third_dimension_name: str = "Neuron",
    sample_labels: list[str] | None = None,
    first_dimension_labels: list[str] | None = None,
) -> ActivationView:
    """Per sample ``activations [n_layers, n_tokens, n_neurons]`` (a list, one per token list of ``tokens``)."""
    if isinstance(max_k, bool) or not isinstance(max_k, (int, np.integer)) or max_k < 1:
        raise ValueError(f"max_k must be a positive integer, got {max_k!r}")
    if max_k != 10:
        warnings.warn(
            f"max_k={max_k} changes nothing here: the view colours every token by the selected neuron, so a "
            "neuron's top and bottom tokens are all shown (CircuitsVis's max_k only bounded what it sent)",
            UserWarning,
            stacklevel=2,
        )
    if not isinstance(activations, (list, tuple)):
        raise TypeError(
            f"activations must be a list of [n_layers, n_tokens, n_neurons] arrays, got {type(activations).__name__}"
        )
    if len(tokens) != len(activations):
        raise ValueError(f"tokens and activations must be same length: {len(tokens)} and {len(activations)}")
    per_prompt = []
    for i, act in enumerate(activations):
        t = as_float_tensor(act, f"activations[{i}]")
        if t.ndim != 3:
            raise ValueError(
                f"activations must be of the form [n_layers, n_tokens, n_neurons]; activations[{i}] has shape "
                f"{list(t.shape)}"
            )
        per_prompt.append(t.permute(1, 0, 2))  # [n_tokens, n_layers, n_neurons]
    if not per_prompt:
        raise ValueError("topk_tokens needs at least one sample")
    for i, t in enumerate(per_prompt):
        check_finite(t, f"activations[{i}]", ("token", "layer", "neuron"))
    # CircuitsVis lets samples differ in layers and neurons; the view's prompts share one shape, so a sample's
    # missing layers/neurons are NaN (drawn in the "no value" colour, its tooltip says NaN).
    layers = max(int(t.shape[1]) for t in per_prompt)
    width = max(int(t.shape[2]) for t in per_prompt)
    missing = any((t.shape[1], t.shape[2]) != (layers, width) for t in per_prompt)
    if missing:
        padded = []
        for t in per_prompt:
            full = torch.full((t.shape[0], layers, width), math.nan, dtype=torch.float32, device=t.device)
            full[:, : t.shape[1], : t.shape[2]] = t
            padded.append(full)
        per_prompt = padded
    return ActivationView.from_activations(
        tokens,
        per_prompt,
        layer_name=first_dimension_name,
        unit_name=third_dimension_name,
        layer_labels=first_dimension_labels,
        prompt_labels=sample_labels,
        _missing_ok=missing,
    )
