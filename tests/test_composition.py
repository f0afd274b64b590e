"""Composition scores: the previous-token head K-composes with the induction heads."""

from __future__ import annotations

from typing import Any

import pytest
import torch

import mi_widgets as mw
from mi_widgets.analysis.composition import composition_scores


@pytest.fixture(scope="module")
def model() -> Any:
    return mw.zoo.load("induction-2l")


def test_previous_token_head_k_composes_most_into_layer_1(model: Any) -> None:
    scan = mw.HeadScan(model, n_batches=2).wait(30)
    prev_head = scan.top("previous_token", k=1)[0][1]
    k_comp = scan.composition("K")
    assert k_comp.shape == (2, 4, 2, 4) and not k_comp.requires_grad
    into_layer_1 = k_comp[0, :, 1, :].mean(-1)  # each layer-0 head -> all layer-1 heads
    assert int(into_layer_1.argmax()) == prev_head
    assert torch.count_nonzero(k_comp[1]) == 0 and torch.count_nonzero(k_comp[0, :, 0]) == 0  # only later layers


def test_modes_and_errors(model: Any) -> None:
    for mode in "QKV":
        assert composition_scores(model, mode).shape == (2, 4, 2, 4)
    with pytest.raises(ValueError, match="mode must be one of Q, K, V"):
        composition_scores(model, "O")
    with pytest.raises(TypeError, match="all_composition_scores"):
        composition_scores(torch.nn.Linear(2, 2))
