"""Capture: run models with only the hooks a view needs; read corpora in windows the model can take."""

from .adapter import PATTERN_HOOK, ModelAdapter
from .corpus import (
    Example,
    TopContexts,
    context_windows,
    padded_activations,
    plan_corpus,
    probe_units,
    resolve_layer_hook,
    text_batch,
)

__all__ = [
    "PATTERN_HOOK",
    "Example",
    "ModelAdapter",
    "TopContexts",
    "context_windows",
    "padded_activations",
    "plan_corpus",
    "probe_units",
    "resolve_layer_hook",
    "text_batch",
]
