"""Log prob visualisation: CircuitsVis's ``circuitsvis.logits``, returning :class:`LogitLens`.

The view is a one-row logit lens of the given log probs: each position's top ``top_k`` next tokens, coloured by the
probability of the token that actually came next, with its rank in the readout. Differences from CircuitsVis: values
are shown as probabilities (``exp`` of the log probs; ``view.target_probs.log()`` gives them back), and the first
(BOS) token is a column of its own, since it predicts the second.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..widgets.logit_lens import LogitLens

__all__ = ["token_log_probs"]


def token_log_probs(
    token_indices: torch.Tensor,
    log_probs: torch.Tensor,
    to_string: Callable[[int], str],
    top_k: int = 10,
) -> LogitLens:
    """``token_indices [N]`` (or ``[1, N]``), ``log_probs [N, d_vocab]`` (or ``[1, N, d_vocab]``) for the next token
    after each, ``to_string`` from a token id to its text, and ``top_k`` tokens shown per position (at most 50)."""
    return LogitLens.from_log_probs(token_indices, log_probs, to_string, k=top_k)
