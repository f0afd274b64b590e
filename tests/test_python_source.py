"""Ground-truth labels for Python source: strings, comments, indentation, keywords."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from mi_widgets.analysis.python_source import SOURCE_CLASSES, char_classes, source_windows, token_classes

SOURCE = 'def f(x):\n    # add one\n    return x + 1  # "q"\n\ns = """doc\n    more"""\n'


def _chars(text: str, name: str) -> str:
    mask = char_classes(text)[name]
    return "".join(c for c, m in zip(text, mask) if m)


def test_char_classes() -> None:
    assert _chars(SOURCE, "comment") == '# add one# "q"'
    assert _chars(SOURCE, "string") == '"""doc\n    more"""'
    assert _chars(SOURCE, "keyword") == "defreturn"
    assert _chars(SOURCE, "indent") == " " * 8  # the two indented lines; not the string's continuation line
    assert set(char_classes("")) == set(SOURCE_CLASSES)


def test_invalid_source_says_so() -> None:
    with pytest.raises(ValueError, match="expected valid Python source"):
        char_classes('s = "unterminated\n')


def test_token_classes_use_the_last_character_and_skip_empty_spans() -> None:
    text = 'x = "ab"  # c'
    offsets = [(0, 0), (0, 1), (1, 3), (3, 5), (5, 7), (7, 8), (8, 13)]  # BOS, 'x', ' =', ' "', 'ab', '"', '  # c'
    classes = token_classes(text, offsets)
    assert classes["string"].tolist() == [False, False, False, True, True, True, False]
    assert classes["comment"].tolist() == [False] * 6 + [True]


def test_source_windows_on_a_real_tokenizer(native_model: Any) -> None:
    text = "import os\n\n\ndef g():\n    return 'x'  # why\n" * 8
    windows = source_windows(native_model, text)
    n_ctx = native_model.cfg.n_ctx
    assert len(windows) > 1 and all(t.shape[-1] <= n_ctx for t, _ in windows)
    bos = native_model.tokenizer.bos_token_id
    assert all(int(t[0, 0]) == bos and not any(m[0] for m in c.values()) for t, c in windows)
    ids = torch.cat([t[0, 1:] for t, _ in windows]).tolist()
    assert native_model.tokenizer.decode(ids) == text  # windows cover the text exactly, in order
    strings = torch.cat([c["string"][1:] for _, c in windows])
    decoded = "".join(native_model.tokenizer.decode([i]) for i, s in zip(ids, strings.tolist()) if s)
    assert decoded.replace(" ", "") == "'x'" * 8
