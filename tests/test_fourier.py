"""The Fourier analyses (analysis/fourier.py): planted frequencies come back exactly, and the restricted / excluded
losses equal a brute-force least-squares version of the paper's ablations on a small p."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mi_widgets.analysis import fourier

P = 13


def grid(p: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """a, b ([p*p], rows a*p+b) and c ([p]) as float64."""
    x = torch.arange(p, dtype=torch.float64)
    return x.repeat_interleave(p), x.repeat(p), x


def planted_logits(p: int, freqs: dict[int, tuple[float, float]]) -> torch.Tensor:
    """sum_k alpha cos(w(a+b-c)) + beta sin(w(a+b-c)) over all pairs: the paper's algorithm, exactly."""
    a, b, c = grid(p)
    n = a[:, None] + b[:, None] - c[None, :]
    out = torch.zeros(p * p, p, dtype=torch.float64)
    for k, (alpha, beta) in freqs.items():
        w = 2 * math.pi * k / p
        out += alpha * torch.cos(w * n) + beta * torch.sin(w * n)
    return out


def test_fourier_basis_is_orthonormal() -> None:
    for p in (5, 13, 113):
        basis = fourier.fourier_basis(p)
        assert torch.allclose(basis @ basis.T, torch.eye(p), atol=1e-5)


def test_embedding_norms_find_planted_frequencies() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.arange(P, dtype=torch.float64)
    embed = torch.zeros(P + 1, 8, dtype=torch.float64)
    for k, scale in ((2, 3.0), (5, 1.0)):
        u, v = torch.randn(2, 8, generator=g, dtype=torch.float64)
        embed[:P] += scale * (
            torch.cos(2 * math.pi * k * x / P)[:, None] * u + torch.sin(2 * math.pi * k * x / P)[:, None] * v
        )
    embed[P] = 100.0  # the "=" row is left out
    norms = fourier.fourier_norms(embed, P)
    assert norms.shape == ((P + 1) // 2,)
    assert fourier.top_frequencies(norms, 2) == [2, 5]
    others = [k for k in range(len(norms)) if k not in (2, 5)]
    assert float(norms[others].abs().max()) < 1e-5
    # Parseval: the per-frequency norms hold the embedding's whole squared norm.
    assert float(norms.double().pow(2).sum()) == pytest.approx(float(embed[:P].pow(2).sum()), rel=1e-5)


def test_logit_fractions_and_key_part_recover_planted_frequencies() -> None:
    planted = {3: (2.0, 0.5), 4: (1.0, -1.0)}
    logits = planted_logits(P, planted) + 7.0  # a constant shift changes nothing
    fractions = fourier.logit_frequency_fractions(logits, P)
    share = {k: (a * a + b * b) for k, (a, b) in planted.items()}
    total = sum(share.values())
    for k in range(1, len(fractions)):
        assert float(fractions[k]) == pytest.approx(share.get(k, 0.0) / total, abs=1e-6)
    part = fourier.key_frequency_logits(logits, [3, 4], P)
    assert torch.allclose(part, logits - 7.0, atol=1e-9)
    assert torch.allclose(fourier.key_frequency_logits(logits, [3], P), planted_logits(P, {3: planted[3]}), atol=1e-9)


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 10_000), st.sampled_from([5, 7, 11]))
def test_restricted_and_excluded_logits_equal_brute_force_least_squares(seed: int, p: int) -> None:
    """The paper's ablations, done the slow way: for every answer c, a least-squares fit over the p*p pairs."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(p * p, p, generator=g, dtype=torch.float64)
    n_keys = int(torch.randint(1, fourier.n_frequencies(p) + 1, (1,), generator=g))
    freqs = sorted(torch.randperm(fourier.n_frequencies(p), generator=g)[:n_keys].add(1).tolist())
    a, b, _ = grid(p)
    waves = []
    for k in freqs:
        waves += [torch.cos(2 * math.pi * k * (a + b) / p), torch.sin(2 * math.pi * k * (a + b) / p)]
    key = torch.stack(waves, dim=1)  # [p*p, 2K]
    with_constant = torch.cat([torch.ones(p * p, 1, dtype=torch.float64), key], dim=1)
    restricted = with_constant @ torch.linalg.lstsq(with_constant, logits).solution
    excluded = logits - key @ torch.linalg.lstsq(key, logits).solution
    assert torch.allclose(fourier.restricted_logits(logits, freqs, p), restricted, atol=1e-9)
    assert torch.allclose(fourier.excluded_logits(logits, freqs, p), excluded, atol=1e-9)

    labels = ((a + b) % p).long()
    train = torch.rand(p * p, generator=g) < 0.3
    train[0] = True
    measures = fourier.progress_measures(logits, labels, train, freqs, p)

    def ce(x: torch.Tensor, y: torch.Tensor) -> float:  # cross-entropy written out
        return float(sum(torch.logsumexp(x[i], 0) - x[i, y[i]] for i in range(len(y))) / len(y))

    assert measures["restricted_loss"] == pytest.approx(ce(restricted, labels), rel=1e-9)
    assert measures["excluded_loss"] == pytest.approx(ce(excluded[train], labels[train]), rel=1e-9)
    assert measures["train_loss"] == pytest.approx(ce(logits[train], labels[train]), rel=1e-9)


def test_progress_measures_on_the_algorithm_itself() -> None:
    """Logits that ARE the algorithm: restricted logits are the logits, and removing the key frequencies leaves
    nothing to fit the training data with."""
    p = 31
    logits = planted_logits(p, {2: (6.0, 0.0), 9: (4.0, 0.0), 14: (5.0, 0.0)})
    a, b, _ = grid(p)
    labels = ((a + b) % p).long()
    train = torch.zeros(p * p, dtype=torch.bool)
    train[::3] = True
    m = fourier.progress_measures(logits, labels, train, [2, 9, 14], p)
    assert m["train_acc"] == m["test_acc"] == 1.0
    assert m["restricted_loss"] == pytest.approx(float(torch.nn.functional.cross_entropy(logits, labels)), rel=1e-9)
    assert m["excluded_loss"] == pytest.approx(math.log(p), rel=1e-9)  # all logits 0: uniform
    assert m["key_fraction"] == pytest.approx(1.0, abs=1e-6)
    # With one key frequency missing, the restricted loss is worse and the excluded part still holds it.
    partial = fourier.progress_measures(logits, labels, train, [2, 9], p)
    assert partial["restricted_loss"] > m["restricted_loss"]
    assert partial["excluded_loss"] < math.log(p)


def test_neuron_frequencies_recover_planted_neurons() -> None:
    p = 17
    a, b, _ = grid(p)
    w = [2 * math.pi * k / p for k in range(9)]
    acts = torch.stack(
        [
            torch.cos(w[3] * a) * torch.cos(w[3] * b) + 0.5 * torch.sin(w[3] * a),  # frequency 3 only
            torch.relu(torch.cos(w[5] * (a + b))),  # ReLU of a wave: mostly frequency 5 (and harmonics)
            torch.cos(w[2] * a) + 2.0 * torch.cos(w[7] * b),  # 1/5 and 4/5 of the variance
            torch.full((p * p,), 3.0, dtype=torch.float64),  # no variance: dead
        ],
        dim=1,
    )
    frequency, fraction, shares = fourier.neuron_frequencies(acts, p)
    assert frequency.tolist() == [3, 5, 7, 0]
    assert float(fraction[0]) == pytest.approx(1.0, abs=1e-5)
    assert float(fraction[1]) > 0.5
    assert float(shares[2, 2]) == pytest.approx(0.2, abs=1e-5)
    assert float(fraction[2]) == pytest.approx(0.8, abs=1e-5)
    assert float(fraction[3]) == 0.0
    assert torch.allclose(shares[:, :3].sum(0), torch.ones(3), atol=1e-5)  # every non-constant term has one frequency


def test_key_frequencies_are_the_neuron_clusters() -> None:
    frequency = torch.tensor([3] * 10 + [7] * 20 + [5] + [2] * 69 + [0] * 10)
    fraction = torch.tensor([0.9] * 31 + [0.3] * 69 + [0.0] * 10)  # the 69 on frequency 2 are not clear
    assert fourier.neuron_key_frequencies(frequency, fraction) == [7, 3]  # 5 has one neuron: under 2%
    assert fourier.neuron_key_frequencies(frequency, fraction, min_share=0.005) == [7, 3, 5]
    assert fourier.neuron_key_frequencies(frequency, torch.zeros(110)) == []


def test_shape_errors_say_what_was_expected() -> None:
    with pytest.raises(ValueError, match=r"\[p\*p, p\] = \[169, 13\], got \[10, 13\]"):
        fourier.logit_frequency_fractions(torch.zeros(10, 13), 13)
    with pytest.raises(ValueError, match=r"\[p\*p, n\] = \[169, n\]"):
        fourier.neuron_frequencies(torch.zeros(10, 4), 13)


@pytest.mark.parametrize("freqs", [[3, 3], [0, 2], [7], [1.5], [True]])
def test_frequencies_must_be_distinct_and_in_range(freqs: list[Any]) -> None:
    logits = torch.zeros(13 * 13, 13)
    labels, mask = fourier.all_pairs(13)[1], torch.ones(169, dtype=torch.bool)
    for call in (
        lambda: fourier.key_frequency_logits(logits, freqs, 13),
        lambda: fourier.restricted_logits(logits, freqs, 13),
        lambda: fourier.progress_measures(logits, labels, mask, freqs, 13),
    ):
        with pytest.raises(ValueError, match=r"distinct integers in 1\.\.6 \(p = 13\), got"):
            call()
    assert fourier.check_frequencies([np.int64(2), 6], 13) == [2, 6]


def test_all_pairs_rows_and_primes() -> None:
    tokens, labels = fourier.all_pairs(5)
    assert tokens[7].tolist() == [1, 2, 5] and int(labels[7]) == 3
    assert fourier.all_pairs(5, equals=9)[0][0].tolist() == [0, 0, 9]
    assert [n for n in range(20) if fourier.is_prime(n)] == [2, 3, 5, 7, 11, 13, 17, 19]
