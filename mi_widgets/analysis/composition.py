"""Q-, K- and V-composition between heads of different layers (Elhage et al. 2021).

TransformerLens computes the scores from the weights (``all_composition_scores``, 2.x and 4.x
alike; :meth:`~mi_widgets.capture.adapter.ModelAdapter.composition_scores` checks the mode,
detaches the result and keeps it on the model's device); this module has the modes and the
random baseline the scores must be read against.

Score ``[l1, h1, l2, h2]`` is how much head ``(l2, h2)`` reads, through its queries, keys or
values, what head ``(l1, h1)`` writes: ``||W_OV^{l1h1} W^{l2h2}|| / (||W_OV|| ||W||)``
(Frobenius norms); it is 0 unless ``l1 < l2``. Even random matrices score well above 0
(about 0.125 at ``d_model=64, d_head=16``), so a score means something only as a distance
from :func:`composition_baseline`, which is how ARENA and Elhage et al. read them.
"""

from __future__ import annotations

import torch

COMPOSITION_MODES: tuple[str, ...] = ("Q", "K", "V")


def composition_baseline(d_model: int, d_head: int, *, samples: int = 64, seed: int = 0) -> float:
    """Mean composition score of random Gaussian heads of this shape (the score's chance level).

    Uses the low-rank factors (``W_OV = W_V W_O``, ``W_QK = W_Q W_K^T``) and trace identities,
    so it costs ``O(d_model * d_head^2)`` per sample, not ``O(d_model^3)``.
    """
    if d_model < 1 or d_head < 1 or samples < 1:
        raise ValueError(f"expected positive d_model, d_head and samples, got {d_model}, {d_head}, {samples}")
    gen = torch.Generator().manual_seed(seed)
    w_v, w_q, w_k = (torch.randn(samples, d_model, d_head, generator=gen, dtype=torch.float64) for _ in range(3))
    w_o = torch.randn(samples, d_head, d_model, generator=gen, dtype=torch.float64)

    def gram(a: torch.Tensor) -> torch.Tensor:  # a^T a for [s, d, k] -> [s, k, k]
        return a.transpose(-1, -2) @ a

    # ||A M B^T||_F^2 = tr(M^T (A^T A) M (B^T B)) for tall A, B.
    ov_sq = torch.einsum("sij,sji->s", gram(w_v), w_o @ w_o.transpose(-1, -2))
    qk_sq = torch.einsum("sij,sji->s", gram(w_q), gram(w_k))
    middle = w_o @ w_q  # W_V (W_O W_Q) W_K^T
    prod_sq = torch.einsum("sij,sjk,skl,sli->s", middle.transpose(-1, -2), gram(w_v), middle, gram(w_k))
    return float((prod_sq.sqrt() / (ov_sq.sqrt() * qk_sq.sqrt())).mean())
