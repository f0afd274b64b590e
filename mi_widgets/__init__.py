"""mi_widgets: interactive Jupyter widgets for mechanistic interpretability.

Quickstart::

    import mi_widgets as mw
    model = mw.zoo.load("induction-2l")
    mw.AttentionView(model, "The cat sat on the mat. The cat sat on the")
"""

from . import zoo
from .widgets import (
    ActivationView,
    AttentionView,
    CompositionView,
    HeadScan,
    LogitAttribution,
    LogitLens,
    TopExamples,
    attention_heads,
)

__version__ = "0.1.0"
__all__ = [
    "ActivationView",
    "AttentionView",
    "CompositionView",
    "HeadScan",
    "LogitAttribution",
    "LogitLens",
    "TopExamples",
    "attention_heads",
    "zoo",
    "__version__",
]
