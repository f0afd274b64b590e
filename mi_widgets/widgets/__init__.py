"""Widgets: thin traitlets + request handlers, one module per widget."""

from .activation import ActivationView
from .attention import AttentionView, attention_heads
from .composition import CompositionView
from .head_scan import HeadScan
from .logit_attribution import LogitAttribution
from .logit_lens import LogitLens
from .top_examples import TopExamples

__all__ = ["ActivationView", "AttentionView", "CompositionView", "HeadScan", "LogitAttribution", "LogitLens", "TopExamples", "attention_heads"]
