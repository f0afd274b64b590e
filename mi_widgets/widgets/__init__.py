"""Widgets: thin traitlets + request handlers, one module per widget."""

from .activation import ActivationView
from .attention import AttentionView, attention_heads
from .composition import CompositionView
from .feature_view import FeatureView
from .fourier_view import FourierView
from .grokking import Grokking
from .head_scan import HeadScan
from .logit_attribution import LogitAttribution
from .logit_lens import LogitLens
from .patching import Patching, PathPatching
from .sae_training import SAETrainer, train_sae
from .superposition import SuperpositionToy
from .top_examples import TopExamples

__all__ = [
    "ActivationView",
    "AttentionView",
    "CompositionView",
    "FeatureView",
    "FourierView",
    "Grokking",
    "HeadScan",
    "LogitAttribution",
    "LogitLens",
    "PathPatching",
    "Patching",
    "SAETrainer",
    "SuperpositionToy",
    "TopExamples",
    "attention_heads",
    "train_sae",
]
