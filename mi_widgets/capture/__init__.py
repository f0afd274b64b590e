"""Capture: run models with only the hooks a view needs; read corpora in windows the model can take."""

from .adapter import PATTERN_HOOK, ModelAdapter
from .corpus import Example, context_windows, plan_corpus, probe_units, resolve_layer_hook

__all__ = ["PATTERN_HOOK", "Example", "ModelAdapter", "context_windows", "plan_corpus", "probe_units", "resolve_layer_hook"]
