"""Sparse autoencoders: the SAE itself, the known answer on planted features, SAETrainer on a model, bad input."""

from __future__ import annotations

from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch

from mi_widgets.analysis.sae import (
    SparseAutoencoder,
    as_sae,
    check_sae_shape,
    explained_variance,
    feature_recovery,
    fold_input_scale,
    planted_features,
)
from mi_widgets.transport.codec import decode_array
from mi_widgets.widgets.sae_training import ActivationStream, SAETrainer, TensorStream, train_sae
from mi_widgets.widgets.training import TrainingWidget

from .conftest import SENTENCES


@pytest.fixture(autouse=True)
def fixed_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Chunks of exactly ``_chunk`` steps (not sized by timing), so step numbers in these tests are exact."""
    monkeypatch.setattr(TrainingWidget, "_chunk_size", lambda self, per_step: self._chunk)


HOOK = "blocks.0.hook_resid_post"
METRICS = ["loss", "mse", "l0", "fve", "dead"]


def randomised(sae: SparseAutoencoder, seed: int = 0) -> SparseAutoencoder:
    """Give every parameter (biases too) random values, so nothing is checked against zeros."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in sae.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.5)
    return sae


def pre_activations(sae: SparseAutoencoder, x: torch.Tensor) -> torch.Tensor:
    return (x - sae.b_dec) @ sae.W_enc + sae.b_enc


# ----- SparseAutoencoder ----------------------------------------------------------------------


@pytest.mark.parametrize("architecture, k", [("topk", 3), ("relu", None)])
def test_encode_decode_shapes(architecture: str, k: int | None) -> None:
    sae = SparseAutoencoder(8, 32, architecture, k=k, hook_name=HOOK, generator=torch.Generator().manual_seed(0))
    assert sae.W_enc.shape == (8, 32) and sae.W_dec.shape == (32, 8)
    assert sae.b_enc.shape == (32,) and sae.b_dec.shape == (8,)
    assert torch.allclose(sae.W_dec.detach().norm(dim=1), torch.ones(32))  # unit decoder rows to start
    x = torch.randn(3, 5, 8)
    f = sae.encode(x)
    assert f.shape == (3, 5, 32) and bool((f >= 0).all())
    assert sae.decode(f).shape == (3, 5, 8)
    assert torch.allclose(sae(x), f @ sae.W_dec + sae.b_dec)
    assert (sae.d_in, sae.d_sae, sae.architecture, sae.k, sae.hook_name) == (8, 32, architecture, k, HOOK)


def test_topk_keeps_exactly_k_largest_per_row() -> None:
    sae = randomised(SparseAutoencoder(8, 32, "topk", k=5))
    with torch.no_grad():
        sae.b_enc.add_(100.0)  # every pre-activation positive
    x = torch.randn(40, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        pre = pre_activations(sae, x)
        f = sae.encode(x)
    assert bool((pre > 0).all())
    assert torch.equal((f != 0).sum(-1), torch.full((40,), 5))
    top = pre.topk(5, dim=-1)
    assert torch.equal(f.gather(-1, top.indices), top.values)  # the kept ones are the 5 largest, unchanged
    with torch.no_grad():
        sae.b_enc.sub_(300.0)  # every pre-activation negative: ReLU leaves nothing
        assert torch.equal(sae.encode(x), torch.zeros(40, 32))


def test_relu_is_relu_of_the_pre_activations() -> None:
    sae = randomised(SparseAutoencoder(8, 32, "relu"))
    x = torch.randn(40, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        f = sae.encode(x)
        pre = pre_activations(sae, x)
    assert bool((f >= 0).all())
    assert torch.equal(f, torch.relu(pre))
    assert bool((f == 0).any()) and bool((f > 0).any())


@pytest.mark.parametrize(
    "args, pattern",
    [
        ((8, 0, "topk", 4), r"d_sae must be a positive integer, got 0"),
        ((8, 0, "relu", None), r"d_sae must be a positive integer, got 0"),
        ((0, 16, "relu", None), r"d_in must be a positive integer, got 0"),
        ((8, 16, "topk", 17), r"k.*1\.\.d_sae=16; got 17"),
        ((8, 16, "topk", 0), r"k.*1\.\.d_sae=16; got 0"),
        ((8, 16, "topk", None), r"a topk SAE needs k.*got None"),
        ((8, 16, "relu", 4), r"k only applies to architecture='topk', got k=4 with architecture='relu'"),
        ((8, 16, "gated", None), r"architecture must be one of 'relu', 'topk', got 'gated'"),
    ],
)
def test_check_sae_shape_errors(args: tuple, pattern: str) -> None:
    with pytest.raises(ValueError, match=pattern):
        check_sae_shape(*args)
    with pytest.raises(ValueError, match=pattern):
        SparseAutoencoder(*args)


@pytest.mark.parametrize("architecture, k", [("topk", 3), ("relu", None)])
def test_save_load_round_trip(tmp_path: Any, architecture: str, k: int | None) -> None:
    sae = randomised(SparseAutoencoder(8, 16, architecture, k=k, hook_name=HOOK), seed=4)
    path = tmp_path / "sae.pt"
    sae.save(path)
    loaded = SparseAutoencoder.load(path)
    assert (loaded.d_in, loaded.d_sae, loaded.architecture, loaded.k, loaded.hook_name) == (
        8,
        16,
        architecture,
        k,
        HOOK,
    )
    for name, p in sae.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], p), name
    x = torch.randn(6, 8)
    with torch.no_grad():
        assert torch.equal(loaded(x), sae(x))


@pytest.mark.parametrize("architecture, k", [("topk", 4), ("relu", None)])
def test_fold_input_scale(architecture: str, k: int | None) -> None:
    sae = randomised(SparseAutoencoder(8, 24, architecture, k=k, hook_name=HOOK), seed=2)
    scale = 3.7
    before = {name: p.clone() for name, p in sae.state_dict().items()}
    folded = fold_input_scale(sae, scale)
    assert (folded.architecture, folded.k, folded.hook_name) == (architecture, k, HOOK)
    x = torch.randn(50, 8, generator=torch.Generator().manual_seed(3)) * 2
    with torch.no_grad():
        assert torch.allclose(folded.encode(x), sae.encode(scale * x), atol=1e-5)  # the same features fire
        assert torch.allclose(folded(x), sae(scale * x) / scale, atol=1e-5)  # the same reconstruction, in x units
        assert bool((folded.encode(x) > 0).any())
    assert all(torch.equal(p, before[name]) for name, p in sae.state_dict().items())  # the original is untouched


def test_explained_variance() -> None:
    x = torch.randn(200, 8, generator=torch.Generator().manual_seed(0)) * 3 + 5
    assert float(explained_variance(x, x)) == pytest.approx(1.0, abs=1e-6)
    assert float(explained_variance(x, x.mean(0).expand_as(x))) == pytest.approx(0.0, abs=1e-5)
    half = x.mean(0) + (x - x.mean(0)) * 0.5
    assert float(explained_variance(x, half)) == pytest.approx(0.75, abs=1e-5)  # residual is 1/4 of the variance


def test_as_sae_reads_ours_and_saelens_like_objects() -> None:
    sae = SparseAutoencoder(8, 16, "topk", k=2, hook_name=HOOK)
    info = as_sae(sae)
    assert (info.d_in, info.d_sae, info.hook_name, info.dtype) == (8, 16, HOOK, torch.float32)
    assert info.device.type == "cpu"
    x = torch.randn(3, 8)
    assert torch.equal(info.encode(x), sae.encode(x))
    assert torch.equal(info.W_dec, sae.W_dec.detach())

    def like(cfg: Any) -> Any:
        return SimpleNamespace(encode=sae.encode, decode=sae.decode, W_enc=sae.W_enc, W_dec=sae.W_dec, cfg=cfg)

    assert (
        as_sae(like(SimpleNamespace(metadata=SimpleNamespace(hook_name="blocks.1.hook_resid_pre")))).hook_name
        == "blocks.1.hook_resid_pre"
    )
    assert as_sae(like(SimpleNamespace(hook_name="blocks.0.hook_mlp_out"))).hook_name == "blocks.0.hook_mlp_out"


def test_as_sae_errors() -> None:
    with pytest.raises(
        TypeError, match=r"expected a sparse autoencoder.*got Linear without encode, decode, W_enc, W_dec"
    ):
        as_sae(torch.nn.Linear(3, 4))
    with pytest.raises(TypeError, match=r"got str without"):
        as_sae("sae")
    noop = lambda x: x  # noqa: E731
    bad = SimpleNamespace(encode=noop, decode=noop, W_enc=torch.zeros(4, 8), W_dec=torch.zeros(8, 5))
    with pytest.raises(
        ValueError, match=r"expected W_enc \[d_in, d_sae\] and W_dec \[d_sae, d_in\], got \[4, 8\] and \[8, 5\]"
    ):
        as_sae(bad)
    flat = SimpleNamespace(encode=noop, decode=noop, W_enc=torch.zeros(4, 8, 1), W_dec=torch.zeros(8, 4))
    with pytest.raises(ValueError, match=r"got \[4, 8, 1\] and \[8, 4\]"):
        as_sae(flat)


# ----- planted features: the known answer --------------------------------------------------------


def test_planted_features_and_recovery_score() -> None:
    x, true = planted_features(4000, d_in=16, n_features=32, active=3.0, seed=0)
    assert x.shape == (4000, 16) and true.shape == (32, 16)
    assert torch.allclose(true.norm(dim=1), torch.ones(32), atol=1e-6)
    again, _ = planted_features(4000, d_in=16, n_features=32, active=3.0, seed=0)
    assert torch.equal(x, again)
    norms_sq = (x**2).sum(-1).mean()
    assert 2.0 < float(norms_sq) < 6.0  # about 3 features of magnitude ~1 (plus their overlaps)
    # The score: 1 when the decoder holds every true direction (in any order, any length, with extras).
    decoder = torch.cat([true[torch.randperm(32)] * 2.5, torch.randn(8, 16)])
    assert torch.allclose(feature_recovery(true, decoder), torch.ones(32), atol=1e-6)
    assert float(feature_recovery(true, -true).max()) < 1.0  # sign matters: -v is not v
    with pytest.raises(ValueError, match=r"active .* in \(0, n_features=32\], got 40"):
        planted_features(10, n_features=32, active=40)


@pytest.mark.parametrize(
    "architecture, options",
    [("topk", dict(k=3)), ("relu", dict(l1_coefficient=1.0))],
)
def test_train_sae_recovers_planted_features(architecture: str, options: dict[str, Any]) -> None:
    x, true = planted_features(8192, d_in=16, n_features=32, active=3.0, seed=0)
    sae = train_sae(
        activations=x, d_sae=64, architecture=architecture, steps=500, batch_size=256, display=False, **options
    )
    assert isinstance(sae, SparseAutoencoder) and sae.architecture == architecture and sae.d_sae == 64
    recovery = feature_recovery(true, sae.W_dec)
    assert float(recovery.mean()) >= 0.9, f"{architecture}: mean recovery {float(recovery.mean()):.4f}"
    assert float(recovery.min()) >= 0.8, f"{architecture}: worst feature {float(recovery.min()):.4f}"
    with torch.no_grad():
        fve = float(explained_variance(x, sae(x)))
        l0 = float((sae.encode(x) > 0).float().sum(-1).mean())
    assert fve > 0.75, fve  # the returned SAE reads raw activations (the training scale is folded in)
    if architecture == "topk":
        assert l0 <= 3.0 + 1e-6


# ----- SAETrainer on activations: frames, history, NaN, errors ------------------------------------


def test_trainer_on_activations_history_and_frames(capture: Callable[[Any], Any], ask: Callable[..., str]) -> None:
    x, _ = planted_features(2000, d_in=16, n_features=32, seed=1)
    trainer = SAETrainer(activations=x, d_sae=32, k=4, steps=20, batch_size=64, frame_rate=1e6)
    assert trainer.status == "idle" and trainer.hook == "" and (trainer.d_in, trainer.d_sae) == (16, 32)
    assert trainer.architecture == "topk"
    sent = capture(trainer)
    trainer.run()
    assert trainer.status == "done" and trainer.step == 20 and trainer.error == ""
    assert trainer.tokens_seen == 20 * 64
    history = trainer.history
    assert list(history) == ["step", *METRICS]
    assert history["step"].tolist() == [5.0, 10.0, 15.0, 20.0]  # one row per 5-step chunk
    for name in METRICS:
        assert history[name].shape == (4,) and bool(torch.isfinite(history[name]).all()), name
    assert bool((history["l0"] <= 4).all()) and bool((history["l0"] > 0).all())
    assert bool((history["dead"] == 0).all())
    assert torch.equal(history["loss"], history["mse"])  # topk: the loss is the MSE
    assert trainer.sae.hook_name is None

    pushed = [(c, b) for c, b in list(sent) if c.get("type") == "event" and c.get("event") == "frame"]
    assert [c["result"]["step"] for c, _ in pushed] == [5, 10, 15, 20, 20]  # each chunk, then the final frame
    for content, buffers in pushed:
        result = content["result"]
        assert result["metrics"] == METRICS and result["total"] == 20
        assert result["steps"]["dtype"] == "int32" and result["values"]["dtype"] == "float32"
        steps = decode_array(result["steps"], buffers)
        values = decode_array(result["values"], buffers)
        T = result["step"] // 5
        assert steps.dtype == np.int32 and steps.shape == (T,)
        assert values.dtype == np.float32 and values.shape == (5, T)
        assert result["tokens"] == result["step"] * 64
    last_steps = decode_array(pushed[-1][0]["result"]["steps"], pushed[-1][1])
    last_values = decode_array(pushed[-1][0]["result"]["values"], pushed[-1][1])
    assert last_steps.tolist() == [5, 10, 15, 20]
    expected = np.stack([history[name].numpy() for name in METRICS]).astype(np.float32)
    np.testing.assert_array_equal(last_values, expected)

    rid = ask(trainer, "frame")
    sent.wait(rid)
    content, buffers = sent.reply(rid)
    assert content["ok"] and content["result"]["metrics"] == METRICS
    np.testing.assert_array_equal(decode_array(content["result"]["values"], buffers), expected)


def test_relu_trainer_counts_dead_features() -> None:
    x, _ = planted_features(500, d_in=8, n_features=16, seed=2)
    trainer = SAETrainer(activations=x, d_sae=16, architecture="relu", steps=10, batch_size=32, dead_after=1)
    with torch.no_grad():
        trainer._sae.b_enc.fill_(-1e3)  # no feature can fire: after one batch all are dead
    trainer._reset_state = lambda: None  # keep the crippled encoder for this run
    trainer.run()
    assert trainer.history["dead"].tolist() == [16.0, 16.0]
    assert trainer.history["l0"].tolist() == [0.0, 0.0]


def test_nan_in_training_warns_and_returns_the_last_good_sae(monkeypatch: pytest.MonkeyPatch) -> None:
    x, _ = planted_features(2000, d_in=16, n_features=32, seed=1)
    options = dict(activations=x, d_sae=32, k=4, batch_size=64, display=False)
    reference = train_sae(steps=20, **options)  # the same run, stopped by itself after 20 steps
    real_take = TensorStream.take
    calls = {"n": 0}

    def take(self: TensorStream, n: int) -> torch.Tensor:
        calls["n"] += 1
        batch = real_take(self, n)
        return batch if calls["n"] <= 20 else torch.full_like(batch, float("nan"))

    monkeypatch.setattr(TensorStream, "take", take)
    with pytest.warns(RuntimeWarning, match=r"NaN") as record:
        sae = train_sae(steps=60, **options)
    message = str(record[0].message)
    assert "steps 21-25" in message and "back at step 20" in message, message
    assert calls["n"] == 25  # it stopped at the first bad chunk
    for name, p in sae.state_dict().items():
        assert bool(torch.isfinite(p).all()), name
        assert torch.equal(p, reference.state_dict()[name]), name


def test_nan_in_training_on_the_trainer(monkeypatch: pytest.MonkeyPatch) -> None:
    x, _ = planted_features(1000, d_in=16, n_features=32, seed=1)
    trainer = SAETrainer(activations=x, d_sae=32, k=4, steps=40, batch_size=32)
    real_take = TensorStream.take
    calls = {"n": 0}
    saved: dict[str, Any] = {}

    def take(self: TensorStream, n: int) -> torch.Tensor:
        calls["n"] += 1
        if calls["n"] == 11:  # the first step of the third chunk: the weights after 10 good steps
            saved["sae"] = {k: v.clone() for k, v in trainer._sae.state_dict().items()}
        batch = real_take(self, n)
        return batch if calls["n"] <= 12 else torch.full_like(batch, float("nan"))

    monkeypatch.setattr(TensorStream, "take", take)
    trainer.start()
    trainer.wait(60)
    assert trainer.status == "error" and "NaN" in trainer.error and "steps 11-15" in trainer.error
    assert trainer.step == 10 and trainer.progress == {"done": 10, "total": 40}
    for name, p in trainer._sae.state_dict().items():
        assert torch.equal(p, saved["sae"][name]), name


def test_other_errors_in_training_raise_runtime_error(monkeypatch: pytest.MonkeyPatch) -> None:
    x, _ = planted_features(500, d_in=8, n_features=16, seed=1)
    real_take = TensorStream.take
    calls = {"n": 0}

    def take(self: TensorStream, n: int) -> torch.Tensor:
        calls["n"] += 1
        if calls["n"] == 7:
            raise OSError("disk on fire")
        return real_take(self, n)

    monkeypatch.setattr(TensorStream, "take", take)
    with pytest.raises(RuntimeError, match=r"SAE training failed: OSError: disk on fire") as info:
        train_sae(activations=x, d_sae=16, k=2, steps=20, batch_size=16, display=False)
    assert isinstance(info.value.__cause__, OSError)


def test_bad_input_with_activations() -> None:
    x = torch.randn(100, 8)
    with pytest.raises(ValueError, match=r"d_sae must be a positive integer, got 0"):
        SAETrainer(activations=x, d_sae=0)
    with pytest.raises(ValueError, match=r"d_sae must be a positive integer, got 0"):
        SAETrainer(activations=x, d_sae=0, architecture="relu")
    with pytest.raises(ValueError, match=r"lr must be a positive finite number, got -0.001"):
        SAETrainer(activations=x, d_sae=16, lr=-1e-3)
    with pytest.raises(ValueError, match=r"lr must be a positive finite number, got 0"):
        SAETrainer(activations=x, d_sae=16, lr=0)
    with pytest.raises(ValueError, match=r"l1_coefficient must be a non-negative finite number, got nan"):
        SAETrainer(activations=x, d_sae=16, architecture="relu", l1_coefficient=float("nan"))
    with pytest.raises(ValueError, match=r"steps must be a positive integer, got 0"):
        SAETrainer(activations=x, d_sae=16, steps=0)
    with pytest.raises(ValueError, match=r"1\.\.d_sae=16; got 32"):
        SAETrainer(activations=x, d_sae=16, k=32)
    with pytest.raises(ValueError, match=r"k only applies to architecture='topk'"):
        SAETrainer(activations=x, d_sae=16, architecture="relu", k=4)
    bad = x.clone()
    bad[3, 2] = float("nan")
    with pytest.raises(ValueError, match=r"activations contain NaN or inf"):
        SAETrainer(activations=bad, d_sae=16)
    with pytest.raises(ValueError, match=r"activations must be a tensor \[n_vectors, d_in\], got \[100\]"):
        SAETrainer(activations=x[:, 0], d_sae=16)
    with pytest.raises(ValueError, match=r"got \[2, 50, 8\]"):
        SAETrainer(activations=x.reshape(2, 50, 8), d_sae=16)
    with pytest.raises(ValueError, match=r"got ndarray"):
        SAETrainer(activations=x.numpy(), d_sae=16)
    with pytest.raises(ValueError, match=r"got \[0, 8\]"):
        SAETrainer(activations=x[:0], d_sae=16)
    with pytest.raises(ValueError, match=r"model, hook= and tokens="):
        SAETrainer(d_sae=16)
    with pytest.raises(ValueError, match=r"d_sae must be a positive integer, got 0"):
        train_sae(activations=x, d_sae=0, display=False)


# ----- SAETrainer on a model ----------------------------------------------------------------------


def test_trainer_on_a_model(native_model: Any, capture: Callable[[Any], Any]) -> None:
    trainer = SAETrainer(
        native_model,
        hook=HOOK,
        tokens=SENTENCES,
        d_sae=32,
        k=4,
        steps=10,
        batch_size=16,
        buffer_size=32,
        windows_per_batch=2,
        frame_rate=1e6,
    )
    assert (trainer.hook, trainer.d_in, trainer.d_sae) == (HOOK, 64, 32)
    sent = capture(trainer)
    trainer.run()
    assert trainer.status == "done" and trainer.error == ""
    assert trainer.tokens_seen == 10 * 16
    history = trainer.history
    assert list(history) == ["step", *METRICS] and history["step"].tolist() == [5.0, 10.0]
    assert all(bool(torch.isfinite(history[name]).all()) for name in METRICS)
    sae = trainer.sae
    assert sae.hook_name == HOOK and (sae.d_in, sae.d_sae, sae.k) == (64, 32, 4)
    assert all(bool(torch.isfinite(p).all()) for p in sae.parameters())
    frames = [c for c, _ in list(sent) if c.get("type") == "event" and c.get("event") == "frame"]
    assert frames and frames[-1]["result"]["metrics"] == METRICS and frames[-1]["result"]["tokens"] == 160


def test_train_sae_on_a_model_with_a_shorthand_hook(native_model: Any) -> None:
    sae = train_sae(
        native_model,
        "resid_post",
        SENTENCES[:2],
        layer=0,
        d_sae=16,
        k=2,
        steps=5,
        batch_size=8,
        buffer_size=16,
        display=False,
    )
    assert sae.hook_name == HOOK and sae.d_in == 64
    with pytest.raises(ValueError, match=r"pass layer=0\.\.1"):
        train_sae(native_model, "resid_post", SENTENCES[:2], d_sae=16, display=False)


def expected_vectors(model: Any, rows: list[torch.Tensor], bos: int) -> torch.Tensor:
    """The hook's vectors for each row run alone, leaving out a leading BOS."""
    out = []
    for row in rows:
        _, cache = model.run_with_cache(row[None], names_filter=[HOOK])
        acts = cache[HOOK][0]
        out.append(acts[1:] if int(row[0]) == bos else acts)
    return torch.cat(out).float()


def test_activation_stream_leaves_out_bos_and_padding(native_model: Any) -> None:
    bos = native_model.tokenizer.bos_token_id
    assert bos is not None
    rows = [
        torch.tensor([bos, 5, 6, 7, 8]),  # BOS + 4 tokens
        torch.tensor([9, 10]),  # no BOS: both count
        torch.tensor([bos, 11]),  # BOS + 1 token; padded to 5 in the batch
    ]
    trainer = SAETrainer(native_model, hook=HOOK, tokens=rows, d_sae=16, k=2, windows_per_batch=3)
    stream = trainer._stream
    assert isinstance(stream, ActivationStream)
    got = stream._capture()
    assert got.shape == (4 + 2 + 1, 64)
    assert torch.allclose(got, expected_vectors(native_model, rows, bos), atol=1e-4)
    assert stream.epochs == 1  # three windows: the corpus was read once

    texts = SENTENCES[:3]
    text_trainer = SAETrainer(native_model, hook=HOOK, tokens=texts, d_sae=16, k=2, windows_per_batch=3)
    n_tokens = [native_model.to_tokens(t, prepend_bos=False).shape[-1] for t in texts]
    got = text_trainer._stream._capture()
    assert got.shape == (sum(n_tokens), 64)  # every text token, none of the BOS each window starts with
    windows = [torch.cat([torch.tensor([bos]), native_model.to_tokens(t, prepend_bos=False)[0].cpu()]) for t in texts]
    assert torch.allclose(got, expected_vectors(native_model, windows, bos), atol=1e-4)


def test_activation_stream_holds_a_buffer_not_the_corpus(native_model: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    corpus = SENTENCES * 10
    corpus_tokens = sum(native_model.to_tokens(t, prepend_bos=False).shape[-1] for t in corpus)
    sizes: list[int] = []
    captured: list[int] = []
    real_refill, real_capture = ActivationStream._refill, ActivationStream._capture

    def refill(self: ActivationStream, n: int) -> None:
        real_refill(self, n)
        sizes.append(int(self._buffer.shape[0]))

    def capture_windows(self: ActivationStream) -> torch.Tensor:
        out = real_capture(self)
        captured.append(int(out.shape[0]))
        return out

    monkeypatch.setattr(ActivationStream, "_refill", refill)
    monkeypatch.setattr(ActivationStream, "_capture", capture_windows)
    trainer = SAETrainer(
        native_model,
        hook=HOOK,
        tokens=corpus,
        d_sae=16,
        k=2,
        steps=10,
        batch_size=16,
        buffer_size=32,
        windows_per_batch=2,
    )
    trainer.run()
    assert trainer.status == "done" and trainer.tokens_seen == 160
    window_cap = 2 * native_model.cfg.n_ctx  # one capture adds at most windows_per_batch windows
    assert sizes and max(sizes) <= 32 + 16 + window_cap, sizes
    assert sum(captured) < corpus_tokens / 2, (sum(captured), corpus_tokens)  # captured on demand
    assert 160 <= sum(captured)
    assert trainer._stream.epochs == 0
    assert trainer._stream._buffer.shape[0] <= 32 + window_cap


def test_bad_input_with_a_model(native_model: Any) -> None:
    with pytest.raises(ValueError, match=r"d_sae must be a positive integer, got 0"):
        SAETrainer(native_model, hook=HOOK, tokens=SENTENCES[:1], d_sae=0)
    with pytest.raises(ValueError, match=r"lr must be a positive finite number, got -0.01"):
        SAETrainer(native_model, hook=HOOK, tokens=SENTENCES[:1], d_sae=16, lr=-0.01)
    with pytest.raises(
        ValueError, match=r"unknown hook name 'blocks.0.hook_resid_pots'.*did you mean.*blocks\.0\.hook_resid_post"
    ):
        SAETrainer(native_model, hook="blocks.0.hook_resid_pots", tokens=SENTENCES[:1], d_sae=16)
    with pytest.raises(ValueError, match=r"not one vector per token"):
        SAETrainer(native_model, hook="blocks.0.attn.hook_pattern", tokens=SENTENCES[:1], d_sae=16)
    with pytest.raises(ValueError, match=r"either activations=, or a model with hook= and tokens=, not both"):
        SAETrainer(native_model, hook=HOOK, tokens=SENTENCES[:1], activations=torch.randn(10, 64), d_sae=16)
    with pytest.raises(ValueError, match=r"not both"):
        SAETrainer(native_model, activations=torch.randn(10, 64), d_sae=16)
    with pytest.raises(ValueError, match=r"model, hook= and tokens="):
        SAETrainer(native_model, hook=HOOK, d_sae=16)
    with pytest.raises(ValueError, match=r"corpus is empty"):
        SAETrainer(native_model, hook=HOOK, tokens=[], d_sae=16)
