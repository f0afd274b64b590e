"""Capture: run models with only the hooks a view needs."""

from .adapter import PATTERN_HOOK, ModelAdapter

__all__ = ["PATTERN_HOOK", "ModelAdapter"]
