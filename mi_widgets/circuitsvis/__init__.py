"""A CircuitsVis drop-in: ``import mi_widgets.circuitsvis as cv`` and keep your CircuitsVis calls.

Every public function of `circuitsvis <https://github.com/TransformerLensOrg/CircuitsVis>`_ (1.43) is here under
the same module, name, parameters and defaults (``tests/test_circuitsvis.py`` checks them against the installed
``circuitsvis``), and takes the same tensors, numpy arrays and nested lists. Each returns one of this project's
views instead of a static HTML page, so a click lands in the view's ``selected`` trait in Python:

=====================================================  ===============================================================
CircuitsVis                                             view
=====================================================  ===============================================================
``attention.attention_heads``                           :meth:`AttentionView.from_patterns` (one layer of heads)
``attention.attention_patterns``                        :meth:`AttentionView.from_patterns`
``attention.attention_pattern``                         :meth:`AttentionView.from_patterns` (one head)
``tokens.colored_tokens``                               :meth:`ActivationView.from_activations` (one unit)
``tokens.colored_tokens_multi``                         :meth:`ActivationView.from_activations` (a unit per label)
``tokens.visualize_model_performance``                  :meth:`ActivationView.from_activations` (logits, log probs, probs)
``activations.text_neuron_activations``                 :meth:`ActivationView.from_activations`
``topk_tokens.topk_tokens``                             :meth:`ActivationView.from_activations` (samples as prompts)
``topk_samples.topk_samples``                           :meth:`TopExamples.from_samples`
``logits.token_log_probs``                              :meth:`LogitLens.from_log_probs`
=====================================================  ===============================================================

What is not the same is said in each function's docstring (and in README's "CircuitsVis drop-in").
"""

from . import activations, attention, examples, logits, tokens, topk_samples, topk_tokens

__all__ = ["activations", "attention", "examples", "logits", "tokens", "topk_samples", "topk_tokens"]
