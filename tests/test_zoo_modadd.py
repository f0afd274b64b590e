"""The bundled modadd-113 model: loads offline, adds modulo 113 on every pair, and its history is consistent."""

from __future__ import annotations

import json
from typing import Any

import pytest
import torch

from mi_widgets import zoo
from mi_widgets.analysis import fourier
from mi_widgets.zoo import modadd

NAME = "modadd-113"
P = modadd.P


@pytest.fixture(scope="module")
def model() -> Any:
    return zoo.load(NAME)


@pytest.fixture(scope="module")
def meta() -> dict[str, Any]:
    return json.loads((zoo.model_dir(NAME) / "config.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def history() -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(zoo.model_dir(NAME) / "history.safetensors"))


def test_shape_and_tokens(model: Any) -> None:
    cfg = model.cfg
    assert (cfg.n_layers, cfg.n_heads, cfg.d_head, cfg.d_model, cfg.d_mlp, cfg.n_ctx) == (1, 4, 32, 128, 512, 3)
    assert (cfg.d_vocab, cfg.d_vocab_out, cfg.normalization_type) == (P + 1, P, None)
    assert model.to_tokens("3 5 =").tolist() == [[3, 5, P]]  # no BOS


def test_adds_modulo_p_on_all_pairs(model: Any) -> None:
    tokens, labels = fourier.all_pairs(P)
    with torch.no_grad():
        logits = model(tokens)[:, -1]
    assert logits.shape == (P * P, P)
    assert (logits.argmax(-1) == labels).float().mean() > 0.999
    mask = modadd.train_split(P)
    assert float(torch.nn.functional.cross_entropy(logits[~mask], labels[~mask])) < 0.01


def test_bridge_matches_training_forward(model: Any) -> None:
    params = {k: v for k, v in model.state_dict().items()}
    tokens, _ = fourier.all_pairs(P)
    tokens = tokens[::7]
    with torch.no_grad():
        ref = modadd.forward(params, tokens)
        fast = modadd.fast_forward(params, tokens[:, 0], tokens[:, 1])
        assert torch.allclose(model(tokens)[:, -1], ref, atol=1e-4)
    assert torch.allclose(fast, ref, atol=1e-4)


def test_key_frequencies_are_the_embedding_top_fourier_components(model: Any, meta: dict[str, Any]) -> None:
    freqs = meta["training"]["key_frequencies"]
    assert len(freqs) == modadd.N_KEY
    norms = fourier.fourier_norms(model.W_E.detach(), P)
    top = norms[1:].argsort(descending=True)[: len(freqs)] + 1
    assert sorted(top.tolist()) == sorted(freqs)
    # Sparse in the Fourier basis: the key frequencies hold most of the embedding's (non-constant) norm.
    assert float(norms[freqs].pow(2).sum() / norms[1:].pow(2).sum()) > 0.5


def test_history(history: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    t = meta["training"]
    steps = history["log.step"]
    assert bool((steps[1:] > steps[:-1]).all()) and int(steps[0]) == 0
    n = len(steps)
    for key in ("log.train_loss", "log.test_loss", "log.train_acc", "log.test_acc"):
        assert history[key].shape == (n,)
    assert float(history["log.test_loss"][-1]) < 0.01 and float(history["log.test_acc"][-1]) == 1.0
    assert float(history["log.test_acc"][0]) < 0.05  # chance at init
    checks = history["check.step"]
    assert bool((checks[1:] > checks[:-1]).all()) and int(checks[-1]) == t["steps"]
    assert history["check.embed_fourier_norm"].shape == (len(checks), (P + 1) // 2)
    for key in ("weight_norm", "restricted_loss", "excluded_loss", "key_fraction", "train_loss", "test_loss"):
        assert history[f"check.{key}"].shape == (len(checks),)
    assert history["key_frequencies"].tolist() == t["key_frequencies"]
    ck = history["checkpoint.step"]
    assert ck.tolist() == t["history"]["checkpoint_steps"] and int(ck[0]) == 0 and int(ck[-1]) == t["steps"]
    assert history["checkpoint.embed.weight"].shape == (len(ck), P + 1, modadd.PAPER.d_model)
    # Grokking: memorised (train accuracy 100%) well before test accuracy crossed 50%.
    assert t["train_acc_100_step"] < t["test_acc_50_step"] <= t["test_acc_99_step"]


def test_last_checkpoint_is_the_model(model: Any, history: dict[str, torch.Tensor]) -> None:
    final = model.state_dict()["embed.weight"]
    assert torch.allclose(history["checkpoint.embed.weight"][-1].float(), final, atol=1e-2)
