"""mi_widgets: interactive Jupyter widgets for mechanistic interpretability.

Quickstart::

    import mi_widgets as mw
    model = mw.zoo.load("induction-2l")
    mw.AttentionView(model, "The cat sat on the mat. The cat sat on the")
"""

from . import datasets, zoo
from .analysis.patching import answer_prob, logit_diff
from .analysis.sae import SparseAutoencoder
from .datasets import IOIData, ioi_prompts
from .widgets import (
    ActivationView,
    AttentionView,
    CompositionView,
    FeatureView,
    FourierView,
    Grokking,
    HeadScan,
    LogitAttribution,
    LogitLens,
    Patching,
    PathPatching,
    SAETrainer,
    SuperpositionToy,
    TopExamples,
    attention_heads,
    train_sae,
)

__version__ = "0.1.0"
__all__ = [
    "ActivationView",
    "AttentionView",
    "CompositionView",
    "FeatureView",
    "FourierView",
    "Grokking",
    "IOIData",
    "HeadScan",
    "LogitAttribution",
    "LogitLens",
    "PathPatching",
    "Patching",
    "SAETrainer",
    "SparseAutoencoder",
    "SuperpositionToy",
    "TopExamples",
    "answer_prob",
    "attention_heads",
    "datasets",
    "ioi_prompts",
    "logit_diff",
    "train_sae",
    "zoo",
    "__version__",
]
