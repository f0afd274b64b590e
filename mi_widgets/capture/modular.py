"""One run of a modular-addition model over every input pair, for the Fourier analyses (``analysis/fourier.py``).

A modular-addition model (Nanda et al. 2023's setup) reads three tokens ``[a, b, =]`` with ``a, b`` in ``0..p-1``
and puts its answer ``(a + b) mod p`` in the logits at the last position, over ``p`` outputs. Its token ids are
fed as they are (no BOS: the model was trained without one).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from ..analysis import fourier
from .adapter import ModelAdapter

BATCH_ROWS = 4096


def available_bytes(device: torch.device) -> int | None:
    """Memory free for new tensors on ``device``: CUDA's free memory, or the host's MemAvailable (None if unknown)."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return None


def check_memory(need: int, device: torch.device, what: str, hint: str = "") -> None:
    """Refuse work that needs more than half of the memory free on ``device``, saying how much, why and (``hint``)
    what to do instead."""
    free = available_bytes(device)
    if free is not None and need > free // 2:
        raise ValueError(
            f"{what} needs about {need / 2**30:.1f} GiB, more than half of the {free / 2**30:.1f} GiB free on "
            f"{device}" + (f": {hint}" if hint else "")
        )


@dataclass
class ModularRun:
    """Everything the Fourier analyses read, over all ``p * p`` pairs (row ``a * p + b``), on the model's device."""

    p: int
    layer: int
    logits: torch.Tensor  # [p*p, p] at the last position
    neurons: torch.Tensor  # [p*p, d_mlp]: the layer's MLP post-activations at the last position
    attention: torch.Tensor  # [p*p, n_heads]: each head's attention from the last position to a (position 0)
    embed: torch.Tensor  # [p, d_model]: W_E of the number tokens


def check_modular_model(
    adapter: ModelAdapter, p: int | None, equals: int | None, layer: int | None
) -> tuple[int, int, int]:
    """``(p, equals, layer)`` for a model that can be a modular-addition model, or a ValueError saying what does not fit."""
    cfg = adapter.cfg
    d_vocab, d_vocab_out = int(cfg.d_vocab), int(getattr(cfg, "d_vocab_out", -1) or -1)
    if d_vocab_out < 1:
        d_vocab_out = d_vocab
    if p is None:
        p = d_vocab_out
    if isinstance(p, bool) or not isinstance(p, int) or not fourier.is_prime(p) or p < 5:
        raise ValueError(f"p must be a prime of at least 5 (the modulus the model adds by), got {p!r}")
    if d_vocab_out != p:
        raise ValueError(
            f"a modular-addition model for p={p} has p outputs (d_vocab_out = {p}, one logit per answer c), but this "
            f"model has d_vocab_out = {d_vocab_out}: pass the p it was trained for"
        )
    if d_vocab <= p:
        raise ValueError(
            f"the model's vocabulary ({d_vocab} tokens) has no id for '=' after the numbers 0..{p - 1}: "
            f"a modular-addition model for p={p} has d_vocab >= {p + 1}"
        )
    equals = p if equals is None else equals
    if isinstance(equals, bool) or not isinstance(equals, int) or not p <= equals < d_vocab:
        raise ValueError(
            f"the '=' token must be an id from {p} to {d_vocab - 1} (numbers are 0..{p - 1}), got {equals!r}"
        )
    if adapter.n_ctx < 3:
        raise ValueError(f"the model's context (n_ctx = {adapter.n_ctx}) is shorter than the 3 tokens 'a b ='")
    if not adapter.has_mlp:
        raise ValueError("the Fourier analyses read the MLP neurons, and this model is attention-only")
    d_mlp = int(getattr(cfg, "d_mlp", 0) or 0)
    check_memory(
        4 * p * p * (3 * p + d_mlp + adapter.n_heads),
        adapter.device,
        f"reading all {p * p} pairs of a p={p} model",
        "move the model to a device with more free memory",
    )
    layer = adapter.n_layers - 1 if layer is None else layer
    if isinstance(layer, bool) or not isinstance(layer, int) or not 0 <= layer < adapter.n_layers:
        raise ValueError(f"layer must be 0..{adapter.n_layers - 1}, got {layer!r}")
    return p, equals, layer


def run_all_pairs(adapter: ModelAdapter, p: int, equals: int, layer: int) -> ModularRun:
    """Run the model on ``[a, b, equals]`` for every pair, keeping only the last position of what is read."""
    tokens, _ = fourier.all_pairs(p, equals)
    tokens = tokens.to(adapter.device)
    names = [f"blocks.{layer}.attn.hook_pattern", f"blocks.{layer}.mlp.hook_post"]
    logits, neurons, attention = [], [], []
    kept: dict[int, torch.Tensor] = {}

    def keep(index: int, tensor: torch.Tensor) -> None:
        # hook_pattern [batch, head, query, key]: from the last query to key 0 (a); hook_post [batch, pos, d_mlp].
        kept[index] = tensor[:, :, -1, 0].float() if index == 0 else tensor[:, -1].float()

    for start in range(0, len(tokens), BATCH_ROWS):
        out = adapter.run_to_logits(tokens[start : start + BATCH_ROWS], names, keep)
        if out.shape[-1] != p:
            raise ValueError(f"the model returned {out.shape[-1]} logits per position, expected p = {p}")
        logits.append(out[:, -1].float())
        attention.append(kept[0])
        neurons.append(kept[1])
    result = torch.cat(logits)
    if not bool(torch.isfinite(result).all()):
        raise ValueError("the model's logits contain NaN or inf on some input pairs")
    return ModularRun(
        p=p,
        layer=layer,
        logits=result,
        neurons=torch.cat(neurons),
        attention=torch.cat(attention),
        embed=adapter.embed_weights()[:p].float().clone(),
    )
