"""Sparse autoencoders: the model, its training step and metrics, and planted ground truth.

:class:`SparseAutoencoder` uses SAELens' parameter names and shapes (``W_enc [d_in, d_sae]``,
``b_enc``, ``W_dec [d_sae, d_in]``, ``b_dec``, ``encode``/``decode``), so code written against
it also takes a SAELens ``SAE``; :func:`as_sae` checks either kind and reads its sizes and hook.

Two architectures: ``"relu"`` (ReLU encoder, loss = MSE + ``l1_coefficient`` x the L1 norm of
the features weighted by their decoder norms, as in Anthropic's April 2024 update) and ``"topk"``
(only the ``k`` largest pre-activations per token survive, loss = MSE, decoder rows kept at unit
norm; Gao et al. 2024).

:func:`planted_features` makes data with a known answer: sparse combinations of more random
directions than dimensions (features in superposition). :func:`feature_recovery` scores how well
a decoder found them (mean over true features of the best cosine similarity with a decoder row).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

Architecture = Literal["relu", "topk"]
ARCHITECTURES: tuple[str, ...] = ("relu", "topk")


class SparseAutoencoder(nn.Module):
    """``f = act((x - b_dec) @ W_enc + b_enc)``, ``x_hat = f @ W_dec + b_dec``.

    ``act`` is ReLU, or for ``"topk"`` ReLU of the ``k`` largest pre-activations per row (the rest
    are zero). ``hook_name`` records where the activations came from, so views know where to hook.
    """

    def __init__(
        self,
        d_in: int,
        d_sae: int,
        architecture: Architecture = "topk",
        k: int | None = None,
        hook_name: str | None = None,
        device: torch.device | str = "cpu",
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        check_sae_shape(d_in, d_sae, architecture, k)
        self.d_in, self.d_sae = int(d_in), int(d_sae)
        self.architecture: Architecture = architecture
        self.k = int(k) if architecture == "topk" and k is not None else None
        self.hook_name = hook_name
        directions = torch.randn((d_sae, d_in), generator=generator, device=device)
        directions /= directions.norm(dim=1, keepdim=True)
        self.W_dec = nn.Parameter(directions)
        self.W_enc = nn.Parameter(directions.T.clone())
        self.b_enc = nn.Parameter(torch.zeros(d_sae, device=device))
        self.b_dec = nn.Parameter(torch.zeros(d_in, device=device))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """``[..., d_in]`` -> feature activations ``[..., d_sae]`` (non-negative, sparse)."""
        pre = (x - self.b_dec) @ self.W_enc + self.b_enc
        if self.architecture == "relu":
            return torch.relu(pre)
        values, indices = pre.topk(self.k, dim=-1)  # type: ignore[arg-type]
        return torch.zeros_like(pre).scatter_(-1, indices, torch.relu(values))

    def decode(self, f: torch.Tensor) -> torch.Tensor:
        """Feature activations ``[..., d_sae]`` -> reconstruction ``[..., d_in]``."""
        return f @ self.W_dec + self.b_dec

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))

    def extra_repr(self) -> str:
        k = f", k={self.k}" if self.k is not None else ""
        return (
            f"d_in={self.d_in}, d_sae={self.d_sae}, architecture={self.architecture!r}{k}, hook_name={self.hook_name!r}"
        )

    def save(self, path: str | Path) -> None:
        """Write the weights and settings to one file (``torch.save``); :meth:`load` reads it back."""
        config = {
            "d_in": self.d_in,
            "d_sae": self.d_sae,
            "architecture": self.architecture,
            "k": self.k,
            "hook_name": self.hook_name,
        }
        torch.save(
            {"config": config, "state_dict": {n: p.detach().cpu() for n, p in self.state_dict().items()}}, Path(path)
        )

    @classmethod
    def load(cls, path: str | Path, device: torch.device | str = "cpu") -> SparseAutoencoder:
        blob = torch.load(Path(path), map_location=device, weights_only=True)
        sae = cls(**blob["config"], device=device)
        sae.load_state_dict(blob["state_dict"])
        return sae


def check_sae_shape(d_in: Any, d_sae: Any, architecture: Any, k: Any) -> None:
    """A clear error for nonsense sizes (``d_sae`` 0, ``k`` > ``d_sae``, unknown architecture)."""
    for name, value in (("d_in", d_in), ("d_sae", d_sae)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if architecture not in ARCHITECTURES:
        raise ValueError(f"architecture must be one of {', '.join(map(repr, ARCHITECTURES))}, got {architecture!r}")
    if architecture == "topk":
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= d_sae:
            raise ValueError(
                f"a topk SAE needs k, the number of active features per token, in 1..d_sae={d_sae}; got {k!r}"
            )
    elif k is not None:
        raise ValueError(f"k only applies to architecture='topk', got k={k!r} with architecture={architecture!r}")


# ----- SAEs from anywhere (ours or SAELens) ------------------------------------------------------


@dataclass(frozen=True)
class SAEInfo:
    """What views need to know about an SAE, whichever library made it."""

    sae: Any
    d_in: int
    d_sae: int
    hook_name: str | None
    device: torch.device
    dtype: torch.dtype

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.sae.encode(x.to(self.dtype))

    @property
    def W_dec(self) -> torch.Tensor:
        return self.sae.W_dec.detach()


def as_sae(sae: Any) -> SAEInfo:
    """Check that ``sae`` is a :class:`SparseAutoencoder` or a SAELens ``SAE`` and read its sizes and hook."""
    missing = [name for name in ("encode", "decode", "W_enc", "W_dec") if not hasattr(sae, name)]
    if missing:
        raise TypeError(
            f"expected a sparse autoencoder (mi_widgets SparseAutoencoder or a SAELens SAE) with encode/decode and "
            f"W_enc/W_dec, got {type(sae).__name__} without {', '.join(missing)}"
        )
    W_enc, W_dec = sae.W_enc, sae.W_dec
    if W_enc.ndim != 2 or W_dec.ndim != 2 or tuple(W_dec.shape) != (W_enc.shape[1], W_enc.shape[0]):
        raise ValueError(
            f"expected W_enc [d_in, d_sae] and W_dec [d_sae, d_in], got {list(W_enc.shape)} and {list(W_dec.shape)}"
        )
    hook = getattr(sae, "hook_name", None)
    cfg = getattr(sae, "cfg", None)
    if hook is None and cfg is not None:  # SAELens: cfg.metadata.hook_name (6.x) or cfg.hook_name (older)
        metadata = getattr(cfg, "metadata", None)
        hook = getattr(metadata, "hook_name", None) or getattr(cfg, "hook_name", None)
    return SAEInfo(sae, int(W_enc.shape[0]), int(W_enc.shape[1]), hook, W_enc.device, W_enc.dtype)


# ----- training ---------------------------------------------------------------------------


@dataclass
class StepMetrics:
    """One training step's numbers (floats): total loss, MSE per element, L0, fraction of variance explained."""

    loss: float
    mse: float
    l0: float
    fve: float


def sae_loss(
    sae: SparseAutoencoder, x: torch.Tensor, l1_coefficient: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(loss, mse, f, x_hat)`` for a batch ``x [batch, d_in]``; MSE is per element, the L1 term per token."""
    f = sae.encode(x)
    x_hat = sae.decode(f)
    mse = ((x_hat - x) ** 2).mean()
    if sae.architecture == "relu":
        sparsity = (f * sae.W_dec.norm(dim=1)).sum(-1).mean() / sae.d_in
        return mse + l1_coefficient * sparsity, mse, f, x_hat
    return mse, mse, f, x_hat


def explained_variance(x: torch.Tensor, x_hat: torch.Tensor) -> torch.Tensor:
    """Fraction of the variance of ``x [batch, d]`` (around its batch mean) that ``x_hat`` explains."""
    residual = ((x - x_hat) ** 2).sum()
    total = ((x - x.mean(0)) ** 2).sum()
    return 1 - residual / total.clamp_min(torch.finfo(x.dtype).tiny)


@torch.no_grad()
def normalize_decoder(sae: SparseAutoencoder) -> None:
    """Rescale decoder rows to unit norm (TopK SAEs keep them there)."""
    sae.W_dec /= sae.W_dec.norm(dim=1, keepdim=True).clamp_min(1e-8)


@torch.no_grad()
def fold_input_scale(sae: SparseAutoencoder, scale: float) -> SparseAutoencoder:
    """An SAE for raw activations ``x`` from one trained on ``scale * x`` (same features, same output in x units)."""
    out = SparseAutoencoder(sae.d_in, sae.d_sae, sae.architecture, sae.k, sae.hook_name, device=sae.W_dec.device)
    out.W_enc.copy_(sae.W_enc * scale)
    out.b_enc.copy_(sae.b_enc)
    out.W_dec.copy_(sae.W_dec / scale)
    out.b_dec.copy_(sae.b_dec / scale)
    return out


# ----- a known answer --------------------------------------------------------------------------


def planted_features(
    n_samples: int,
    d_in: int = 32,
    n_features: int = 64,
    active: float = 3.0,
    seed: int = 0,
    device: torch.device | str = "cpu",
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(activations [n_samples, d_in], true directions [n_features, d_in])`` with sparse planted features.

    Each sample is a sum of on average ``active`` of ``n_features`` random unit directions (more
    directions than dimensions: superposition), each with a magnitude uniform in [0.5, 1.5].
    """
    if not 0 < active <= n_features:
        raise ValueError(f"active (mean features per sample) must be in (0, n_features={n_features}], got {active!r}")
    generator = torch.Generator(device=device).manual_seed(seed)
    directions = torch.randn((n_features, d_in), generator=generator, device=device)
    directions /= directions.norm(dim=1, keepdim=True)
    on = torch.rand((n_samples, n_features), generator=generator, device=device) < active / n_features
    magnitude = 0.5 + torch.rand((n_samples, n_features), generator=generator, device=device)
    return (on * magnitude) @ directions, directions


def feature_recovery(true_directions: torch.Tensor, W_dec: torch.Tensor) -> torch.Tensor:
    """``[n_true]``: for each true direction, the best cosine similarity with any decoder row."""
    true = true_directions / true_directions.norm(dim=1, keepdim=True)
    dec = W_dec.detach() / W_dec.detach().norm(dim=1, keepdim=True).clamp_min(1e-12)
    return (true.to(dec) @ dec.T).max(dim=1).values


def input_scale(x: torch.Tensor) -> float:
    """The factor that gives activations a mean squared norm of ``d_in`` (so one learning rate fits all models)."""
    mean_sq = float((x.float() ** 2).sum(-1).mean())
    if not math.isfinite(mean_sq) or mean_sq <= 0:
        raise ValueError(
            f"cannot normalise activations whose mean squared norm is {mean_sq}: are they all zero, NaN or inf?"
        )
    return math.sqrt(x.shape[-1] / mean_sq)
