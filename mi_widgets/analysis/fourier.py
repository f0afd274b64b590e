"""The Fourier analyses of a modular-addition transformer (Nanda et al. 2023, "Progress measures for grokking").

A model that learned ``(a + b) mod p`` by the paper's algorithm embeds ``a`` and ``b`` as ``cos(w a), sin(w a)``
for a few **key frequencies** ``w = 2 pi k / p`` and reads out ``cos(w (a + b - c))``. Everything here works on
tensors over all ``p * p`` input pairs, row ``a * p + b`` (as :func:`all_pairs` lays them out), on whatever
device they are on:

- :func:`fourier_basis`, :func:`fourier_norms`, :func:`top_frequencies`: the embedding in the Fourier basis.
- :func:`logit_frequency_fractions`, :func:`key_frequency_logits`: how much of the logits each frequency's
  ``cos/sin(w (a + b - c))`` explains.
- :func:`restricted_logits`, :func:`excluded_logits`, :func:`progress_measures`: the paper's progress measures.
- :func:`grokking_phases`: the phases of a training run from its loss/accuracy log.
- :func:`neuron_frequencies`, :func:`neuron_key_frequencies`: each MLP neuron's dominant frequency over the
  ``(a, b)`` grid, and the key frequencies: those that many neurons are clustered on (the paper's way).

Frequencies are ``k = 1 .. (p - 1) // 2``; per-frequency arrays have ``(p + 1) // 2`` entries, entry 0 the
constant component. ``p`` must be odd (every prime but 2 is).
"""

from __future__ import annotations

import math
import operator
from typing import Any

import torch
import torch.nn.functional as F


def n_frequencies(p: int) -> int:
    """How many non-constant frequencies ``0..p-1`` has: ``(p - 1) // 2``."""
    return (p - 1) // 2


def is_prime(n: int) -> bool:
    return n >= 2 and all(n % d for d in range(2, math.isqrt(n) + 1))


def all_pairs(p: int, equals: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Tokens ``[a, b, equals]`` for every pair, row ``a * p + b`` ([p*p, 3]; ``equals`` defaults to ``p``) and
    labels ``(a + b) % p`` ([p*p])."""
    a = torch.arange(p).repeat_interleave(p)
    b = torch.arange(p).repeat(p)
    tokens = torch.stack([a, b, torch.full_like(a, p if equals is None else equals)], dim=1)
    return tokens, (a + b) % p


def fourier_basis(p: int, device: torch.device | str | None = None) -> torch.Tensor:
    """Orthonormal Fourier basis over ``0..p-1`` ([p, p], one basis vector a row): row 0 the constant,
    rows ``2k-1`` / ``2k`` ``cos(2 pi k x / p)`` / ``sin(2 pi k x / p)`` for ``k = 1..(p-1)/2`` (p odd)."""
    x = torch.arange(p, dtype=torch.float64, device=device)
    rows = [torch.ones(p, dtype=torch.float64, device=device)]
    for k in range(1, p // 2 + 1):
        rows += [torch.cos(2 * math.pi * k * x / p), torch.sin(2 * math.pi * k * x / p)]
    basis = torch.stack(rows)
    return (basis / basis.norm(dim=1, keepdim=True)).float()


def _per_frequency(sq: torch.Tensor) -> torch.Tensor:
    """Squared coefficients over the basis rows ``[p, ...]`` summed per frequency ``[(p+1)//2, ...]``."""
    return torch.cat([sq[:1], sq[1:].reshape(-1, 2, *sq.shape[1:]).sum(1)])


def fourier_norms(embed: torch.Tensor, p: int) -> torch.Tensor:
    """[(p+1)//2] norm of each frequency of a token embedding ``W_E[:p]`` ([p(+more), d_model]; rows from ``p`` on,
    e.g. "=", are left out) over the token dimension: entry 0 the constant component, entry ``k`` the square root
    of ``|cos_k . W_E|^2 + |sin_k . W_E|^2`` (:func:`fourier_basis` directions, each a d_model vector)."""
    coef = fourier_basis(p, embed.device) @ embed[:p].float()  # [p, d]
    return _per_frequency(coef.pow(2).sum(-1)).sqrt()


def top_frequencies(norms: torch.Tensor, n: int) -> list[int]:
    """The ``n`` frequencies ``k >= 1`` with the largest ``norms`` (a per-frequency array), largest first."""
    return [int(k) + 1 for k in norms[1:].argsort(descending=True)[:n]]


def _difference_index(p: int, device: torch.device) -> torch.Tensor:
    """``(a + b - c) mod p`` as [p*p, p] (rows ``a * p + b``, columns ``c``)."""
    x = torch.arange(p, device=device)
    return ((x.view(p, 1, 1) + x.view(1, p, 1) - x.view(1, 1, p)) % p).view(p * p, p)


def _difference_profile(logits: torch.Tensor, p: int) -> torch.Tensor:
    """[p] the sum of the logits over each value of ``n = (a + b - c) mod p`` (float64)."""
    n = _difference_index(p, logits.device)
    return torch.zeros(p, dtype=torch.float64, device=logits.device).index_add_(
        0, n.reshape(-1), logits.double().reshape(-1)
    )


def check_frequencies(freqs: list[int], p: int) -> list[int]:
    """``freqs`` as a list of distinct frequencies in ``1..(p-1)/2``, or a ValueError saying what came."""
    given, k = list(freqs), n_frequencies(p)
    try:
        out = [operator.index(f) for f in given if not isinstance(f, bool)]
    except TypeError:
        out = []
    if len(out) != len(given) or len(set(out)) != len(out) or not all(1 <= f <= k for f in out):
        raise ValueError(f"frequencies must be distinct integers in 1..{k} (p = {p}), got {given}")
    return out


def _check_logits(logits: torch.Tensor, p: int) -> None:
    if logits.shape != (p * p, p):
        raise ValueError(f"expected logits over all pairs [p*p, p] = [{p * p}, {p}], got {list(logits.shape)}")


def logit_frequency_fractions(logits: torch.Tensor, p: int) -> torch.Tensor:
    """[(p+1)//2] share of the logits' squared norm along each frequency's ``cos/sin(w (a + b - c))``.

    ``logits`` are [p*p, p] over all pairs (rows ``a * p + b``, columns ``c``), each row centred over ``c`` first
    (softmax ignores a row's mean). For frequency ``k`` the two p^3-vectors ``cos(w (a+b-c))`` and
    ``sin(w (a+b-c))`` are orthogonal to each other and to every other frequency's, with squared norm ``p^3 / 2``;
    entry ``k`` is the squared length of the logits' projection onto them over the centred logits' squared norm.
    Entry 0 is 0 (a function of ``a + b - c`` that is constant is removed by the centring)."""
    _check_logits(logits, p)
    g = _difference_profile(logits, p)
    centred = logits.double() - logits.double().mean(-1, keepdim=True)
    total = centred.pow(2).sum()
    coef = fourier_basis(p, logits.device).double() @ g  # [p]: sum over the grid of L times the unit p-vector
    # The p^3-vector f(n(a,b,c)) for a unit p-vector f has squared norm p^2; so the projection's squared norm is
    # (coef^2) / p^2.
    shares = _per_frequency(coef.pow(2) / p**2) / total.clamp_min(1e-30)
    shares[0] = 0.0
    return shares.float()


def key_frequency_logits(logits: torch.Tensor, freqs: list[int], p: int) -> torch.Tensor:
    """The logits' projection onto ``cos(w (a + b - c))``, ``sin(w (a + b - c))`` for ``freqs`` ([p*p, p] like
    ``logits``): ``sum_k alpha_k cos(w (a+b-c)) + beta_k sin(w (a+b-c))`` with ``alpha_k = <L, cos> / (p^3 / 2)``.
    It depends on ``(a + b - c) mod p`` only and sums to zero over ``c``: the part of the logits that the paper's
    algorithm at these frequencies computes."""
    _check_logits(logits, p)
    freqs = check_frequencies(freqs, p)
    g = _difference_profile(logits, p)
    x = torch.arange(p, dtype=torch.float64, device=logits.device)
    f = torch.zeros(p, dtype=torch.float64, device=logits.device)
    for k in freqs:
        c, s = torch.cos(2 * math.pi * k * x / p), torch.sin(2 * math.pi * k * x / p)
        f += (g @ c) / (p**3 / 2) * c + (g @ s) / (p**3 / 2) * s
    return f[_difference_index(p, logits.device)].to(logits.dtype)


def neuron_key_frequencies(frequency: torch.Tensor, fraction: torch.Tensor, min_share: float = 0.02) -> list[int]:
    """Key frequencies from the neurons (:func:`neuron_frequencies`), as the paper finds them: the frequencies that
    are the dominant one (explaining at least half its variance) of at least ``min_share`` of the neurons, most
    neurons first. Empty while no frequency stands out (early in training)."""
    clear = frequency[(fraction >= 0.5) & (frequency > 0)]
    if clear.numel() == 0:
        return []
    counts = torch.bincount(clear)
    need = max(1.0, min_share * len(frequency))
    return [int(k) for k in counts.argsort(descending=True) if counts[k] >= need]


def _pair_directions(freqs: list[int], p: int, device: torch.device) -> torch.Tensor:
    """[2 * len(freqs), p*p] unit vectors ``cos(w (a + b))``, ``sin(w (a + b))`` over the pairs (row ``a*p + b``)."""
    x = torch.arange(p, dtype=torch.float64, device=device)
    s = (x.view(p, 1) + x.view(1, p)).reshape(-1)
    rows = []
    for k in freqs:
        rows += [torch.cos(2 * math.pi * k * s / p), torch.sin(2 * math.pi * k * s / p)]
    d = torch.stack(rows) if rows else torch.zeros(0, p * p, dtype=torch.float64, device=device)
    return d / d.norm(dim=1, keepdim=True).clamp_min(1e-30)


def _key_pair_part(logits: torch.Tensor, freqs: list[int], p: int) -> torch.Tensor:
    """[p*p, p] float64: the logits' projection over the pairs onto ``cos/sin(w_k (a + b))`` for ``freqs``."""
    d = _pair_directions(check_frequencies(freqs, p), p, logits.device)
    return d.T @ (d @ logits.double())


def restricted_logits(logits: torch.Tensor, freqs: list[int], p: int) -> torch.Tensor:
    """The logits with every non-key frequency ablated: for each answer ``c``, the projection of the logits (as a
    function of the pair) onto the constant and ``cos(w_k (a + b))``, ``sin(w_k (a + b))`` for the key frequencies.

    This is the paper's restricted-loss ablation (Nanda et al. 2023, section 5.1 and its code, which projects the
    logits over the input pairs onto the ``a + b`` directions of each key frequency); we keep the constant
    component (each answer's mean logit over the pairs, the bias correction of the paper's code) so that only
    the non-key frequencies are removed. The paper's algorithm computes exactly such logits
    (``cos(w (a + b - c)) = cos(w (a + b)) cos(w c) + sin(w (a + b)) sin(w c)``)."""
    _check_logits(logits, p)
    part = logits.double().mean(0, keepdim=True) + _key_pair_part(logits, freqs, p)
    return part.to(logits.dtype)


def excluded_logits(logits: torch.Tensor, freqs: list[int], p: int) -> torch.Tensor:
    """The logits with only the key frequencies ablated: the logits minus their projection over the pairs onto
    ``cos(w_k (a + b))``, ``sin(w_k (a + b))`` for the key frequencies (the paper's excluded-loss ablation)."""
    _check_logits(logits, p)
    return (logits.double() - _key_pair_part(logits, freqs, p)).to(logits.dtype)


def progress_measures(
    logits: torch.Tensor, labels: torch.Tensor, train_mask: torch.Tensor, freqs: list[int], p: int
) -> dict[str, float]:
    """Loss, accuracy and the paper's progress measures from the logits over all pairs ([p*p, p]).

    - ``restricted_loss``: cross-entropy over ALL pairs of :func:`restricted_logits` (only the key frequencies
      kept): how well the general algorithm does by itself. Falls before the test loss does.
    - ``excluded_loss``: cross-entropy over the TRAIN pairs of :func:`excluded_logits` (the key frequencies
      removed): how well the model still fits its training data without the algorithm, i.e. by memorising. Rises
      while the circuit forms.
    - ``key_fraction``: :func:`logit_frequency_fractions` summed over ``freqs``: the share of the (centred) logits
      that ``cos/sin(w (a + b - c))`` at the key frequencies explains.
    """
    _check_logits(logits, p)
    freqs = check_frequencies(freqs, p)
    x = logits.double()
    train = train_mask.to(x.device)
    y = labels.to(x.device)
    fractions = logit_frequency_fractions(x, p)
    return {
        "train_loss": float(F.cross_entropy(x[train], y[train])),
        "test_loss": float(F.cross_entropy(x[~train], y[~train])) if bool((~train).any()) else math.nan,
        "train_acc": float((x[train].argmax(-1) == y[train]).double().mean()),
        "test_acc": float((x[~train].argmax(-1) == y[~train]).double().mean()) if bool((~train).any()) else math.nan,
        "restricted_loss": float(F.cross_entropy(restricted_logits(x, freqs, p), y)),
        "excluded_loss": float(F.cross_entropy(excluded_logits(x, freqs, p)[train], y[train])),
        "key_fraction": float(fractions[freqs].sum()) if freqs else 0.0,
    }


def neuron_frequencies(acts: torch.Tensor, p: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Each neuron's dominant frequency over the ``(a, b)`` grid.

    ``acts`` [p*p, n] are the neurons' activations on every pair (row ``a * p + b``). Each neuron's ``p x p`` grid
    is expressed in the 2D Fourier basis (:func:`fourier_basis` on ``a`` and on ``b``); frequency ``k`` owns the
    terms built from it alone: linear in ``a`` or ``b`` (``cos/sin(w a)``, ``cos/sin(w b)``) and quadratic
    (``cos(w a) cos(w b)``, ``cos(w a) sin(w b)``, ...), as in the paper's neuron clustering. Returns
    ``(frequency [n] int64, fraction [n], shares [(p+1)//2, n])``: the frequency with the largest share of the
    neuron's variance (the squared norm without the constant term), that share, and every frequency's share.
    A neuron without variance gets frequency 0 and fraction 0."""
    n = acts.shape[-1]
    if acts.shape[0] != p * p:
        raise ValueError(f"expected activations over all pairs [p*p, n] = [{p * p}, n], got {list(acts.shape)}")
    basis = fourier_basis(p, acts.device)
    grid = acts.float().reshape(p, p, n)
    # basis @ grid @ basis.T for every neuron, as two plain matmuls (einsum picks a slower order)
    coef = (basis @ grid.reshape(p, p * n)).reshape(p, p, n).transpose(0, 1)  # [b, i, n]
    coef = (basis @ coef.reshape(p, p * n)).reshape(p, p, n).transpose(0, 1)  # [i, j, n]
    sq = coef.pow(2)
    sq[0, 0] = 0.0  # the constant term is not variance
    total = sq.sum((0, 1))
    k = n_frequencies(p)
    shares = torch.zeros(k + 1, n, device=acts.device)
    for f in range(1, k + 1):
        rows = [2 * f - 1, 2 * f]
        own = sq[rows][:, rows].sum((0, 1)) + sq[0, rows].sum(0) + sq[rows, 0].sum(0)
        shares[f] = own
    shares = shares / total.clamp_min(1e-30)
    fraction, frequency = shares.max(0)
    dead = total <= 1e-12 * total.max().clamp_min(1e-30)
    frequency = torch.where(dead, torch.zeros_like(frequency), frequency)
    fraction = torch.where(dead, torch.zeros_like(fraction), fraction)
    return frequency, fraction, shares


PHASES = ("memorisation", "circuit formation", "cleanup", "generalised")


# When each phase ends, from a log row (step, train_loss, test_loss, train_acc, test_acc): train accuracy 100%,
# test accuracy 50%, test accuracy 99%.
PHASE_ENDS = (lambda r: r[3] >= 0.9995, lambda r: r[4] >= 0.5, lambda r: r[4] >= 0.99)


def advance_phase_ends(ends: list[int], row: tuple[float, ...]) -> None:
    """Append to ``ends`` the step of every phase that ``row`` (the next log row) ends; one row can end several."""
    while len(ends) < len(PHASE_ENDS) and PHASE_ENDS[len(ends)](row):
        ends.append(int(row[0]))


def phases_from_ends(start: int, ends: list[int]) -> list[dict[str, Any]]:
    """``[{"name", "start", "end"}]`` for a run that began at ``start`` with the phase ends found so far."""
    out: list[dict[str, Any]] = []
    for name, end in zip(PHASES, ends):
        out.append({"name": name, "start": start, "end": end})
        start = end
    out.append({"name": PHASES[len(ends)], "start": start, "end": None})
    return out


def grokking_phases(rows: list[tuple[float, ...]]) -> list[dict[str, Any]]:
    """The training phases from the log rows ``(step, train_loss, test_loss, train_acc, test_acc)``.

    Markers, not the paper's hand-picked boundaries: memorisation lasts until train accuracy first reaches
    100%; circuit formation until test accuracy first reaches 50% (the excluded loss rises and the restricted
    loss falls meanwhile, while test accuracy stays low); cleanup until test accuracy first reaches 99%; after
    that the model has generalised."""
    if not rows:
        return []
    ends: list[int] = []
    for row in rows:
        advance_phase_ends(ends, row)
    return phases_from_ends(int(rows[0][0]), ends)
