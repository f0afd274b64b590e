"""Widgets: thin traitlets + request handlers, one module per widget."""

from .attention import AttentionView, attention_heads
from .composition import CompositionView
from .head_scan import HeadScan

__all__ = ["AttentionView", "CompositionView", "HeadScan", "attention_heads"]
