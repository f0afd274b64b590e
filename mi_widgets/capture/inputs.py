"""Checks on what users hand the widgets: text the kernel can send, prompts a model can read, loaded weights, indices.

Token strings reach the browser in traits and replies as JSON that jupyter_client encodes as strict
UTF-8, so one unencodable character (a lone UTF-16 surrogate such as ``"\\ud800"``, left by a bad
decode or a split emoji) would fail the whole message in the user's cell. :func:`visible_text` is
the one place such text is made safe: every token label goes through it on its way to a trait or a
reply. Prompts are different: a tokenizer cannot read such text at all, so :func:`check_text`
refuses it up front with the position and the character, instead of the tokenizer's internal
``TextEncodeInput must be Union[...]``.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

PROMPT_KINDS = "a string, or token ids as a 1-D tensor, a [1, seq] tensor or a list of ints"


def visible_text(text: str) -> str:
    """``text`` with every character UTF-8 cannot encode (lone surrogates) written as a visible escape (``\\ud800``).

    Everything else is left as it is, so ordinary tokens are unchanged (and cost one encode check).
    """
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


def visible_texts(texts: Sequence[Any]) -> list[str]:
    """Token labels for a trait or a reply: each one ``str`` and safe to send (see :func:`visible_text`)."""
    return [visible_text(t if isinstance(t, str) else str(t)) for t in texts]


def check_text(text: str, what: str = "prompt") -> str:
    """``text`` unchanged, or a ValueError naming the first character a tokenizer cannot encode and where it is."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        count = sum(1 for ch in text if 0xD800 <= ord(ch) <= 0xDFFF)
        more = f" ({count} such characters in all)" if count > 1 else ""
        raise ValueError(
            f"{what} contains text the tokenizer cannot encode: '{visible_text(text[exc.start])}' at position "
            f"{exc.start}{more}, a lone UTF-16 surrogate (not valid Unicode text, often left by a bad decode or a "
            "split emoji); expected UTF-8-encodable text: remove it, or decode the source with errors='replace'"
        ) from None
    return text


def describe(value: Any, limit: int = 60) -> str:
    """``value`` as an error message shows it: its type and a short repr (``dict {'a': 1}``, ``None``)."""
    if value is None:
        return "None"
    text = repr(value)  # repr escapes lone surrogates, so the message itself can always be sent
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    return f"{type(value).__name__} {text}"


def _is_int(value: Any) -> bool:
    """A Python or numpy integer or a 0-d integer tensor (not a bool): what may stand for one token id."""
    if isinstance(value, torch.Tensor):
        return value.ndim == 0 and not (
            value.dtype.is_floating_point or value.dtype.is_complex or value.dtype == torch.bool
        )
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _kinds(items: Sequence[Any]) -> str:
    return ", ".join(sorted({type(item).__name__ for item in items}))


def prompt_ids(prompt: Any) -> torch.Tensor:
    """Token ids given as a prompt, as a tensor (shape and range are checked by the adapter).

    Accepts torch and numpy integer arrays and (nested) lists or tuples of ints; anything else gets a
    TypeError that says what was expected and what came, instead of torch's "Could not infer dtype of dict".
    """
    if isinstance(prompt, torch.Tensor):
        return prompt.detach()
    if isinstance(prompt, np.ndarray):
        if prompt.dtype.kind not in "iub":
            if prompt.dtype.kind == "f":
                raise TypeError(f"token ids must be integers, got numpy dtype {prompt.dtype}")
            raise TypeError(f"expected a prompt as {PROMPT_KINDS}, got a numpy array of dtype {prompt.dtype}")
        return torch.as_tensor(prompt)
    if isinstance(prompt, (bytes, bytearray)):
        raise TypeError(
            f"expected a prompt as {PROMPT_KINDS}, got {describe(prompt)}: decode it to text first (prompt.decode('utf-8'))"
        )
    if isinstance(prompt, (list, tuple, range)):
        items = list(prompt)
        if not items:
            return torch.zeros(0, dtype=torch.long)
        if all(_is_int(i) for i in items):
            return torch.tensor([operator.index(i) for i in items], dtype=torch.long)
        if all(isinstance(i, (list, tuple, torch.Tensor, np.ndarray)) for i in items):
            if len(items) != 1:  # [[ids], [ids]]: a batch, where one prompt was expected
                raise ValueError(f"expected token ids of shape [seq] or [1, seq], got {len(items)} rows")
            return prompt_ids(items[0])[None]
        if all(isinstance(i, str) for i in items):
            raise TypeError(
                f"expected a prompt as {PROMPT_KINDS}, got a {type(prompt).__name__} of str: pass one prompt string, "
                "or use a widget that takes several prompts (ActivationView, FeatureView, TopExamples)"
            )
        if all(isinstance(i, (float, np.floating)) or _is_int(i) for i in items):
            raise TypeError(f"token ids must be integers, got a {type(prompt).__name__} of {_kinds(items)}")
        bad = next((n for n, i in enumerate(items) if not _is_int(i)), 0)
        raise TypeError(
            f"expected a prompt as {PROMPT_KINDS}, got a {type(prompt).__name__} of {_kinds(items)} "
            f"(item {bad} is {describe(items[bad])})"
        )
    if _is_int(prompt):
        raise TypeError(
            f"expected a prompt as {PROMPT_KINDS}, got {describe(prompt)}: put a single token id in a list ([{prompt}])"
        )
    raise TypeError(f"expected a prompt as {PROMPT_KINDS}, got {describe(prompt)}")


def check_weights_loaded(model: Any) -> None:
    """Refuse a model whose weights are on the ``meta`` device (shapes only, no data).

    Such a model gets through construction and fails deep inside torch at the first forward pass
    ("Cannot copy out of meta tensor", "Tensor.item() cannot be called on meta tensors"). Models that
    accelerate offloads (modules with ``_hf_hook``) keep meta placeholders on purpose and are let through.
    """
    named = getattr(model, "named_parameters", None)
    if not callable(named):
        return
    try:
        params = list(named())
    except Exception:  # not a torch module after all: nothing to check
        return
    meta = [name for name, p in params if getattr(p, "is_meta", False)]
    if not meta:
        return
    modules = getattr(model, "modules", None)
    if callable(modules) and any(hasattr(m, "_hf_hook") for m in modules()):
        return  # accelerate loads offloaded weights onto the device at each forward pass
    raise ValueError(
        f"the model's weights are on the 'meta' device (not loaded): {len(meta)} of {len(params)} parameters, "
        f"e.g. {meta[0]!r}. Load real weights first (e.g. from_pretrained without device_map='meta' or "
        "init_empty_weights, or model.to_empty(device='cpu') then model.load_state_dict(state))"
    )


# ----- indices: ``int(1.7)`` is 1, so a selection validated with ``int()`` would silently show a head
# nobody asked for. An index is a Python int (not a bool) or a numpy / 0-d torch integer; anything
# else is refused with an error that names the range and what came.


def as_index(name: str, value: Any, error: type[Exception] = TypeError, expected: str = "an integer") -> int:
    """``value`` as a plain ``int``, or ``error`` (``"{name} must be {expected}, got 1.7"``); never truncates."""
    if isinstance(value, (bool, np.bool_)) or (isinstance(value, torch.Tensor) and value.dtype == torch.bool):
        raise error(f"{name} must be {expected}, got {value!r}")
    try:
        return operator.index(value)  # int, numpy integers, 0-d integer tensors; not float, str, bool arrays
    except TypeError:
        raise error(f"{name} must be {expected}, got {value!r}") from None


def index_in(name: str, value: Any, size: int, error: type[Exception] = IndexError, extra: str = "") -> int:
    """``value`` as an ``int`` in ``0..size-1``, else an error naming the range (``extra`` adds e.g. ``" or None"``).

    A value out of range raises ``error``; one that is not an integer raises TypeError when ``error`` is
    IndexError (the Python API's convention) and ``error`` itself otherwise (TraitError for ``selected``).
    """
    type_error = TypeError if error is IndexError else error
    index = as_index(name, value, type_error, f"an integer in 0..{size - 1}{extra}")
    if not 0 <= index < size:
        raise error(f"{name} must be in 0..{size - 1}{extra}, got {index}")
    return index
