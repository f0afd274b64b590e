"""The bundled code-2l model: loads offline, predicts held-out stdlib code far better than chance."""

from __future__ import annotations

from typing import Any

import pytest
import torch
import torch.nn.functional as F

from mi_widgets import zoo
from mi_widgets.zoo.code_2l import stdlib_files, token_stream


@pytest.fixture(scope="module")
def model() -> Any:
    return zoo.load("code-2l")


def test_shape_and_tokenizer(model: Any) -> None:
    cfg = model.cfg
    assert (cfg.n_layers, cfg.n_heads, cfg.d_model, cfg.d_mlp, cfg.n_ctx, cfg.d_vocab) == (2, 4, 128, 512, 256, 2048)
    source = "def add(a, b):\n    return a + b  # sum\n"
    assert model.tokenizer.decode(model.tokenizer(source, add_special_tokens=False)["input_ids"]) == source  # lossless
    assert model.to_str_tokens("x = 1")[0] == "<|endoftext|>"


def test_splits_are_disjoint_and_cover_the_stdlib() -> None:
    train, held, every = stdlib_files("train"), stdlib_files("heldout"), stdlib_files("all")
    assert held and train and not set(train) & set(held)
    assert sorted(train + held) == sorted(every)
    assert len(zoo.stdlib_texts("heldout", max_files=2)) == 2
    with pytest.raises(ValueError, match="split must be"):
        stdlib_files("test")  # type: ignore[arg-type]


def test_predicts_held_out_code(model: Any) -> None:
    stream = token_stream(model.tokenizer, zoo.stdlib_texts("heldout", max_files=4))
    n_ctx = model.cfg.n_ctx
    windows = stream[: (len(stream) // n_ctx) * n_ctx].view(-1, n_ctx)[:8]
    with torch.no_grad():
        logits = model(windows)
    loss = float(F.cross_entropy(logits[:, :-1].flatten(0, 1), windows[:, 1:].flatten()))
    counts = torch.bincount(stream, minlength=model.cfg.d_vocab).double()
    p = counts[counts > 0] / counts.sum()
    unigram = float(-(p * p.log()).sum())  # the best a model without context can do on these files
    assert loss < unigram - 1.0, (loss, unigram)
