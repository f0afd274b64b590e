"""Tiny pretrained models bundled with the package, so demos and tests run offline.

Each model is a folder under ``models/`` holding a tokenizer, ``config.json`` and
``model.safetensors``, all produced by ``python -m mi_widgets.zoo.train <name>``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:  # pragma: no cover
    from transformer_lens import TransformerBridge

__all__ = ["available", "load", "model_dir", "stdlib_texts"]

MODELS_DIR = Path(__file__).resolve().parent / "models"


def stdlib_texts(split: str = "heldout", max_files: int | None = None) -> list[str]:
    """Python stdlib source files: ``code-2l``'s corpus (``"train"``), files it never saw (``"heldout"``) or ``"all"``."""
    from .code_2l import stdlib_texts as texts

    return texts(split, max_files)  # type: ignore[arg-type]


_INSTALL_HINT = 'The model zoo needs TransformerLens 4: pip install "transformer-lens>=4"'


def available() -> list[str]:
    """Names of the bundled models, sorted."""
    if not MODELS_DIR.is_dir():
        return []
    return sorted(
        p.name for p in MODELS_DIR.iterdir() if (p / "config.json").is_file() and (p / "model.safetensors").is_file()
    )


def model_dir(name: str) -> Path:
    """Folder of a bundled model; ``ValueError`` for an unknown name."""
    names = available()
    if name not in names:
        raise ValueError(f"Unknown zoo model {name!r}; available: {', '.join(names) or '(none)'}")
    return MODELS_DIR / name


def load(name: str, device: str | torch.device | None = None) -> TransformerBridge:
    """Build a bundled model offline as a TransformerLens ``TransformerBridge`` in eval mode.

    ``device=None`` means CPU.
    """
    folder = model_dir(name)
    try:
        from transformer_lens import TransformerBridge, TransformerBridgeConfig
    except ImportError as exc:  # missing, or TransformerLens < 4 (no TransformerBridge)
        raise ImportError(_INSTALL_HINT) from exc
    from safetensors.torch import load_file
    from transformers import AutoTokenizer

    meta: dict[str, Any] = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    device = torch.device("cpu") if device is None else torch.device(device)
    # Loaded from disk on purpose: an in-memory tokenizer object breaks TransformerBridge boot.
    tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    model = TransformerBridge.boot_native(TransformerBridgeConfig(**meta["config"]), tokenizer=tokenizer, device=device)
    state = load_file(str(folder / "model.safetensors"))  # CPU; load_state_dict copies over
    model.load_state_dict(state, strict=True)
    model.eval()
    return model
