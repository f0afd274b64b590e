"""Widgets: thin traitlets + request handlers, one module per widget."""

from .attention import AttentionView, attention_heads
from .head_scan import HeadScan

__all__ = ["AttentionView", "HeadScan", "attention_heads"]
