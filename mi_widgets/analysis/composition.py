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


def composition_scores(
    w_q: torch.Tensor, w_k: torch.Tensor, w_v: torch.Tensor, w_o: torch.Tensor, mode: str = "K"
) -> torch.Tensor:
    """Q-, K- or V-composition scores ``[layers, heads, layers, heads]`` (writer, reader) from per-head weights.

    ``w_q``, ``w_k``, ``w_v`` ``[layers, heads, d_model, d_head]`` and ``w_o`` ``[layers, heads, d_head, d_model]``
    as the residual stream meets them (norm weights folded in, key/value heads repeated per query head).
    Writer ``W_OV = W_V W_O``; reader ``W_Q W_K^T`` (Q), its transpose (K) or its ``W_OV`` (V), TransformerLens's
    definitions. Scores where the writer's layer is not before the reader's are 0. Every norm is of a
    ``[d_model, d_head] @ [d_head, d_model]`` product, taken through the ``d_head``-square triangular factors of
    QR decompositions (``||A M B^T|| = ||R_A M R_B^T||``), so nothing ``d_model``-square is formed. float32 or wider.
    """
    if mode not in COMPOSITION_MODES:
        raise ValueError(f"mode must be one of {', '.join(COMPOSITION_MODES)}, got {mode!r}")
    dtype = torch.promote_types(w_q.dtype, torch.float32)
    w_q, w_k, w_v, w_o = (w.to(dtype) for w in (w_q, w_k, w_v, w_o))
    n_layers, n_heads = w_q.shape[:2]

    def r(a: torch.Tensor) -> torch.Tensor:  # [..., d_model, d_head] -> R [..., d_head, d_head], a^T a = R^T R
        return torch.linalg.qr(a, mode="r").R

    # each matrix X = A B^T with A, B [d_model, d_head]: the writer's and the reader's left and right factors
    left_a, left_b = w_v, w_o.transpose(-1, -2)
    right_a, right_b = {"Q": (w_q, w_k), "K": (w_k, w_q), "V": (w_v, w_o.transpose(-1, -2))}[mode]
    ra_left, rb_left, ra_right, rb_right = r(left_a), r(left_b), r(right_a), r(right_b)
    left_norm = (ra_left @ rb_left.transpose(-1, -2)).flatten(-2).norm(dim=-1)  # [layers, heads]
    right_norm = (ra_right @ rb_right.transpose(-1, -2)).flatten(-2).norm(dim=-1)
    scores = torch.zeros(n_layers, n_heads, n_layers, n_heads, dtype=dtype, device=w_q.device)
    for writer in range(n_layers - 1):  # (A1 B1^T)(A2 B2^T) = A1 (B1^T A2) B2^T, per writer layer to bound memory
        middle = torch.einsum("hdi,lgdj->hlgij", left_b[writer], right_a[writer + 1 :])
        product = ra_left[writer][:, None, None] @ middle @ rb_right[writer + 1 :].transpose(-1, -2)[None]
        norms = product.flatten(-2).norm(dim=-1)  # [heads, later layers, heads]
        denominator = left_norm[writer][:, None, None] * right_norm[writer + 1 :][None]
        scores[writer, :, writer + 1 :] = norms / denominator
    return scores
