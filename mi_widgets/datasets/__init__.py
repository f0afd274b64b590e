"""Prompt data sets for circuit analysis, built for any TransformerLens model's tokenizer."""

from __future__ import annotations

from .ioi import (
    FRAMES,
    HELDOUT_FRAMES,
    HELDOUT_NAMES,
    NAMES,
    OBJECTS,
    PLACES,
    TRAIN_FRAMES,
    TRAIN_NAMES,
    IOIData,
    fill_frame,
    ioi_prompts,
)

__all__ = [
    "FRAMES",
    "HELDOUT_FRAMES",
    "HELDOUT_NAMES",
    "NAMES",
    "OBJECTS",
    "PLACES",
    "TRAIN_FRAMES",
    "TRAIN_NAMES",
    "IOIData",
    "fill_frame",
    "ioi_prompts",
]
