"""RunningHistogram: streamed, bounded-memory histograms equal a brute-force histogram on the final range."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mi_widgets.analysis.histogram import RunningHistogram

SPECIAL = [0.0, -0.0, float("nan"), float("inf"), float("-inf")]


def brute_force(batches: list[torch.Tensor], n_units: int, bins: int, hi: list[float]) -> torch.Tensor:
    """Counts of every finite positive value per unit in ``bins`` equal bins of ``[0, hi[unit])``."""
    counts = torch.zeros((n_units, bins), dtype=torch.long)
    for batch in batches:
        for row in batch.reshape(-1, n_units).tolist():
            for unit, x in enumerate(row):
                if math.isfinite(x) and x > 0:
                    # x (float32) times a power of two is exact in float64: no rounding at bin edges
                    index = math.floor(x * bins / hi[unit])
                    assert 0 <= index < bins, (x, hi[unit])
                    counts[unit, index] += 1
    return counts


def positives(batches: list[torch.Tensor], n_units: int) -> list[list[float]]:
    per_unit: list[list[float]] = [[] for _ in range(n_units)]
    for batch in batches:
        for row in batch.reshape(-1, n_units).tolist():
            for unit, x in enumerate(row):
                if math.isfinite(x) and x > 0:
                    per_unit[unit].append(x)
    return per_unit


def smallest_power_of_two_above(x: float) -> float:
    p = 2.0 ** math.floor(math.log2(x))
    while p <= x:
        p *= 2
    while p / 2 > x:
        p /= 2
    return p


@st.composite
def streams(draw: Any, value: st.SearchStrategy[float]) -> tuple[int, int, list[torch.Tensor]]:
    n_units = draw(st.integers(1, 3))
    bins = draw(st.sampled_from([2, 4, 8, 32]))
    batches = []
    for _ in range(draw(st.integers(1, 5))):
        rows = draw(st.integers(1, 4))
        values = draw(st.lists(value, min_size=rows * n_units, max_size=rows * n_units))
        batches.append(torch.tensor(values, dtype=torch.float32).reshape(rows, n_units))
    return n_units, bins, batches


# Dyadic values (multiples of 1/64, and of 1/4096 for ranges below 1), from 1/4096 to ~47, with
# zeros, negatives and non-finite values mixed in: every x * bins / hi is exact, so values on bin
# edges land in the same bin in the histogram and in the brute force, and the smallest power of two
# above the maximum is unambiguous.
DYADIC = st.one_of(
    st.integers(-200, 3000).map(lambda k: k / 64),
    st.integers(1, 64).map(lambda k: k / 4096),
    st.sampled_from(SPECIAL),
)


@settings(max_examples=200, deadline=None)
@given(streams(DYADIC))
def test_matches_brute_force_on_the_final_range(case: tuple[int, int, list[torch.Tensor]]) -> None:
    n_units, bins, batches = case
    hist = RunningHistogram(n_units, bins)
    for batch in batches:
        hist.update(batch)
    seen = positives(batches, n_units)
    expected_hi = [smallest_power_of_two_above(max(v)) if v else 0.0 for v in seen]
    assert hist.hi.tolist() == expected_hi
    for unit in range(n_units):
        assert hist.edges(unit) == (0.0, expected_hi[unit])
    assert torch.equal(hist.counts, brute_force(batches, n_units, bins, expected_hi))
    assert hist.counts.sum(1).tolist() == [len(v) for v in seen]  # every finite positive value, once


FLOATS = st.one_of(
    st.floats(min_value=2.0**-20, max_value=2.0**20, width=32),
    st.floats(min_value=-(2.0**20), max_value=0, width=32),
    st.sampled_from(SPECIAL),
)


@settings(max_examples=200, deadline=None)
@given(streams(FLOATS))
def test_arbitrary_floats_are_binned_exactly(case: tuple[int, int, list[torch.Tensor]]) -> None:
    """Any float32: the range is a power of two above the maximum and the counts are exact on it."""
    n_units, bins, batches = case
    hist = RunningHistogram(n_units, bins)
    for batch in batches:
        hist.update(batch)
    seen = positives(batches, n_units)
    hi = hist.hi.tolist()
    for unit, values in enumerate(seen):
        if not values:
            assert hi[unit] == 0.0
            continue
        top = max(values)
        assert hi[unit] > top and math.log2(hi[unit]) == int(math.log2(hi[unit]))
        assert hi[unit] <= 2 * smallest_power_of_two_above(top)  # at most one doubling too far (log2 rounding)
    assert torch.equal(hist.counts, brute_force(batches, n_units, bins, hi))


# ----- examples ------------------------------------------------------------------------------------


def test_zeros_negatives_and_non_finite_values_are_not_counted() -> None:
    hist = RunningHistogram(2, bins=4)
    hist.update(torch.tensor([[0.0, -1.0], [float("nan"), float("-inf")], [float("inf"), -0.0]]))
    assert torch.equal(hist.counts, torch.zeros(2, 4, dtype=torch.long))
    assert hist.hi.tolist() == [0.0, 0.0]
    assert hist.edges(0) == (0.0, 0.0)
    hist.update(torch.tensor([[0.5, float("nan")], [float("inf"), 3.0]]))
    assert hist.hi.tolist() == [1.0, 4.0]  # inf neither counts nor stretches the range
    assert hist.counts.tolist() == [[0, 0, 1, 0], [0, 0, 0, 1]]


def test_growth_merges_bins_exactly() -> None:
    hist = RunningHistogram(1, bins=8)
    hist.update(torch.tensor([[0.5], [0.125], [0.875], [0.0625]]))  # hi = 1, bins of width 1/8
    assert hist.edges(0) == (0.0, 1.0)
    assert hist.counts.tolist() == [[1, 1, 0, 0, 1, 0, 0, 1]]
    hist.update(torch.tensor([[1.5]]))  # hi = 2: pairs of bins merge
    assert hist.edges(0) == (0.0, 2.0)
    assert hist.counts.tolist() == [[2, 0, 1, 1, 0, 0, 1, 0]]
    hist.update(torch.tensor([[5.0]]))  # hi = 8: groups of four merge
    assert hist.edges(0) == (0.0, 8.0)
    assert hist.counts.tolist() == [[4, 1, 0, 0, 0, 1, 0, 0]]
    hist.update(torch.tensor([[100.0]]))  # hi = 128: a 16x jump, more than the 8 bins: all into bin 0
    assert hist.edges(0) == (0.0, 128.0)
    assert hist.counts.tolist() == [[6, 0, 0, 0, 0, 0, 1, 0]]


def test_value_equal_to_the_range_doubles_it() -> None:
    hist = RunningHistogram(1, bins=4)
    hist.update(torch.tensor([1.0]))  # a 1-D batch of one value per unit
    assert hist.edges(0) == (0.0, 2.0) and hist.counts.tolist() == [[0, 0, 1, 0]]
    hist.update(torch.tensor([2.0]))  # exactly hi: [0, hi) must grow to hold it
    assert hist.edges(0) == (0.0, 4.0) and hist.counts.tolist() == [[0, 1, 1, 0]]


def test_units_grow_independently_and_leading_axes_are_flattened() -> None:
    hist = RunningHistogram(3, bins=2)
    values = torch.tensor([[[0.25, 3.0, 0.0], [0.75, 1.0, 0.0]], [[0.5, 0.0, 0.0], [0.1, 40.0, 0.0]]])  # [2, 2, 3]
    hist.update(values)
    assert hist.hi.tolist() == [1.0, 64.0, 0.0]
    assert hist.counts.tolist() == [[2, 2], [2, 1], [0, 0]]


@pytest.mark.parametrize("bins", [0, 1, 3, 6, 12, 33, -4])
def test_bins_must_be_a_power_of_two(bins: int) -> None:
    with pytest.raises(ValueError, match=rf"bins must be a power of two >= 2, got {bins}"):
        RunningHistogram(4, bins=bins)


def test_bad_shapes() -> None:
    with pytest.raises(ValueError, match=r"n_units must be at least 1, got 0"):
        RunningHistogram(0)
    hist = RunningHistogram(3, bins=4)
    with pytest.raises(ValueError, match=r"expected values \[\.\.\., 3\], got shape \[4, 2\]"):
        hist.update(torch.ones(4, 2))
    with pytest.raises(ValueError, match=r"expected values \[\.\.\., 3\], got shape \[3, 1\]"):
        hist.update(torch.ones(3, 1))
    assert torch.equal(hist.counts, torch.zeros(3, 4, dtype=torch.long))  # nothing counted by a refused batch
    assert hist.counts.dtype == torch.long and hist.counts.shape == (3, 4)
