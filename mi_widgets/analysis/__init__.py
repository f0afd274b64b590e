"""Analysis: pure tensor functions and small models (head scores, composition, logit lens, attribution, top-k,
histograms, source labels, the superposition toy, sparse autoencoders), device-agnostic.

Tensors in, tensors out: nothing here runs or reads a model (that is :mod:`mi_widgets.capture`), and
nothing here imports capture, widgets or TransformerLens (``tests/test_layering.py`` checks)."""

from .activations import activation_nbytes, check_direction, symmetric_range, top_units, unit_values
from .attention import THUMBNAIL_SIZE, check_patterns, pattern_thumbnails
from .attribution import Attribution, AttributionInputs, logit_attribution
from .composition import COMPOSITION_MODES, composition_baseline
from .head_scores import HEAD_TYPES, RunningHeadScores, check_detection_pattern, detection_patterns, head_scores
from .histogram import RunningHistogram
from .logit_lens import LensResult, logit_lens
from .python_source import SOURCE_CLASSES, char_classes, source_windows, token_classes
from .sae import SparseAutoencoder, as_sae, explained_variance, feature_recovery, planted_features
from .superposition import ToyModel, feature_dimensionality, feature_importance, sample_features, toy_loss
from .top_examples import RunningTopK, pad_rows, split_windows

__all__ = [
    "activation_nbytes",
    "check_direction",
    "symmetric_range",
    "top_units",
    "unit_values",
    "Attribution",
    "AttributionInputs",
    "LensResult",
    "logit_attribution",
    "logit_lens",
    "SOURCE_CLASSES",
    "char_classes",
    "source_windows",
    "token_classes",
    "COMPOSITION_MODES",
    "composition_baseline",
    "HEAD_TYPES",
    "THUMBNAIL_SIZE",
    "RunningHeadScores",
    "check_detection_pattern",
    "check_patterns",
    "detection_patterns",
    "head_scores",
    "pattern_thumbnails",
    "RunningHistogram",
    "SparseAutoencoder",
    "as_sae",
    "explained_variance",
    "feature_recovery",
    "planted_features",
    "ToyModel",
    "feature_dimensionality",
    "feature_importance",
    "sample_features",
    "toy_loss",
    "RunningTopK",
    "pad_rows",
    "split_windows",
]
