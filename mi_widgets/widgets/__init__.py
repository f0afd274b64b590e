"""Widgets: thin traitlets + request handlers, one module per widget."""

from .attention import AttentionView, attention_heads

__all__ = ["AttentionView", "attention_heads"]
