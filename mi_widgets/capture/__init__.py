"""Capture: the only room that touches a model. Run it with only the hooks a view needs, read its weights
(:class:`ModelAdapter`), read its output (:mod:`.readout`), read corpora in windows it can take (:mod:`.corpus`)
and stream activations over them (:mod:`.streams`)."""

from .adapter import PATTERN_HOOK, ModelAdapter, adapter_for
from .corpus import (
    Example,
    TopContexts,
    context_windows,
    padded_activations,
    plan_corpus,
    probe_units,
    resolve_layer_hook,
    text_batch,
)
from .nnsight_adapter import NNsightAdapter
from .readout import attribution_inputs, residual_streams, single_token_id
from .streams import ActivationStream, TensorStream

__all__ = [
    "PATTERN_HOOK",
    "ActivationStream",
    "TensorStream",
    "attribution_inputs",
    "residual_streams",
    "single_token_id",
    "Example",
    "ModelAdapter",
    "NNsightAdapter",
    "adapter_for",
    "TopContexts",
    "context_windows",
    "padded_activations",
    "plan_corpus",
    "probe_units",
    "resolve_layer_hook",
    "text_batch",
]
