"""The toy model of superposition: analysis functions, and SuperpositionToy training live in the kernel."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch
import traitlets

import mi_widgets as mw
import mi_widgets.widgets.superposition as superposition_widget
from mi_widgets.analysis.superposition import (
    ToyModel,
    check_toy_settings,
    feature_dimensionality,
    feature_importance,
    sample_features,
    toy_loss,
)
from mi_widgets.transport.codec import decode_array
from mi_widgets.widgets.training import TrainingDiverged, TrainingWidget

ADAPTIVE_CHUNK_SIZE = TrainingWidget._chunk_size  # before fixed_chunks replaces it


@pytest.fixture(autouse=True)
def fixed_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Chunks of exactly ``_chunk`` steps (not sized by timing), so step numbers in these tests are exact."""
    monkeypatch.setattr(TrainingWidget, "_chunk_size", lambda self, per_step: self._chunk)


FRAME_ARRAYS = ("W", "b", "importance", "gram", "norms", "dimensionality", "loss_steps", "loss")


def wait_for(condition: Callable[[], bool], timeout: float = 30.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {timeout} s")
        time.sleep(0.002)


def events(sent: list, name: str = "frame") -> list[tuple[dict[str, Any], list[Any]]]:
    return [(c, b) for c, b in list(sent) if c.get("type") == "event" and c.get("event") == name]


def decode_frame(result: dict[str, Any], buffers: list[Any]) -> dict[str, np.ndarray]:
    return {name: decode_array(result[name], buffers) for name in FRAME_ARRAYS}


# ----- check_toy_settings ------------------------------------------------------------------


def test_check_toy_settings_accepts_and_normalises() -> None:
    assert check_toy_settings(5, 2, [0, 0.7, 0.9], 0.9) == [0.0, 0.7, 0.9]
    assert check_toy_settings(5, 2, 0.5, 1) == [0.5]  # one number means one instance
    assert check_toy_settings(5, 2, (0.0,), 1.0) == [0.0]
    assert all(isinstance(v, float) for v in check_toy_settings(3, 1, [0, 0], 0.5))


@pytest.mark.parametrize(
    "kwargs, expected, came",
    [
        (dict(sparsity=[0.0, -0.1]), "[0, 1)", "-0.1"),
        (dict(sparsity=[1.0]), "[0, 1)", "1.0"),
        (dict(sparsity=[0.5, 1.5]), "[0, 1)", "1.5"),
        (dict(sparsity=[float("nan")]), "[0, 1)", "nan"),
        (dict(sparsity=[float("inf")]), "[0, 1)", "inf"),
        (dict(sparsity=-0.2), "[0, 1)", "-0.2"),
        (dict(sparsity=["0.5"]), "[0, 1)", "'0.5'"),
        (dict(sparsity=[]), "[0, 1)", "empty"),
        (dict(n_hidden=0), ">= 1", "got 0"),
        (dict(n_features=-3), ">= 1", "got -3"),
        (dict(n_hidden=2.0), ">= 1", "got 2.0"),
        (dict(importance_decay=0), "(0, 1]", "got 0"),
        (dict(importance_decay=1.5), "(0, 1]", "got 1.5"),
        (dict(importance_decay=-0.5), "(0, 1]", "got -0.5"),
        (dict(importance_decay=float("nan")), "(0, 1]", "got nan"),
    ],
)
def test_check_toy_settings_errors_name_expected_and_got(kwargs: dict[str, Any], expected: str, came: str) -> None:
    settings = dict(n_features=5, n_hidden=2, sparsity=[0.0, 0.9], importance_decay=0.9)
    settings.update(kwargs)
    with pytest.raises(ValueError) as info:
        check_toy_settings(**settings)
    message = str(info.value)
    name = next(iter(kwargs))
    assert name in message, message
    assert expected in message, message
    assert came in message, message


# ----- feature_dimensionality --------------------------------------------------------------


def test_dimensionality_dedicated_axes_and_zero_column() -> None:
    W = torch.tensor([[2.0, 0.0, 0.0], [0.0, 0.5, 0.0]])  # features are columns; the third is absent
    assert torch.allclose(feature_dimensionality(W), torch.tensor([1.0, 1.0, 0.0]), atol=1e-6)


def test_dimensionality_antipodal_pair() -> None:
    W = torch.tensor([[1.0, -1.0, 0.0], [0.0, 0.0, 1.0]])  # features 0 and 1 share one axis, opposite ways
    assert torch.allclose(feature_dimensionality(W), torch.tensor([0.5, 0.5, 1.0]), atol=1e-6)
    assert torch.allclose(feature_dimensionality(torch.tensor([[3.0, -3.0]])), torch.tensor([0.5, 0.5]), atol=1e-6)


def test_dimensionality_regular_pentagon() -> None:
    angles = torch.arange(5, dtype=torch.float64) * 2 * math.pi / 5
    W = torch.stack([angles.cos(), angles.sin()])  # [2, 5]
    dims = feature_dimensionality(W)
    assert torch.allclose(dims, torch.full((5,), 0.4, dtype=torch.float64), atol=1e-9)
    assert float(dims.sum()) == pytest.approx(2.0)  # the two dimensions are shared out


def test_dimensionality_is_batched_over_leading_axes() -> None:
    angles = torch.arange(5) * 2 * math.pi / 5
    pentagon = torch.stack([angles.cos(), angles.sin()])
    dedicated = torch.zeros(2, 5)
    dedicated[0, 0] = dedicated[1, 1] = 1.0
    W = torch.stack([dedicated, pentagon, torch.zeros(2, 5)])  # [3, 2, 5]
    dims = feature_dimensionality(W)
    assert dims.shape == (3, 5)
    assert torch.allclose(dims[0], torch.tensor([1.0, 1.0, 0.0, 0.0, 0.0]), atol=1e-6)
    assert torch.allclose(dims[1], torch.full((5,), 0.4), atol=1e-5)
    assert torch.equal(dims[2], torch.zeros(5))  # all-zero weights: no NaN


# ----- sample_features, importance, ToyModel, toy_loss --------------------------------------


def test_sample_features_sparsity_statistics() -> None:
    sparsity = torch.tensor([0.0, 0.5, 0.9])
    x = sample_features(20_000, sparsity, 4, torch.Generator().manual_seed(0))
    assert x.shape == (20_000, 3, 4)
    assert bool((x >= 0).all()) and bool((x <= 1).all())
    zero_fraction = (x == 0).float().mean(dim=(0, 2))
    assert torch.allclose(zero_fraction, sparsity, atol=0.01), zero_fraction
    for i in range(3):
        present = x[:, i][x[:, i] > 0]
        assert float(present.mean()) == pytest.approx(0.5, abs=0.01)  # U[0, 1] where present
    same = sample_features(20_000, sparsity, 4, torch.Generator().manual_seed(0))
    assert torch.equal(x, same)  # the generator makes it reproducible


def test_feature_importance() -> None:
    assert torch.allclose(feature_importance(4, 0.5), torch.tensor([1.0, 0.5, 0.25, 0.125]))
    assert torch.equal(feature_importance(3, 1.0), torch.ones(3))


def test_toy_model_and_loss_shapes() -> None:
    model = ToyModel(3, 5, 2, generator=torch.Generator().manual_seed(0))
    assert model.W.shape == (3, 2, 5) and model.b.shape == (3, 5)
    assert torch.equal(model.b.detach(), torch.zeros(3, 5))
    bound = math.sqrt(6 / 7)
    assert float(model.W.detach().abs().max()) <= bound
    x = sample_features(16, torch.tensor([0.0, 0.5, 0.9]), 5, torch.Generator().manual_seed(1))
    out = model(x)
    assert out.shape == (16, 3, 5) and bool((out >= 0).all())
    # Instance i reads only its own W_i: x' = ReLU(W_i^T W_i x + b_i)
    expected = torch.relu(torch.einsum("imn,imk,bik->bin", model.W, model.W, x) + model.b)
    assert torch.allclose(out, expected, atol=1e-6)
    importance = feature_importance(5, 0.9)
    loss = toy_loss(model, x, importance)
    assert loss.shape == (3,)
    manual = (((out - x) ** 2) * importance).sum(-1).mean(0)
    assert torch.allclose(loss, manual)


# ----- SuperpositionToy: the paper's picture ------------------------------------------------


def test_defaults_train_to_the_papers_picture() -> None:
    toy = mw.SuperpositionToy(autostart=False)
    assert (toy.n_features, toy.n_hidden, toy.n_instances) == (5, 2, 3)
    assert toy.sparsity == [0.0, 0.7, 0.9] and toy.status == "idle"
    toy.run()
    assert toy.status == "done" and toy.step == 3000 and toy.error == ""
    dims = toy.dimensionality
    assert dims.shape == (3, 5)
    assert torch.allclose(dims, feature_dimensionality(toy.W), atol=1e-6)
    # Dense: the two most important features get a dedicated dimension each, the rest are dropped.
    assert bool((dims[0, :2] > 0.95).all()), dims[0]
    assert bool((dims[0, 2:] < 0.05).all()), dims[0]
    # Sparse (0.9): all five share the plane as a pentagon, 2/5 of a dimension each.
    assert bool(((dims[2] - 0.4).abs() < 0.05).all()), dims[2]
    norms = toy.W[2].norm(dim=0)
    assert bool((norms > 0.8).all()), norms  # every feature represented
    cos = torch.nn.functional.normalize(toy.W[2], dim=0)
    angles = torch.atan2(cos[1], cos[0]).sort().values
    gaps = torch.diff(torch.cat([angles, angles[:1] + 2 * math.pi]))
    assert torch.allclose(gaps, torch.full((5,), 2 * math.pi / 5), atol=0.15), gaps  # evenly spaced
    losses = toy.losses
    assert losses.shape == (300, 3) and bool((losses[-1] < losses[0]).all())


def test_W_is_a_cpu_copy() -> None:
    toy = mw.SuperpositionToy(n_features=4, n_hidden=3, sparsity=[0.5, 0.8], steps=20, batch_size=32, autostart=False)
    W = toy.W
    assert W.shape == (2, 3, 4) and W.device.type == "cpu" and not W.requires_grad
    W.zero_()
    assert not torch.equal(toy.W, W)  # changing the copy leaves the model alone
    toy.run()
    assert not torch.equal(toy.W, torch.zeros(2, 3, 4))
    assert toy.b.shape == (2, 4) and toy.losses.shape == (2, 2)


# ----- settings restart training; bad settings do not -------------------------------------------


@pytest.mark.parametrize("name, value", [("sparsity", [0.1, 0.2, 0.3]), ("importance_decay", 0.5)])
def test_setting_a_slider_restarts_training(capture: Callable[[Any], Any], name: str, value: Any) -> None:
    toy = mw.SuperpositionToy(steps=10**6, batch_size=32, frame_rate=1e6, autostart=False)
    sent = capture(toy)
    statuses: list[str] = []
    toy.observe(lambda change: statuses.append(change["new"]), names=["status"])
    toy.start()
    try:
        wait_for(lambda: toy.step >= 200, what="200 steps")
        old_W = toy.W
        setattr(toy, name, value)
        assert toy.status == "running" and toy.running
        assert statuses[:3] == ["running", "stopped", "running"]
        frame_key = "importance_decay" if name == "importance_decay" else "sparsity"

        def new_frames() -> list[dict[str, Any]]:
            return [c["result"] for c, _ in events(sent) if c["result"][frame_key] == value]

        wait_for(lambda: len(new_frames()) >= 2, what="frames of the new run")
        first = new_frames()[0]
        assert first["step"] == toy._chunk == 10  # the step counter starts again from zero
        assert first["total"] == 10**6
        old_frames = [c["result"] for c, _ in events(sent) if c["result"][frame_key] != value]
        assert old_frames[-1]["step"] >= 200  # the old run's last frame, then the new run from the start
        assert getattr(toy, name) == value
        assert not torch.equal(toy.W, old_W)
    finally:
        toy.stop()
        toy.wait(30)
    assert toy.status == "stopped"


@pytest.mark.parametrize("bad", [[-0.1, 0.0, 0.0], [0.0, 1.0, 0.5], [float("nan"), 0.0, 0.0], [0.5]])
def test_invalid_sparsity_from_python_raises_trait_error_and_does_not_restart(bad: list[float]) -> None:
    toy = mw.SuperpositionToy(steps=20, batch_size=32, autostart=False)
    toy.run()
    W = toy.W
    with pytest.raises(traitlets.TraitError) as info:
        toy.sparsity = bad
    assert "sparsity" in str(info.value)
    assert toy.sparsity == [0.0, 0.7, 0.9]
    assert toy.status == "done" and not toy.running and toy._thread is None
    assert torch.equal(toy.W, W) and toy.step == 20


def test_invalid_importance_decay_raises_trait_error() -> None:
    toy = mw.SuperpositionToy(steps=20, batch_size=32, autostart=False)
    with pytest.raises(traitlets.TraitError) as info:
        toy.importance_decay = 0.0
    assert "importance_decay" in str(info.value) and "(0, 1]" in str(info.value)
    assert toy.importance_decay == 0.9 and toy.status == "idle" and toy._thread is None


@pytest.mark.parametrize("state", [{"sparsity": [-0.1, 0.0, 0.0]}, {"importance_decay": 1.5}])
def test_invalid_setting_from_the_view_is_rolled_back_and_does_not_restart(state: dict[str, Any]) -> None:
    """A slider value arrives through ``set_state`` (inside ``hold_trait_notifications``)."""
    toy = mw.SuperpositionToy(steps=20, batch_size=32, autostart=False)
    with pytest.raises(Exception) as info:
        toy.set_state(state)
    toy.wait(30)
    # traitlets rolls a held change back only on TraitError; anything else keeps the bad value
    # and still fires the change, which restarts training with it.
    assert (toy.sparsity, toy.importance_decay) == ([0.0, 0.7, 0.9], 0.9), "the bad value was kept"
    assert toy.status == "idle" and toy._thread is None, "training restarted with the bad value"
    assert isinstance(info.value, traitlets.TraitError), repr(info.value)


def test_stop_stops_and_keeps_the_weights() -> None:
    toy = mw.SuperpositionToy(steps=10**6, batch_size=32, autostart=False)
    toy.start()
    wait_for(lambda: toy.step >= 20, what="20 steps")
    toy.stop()
    toy.wait(30)
    assert not toy.running
    assert toy.status == "stopped" and 20 <= toy.step < 10**6
    assert toy.progress == {"done": toy.step, "total": 10**6}
    assert bool(torch.isfinite(toy.W).all())
    W = toy.W
    time.sleep(0.05)
    assert torch.equal(toy.W, W)  # nothing trains any more


def test_start_stop_requests(capture: Callable[[Any], Any], ask: Callable[..., str]) -> None:
    toy = mw.SuperpositionToy(steps=10**6, batch_size=32, autostart=False)
    sent = capture(toy)
    rid = ask(toy, "start")
    sent.wait(rid)
    assert sent.reply(rid)[0]["ok"] and toy.status == "running"
    wait_for(lambda: toy.step > 0, what="a step")
    rid = ask(toy, "stop")
    sent.wait(rid)
    toy.wait(30)
    assert toy.status == "stopped" and 0 < toy.step < 10**6


def test_bad_constructor_arguments() -> None:
    with pytest.raises(ValueError, match=r"sparsity values must be in \[0, 1\).*-0.5"):
        mw.SuperpositionToy(sparsity=[-0.5], autostart=False)
    with pytest.raises(ValueError, match="n_hidden must be an integer >= 1, got 0"):
        mw.SuperpositionToy(n_hidden=0, autostart=False)
    with pytest.raises(ValueError, match="steps must be a positive integer, got 0"):
        mw.SuperpositionToy(steps=0, autostart=False)
    with pytest.raises(ValueError, match="lr must be a positive learning rate, got -0.1"):
        mw.SuperpositionToy(lr=-0.1, autostart=False)
    with pytest.raises(ValueError, match="frame_rate must be a positive number"):
        mw.SuperpositionToy(frame_rate=0, autostart=False)


# ----- frames ---------------------------------------------------------------------------------


def check_frame(result: dict[str, Any], arrays: dict[str, np.ndarray], I: int, m: int, n: int) -> int:
    """Check a decoded frame's dtypes, shapes and internal consistency; return its number of loss points."""
    for name in FRAME_ARRAYS:
        assert result[name]["dtype"] == ("int32" if name == "loss_steps" else "float32"), name
    T = arrays["loss_steps"].shape[0]
    assert arrays["W"].shape == (I, m, n)
    assert arrays["b"].shape == (I, n)
    assert arrays["importance"].shape == (n,)
    assert arrays["gram"].shape == (I, n, n)
    assert arrays["norms"].shape == (I, n)
    assert arrays["dimensionality"].shape == (I, n)
    assert arrays["loss_steps"].shape == (T,) and arrays["loss"].shape == (I, T)
    W = torch.from_numpy(arrays["W"].copy())
    np.testing.assert_allclose(arrays["gram"], torch.einsum("ima,imb->iab", W, W).numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(arrays["norms"], W.norm(dim=1).numpy(), rtol=1e-5)
    np.testing.assert_allclose(arrays["dimensionality"], feature_dimensionality(W).numpy(), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(arrays["importance"], result["importance_decay"] ** np.arange(n), rtol=1e-6)
    assert len(result["sparsity"]) == I
    return T


def test_frame_request_and_pushed_frames(capture: Callable[[Any], Any], ask: Callable[..., str]) -> None:
    toy = mw.SuperpositionToy(
        n_features=5,
        n_hidden=2,
        sparsity=[0.0, 0.9],
        importance_decay=0.8,
        steps=50,
        batch_size=32,
        frame_rate=1e6,
        autostart=False,
    )
    sent = capture(toy)
    rid = ask(toy, "frame")  # before any training: no loss points yet
    sent.wait(rid)
    content, buffers = sent.reply(rid)
    assert content["ok"], content
    result = content["result"]
    assert (result["step"], result["total"], result["sparsity"]) == (0, 50, [0.0, 0.9])
    assert result["importance_decay"] == pytest.approx(0.8)
    arrays = decode_frame(result, buffers)
    assert check_frame(result, arrays, 2, 2, 5) == 0
    np.testing.assert_array_equal(arrays["W"], toy.W.numpy())

    toy.run()
    pushed = events(sent)
    assert len(pushed) == 6  # one per 10-step chunk (frame_rate is no limit here) and the final one
    steps_seen = [c["result"]["step"] for c, _ in pushed]
    assert steps_seen == [10, 20, 30, 40, 50, 50]
    for content, buffers in pushed:
        arrays = decode_frame(content["result"], buffers)
        T = check_frame(content["result"], arrays, 2, 2, 5)
        assert T == content["result"]["step"] // 10
        assert list(arrays["loss_steps"]) == [10 * (i + 1) for i in range(T)]
        assert set(content) == {"type", "event", "result", "buffer_lengths"}
        assert content["buffer_lengths"] == [len(bytes(memoryview(b).cast("B"))) for b in buffers]
    last = decode_frame(pushed[-1][0]["result"], pushed[-1][1])
    np.testing.assert_array_equal(last["W"], toy.W.numpy())
    np.testing.assert_allclose(last["loss"], toy.losses.T.numpy(), rtol=1e-6)

    rid = ask(toy, "frame")
    sent.wait(rid)
    content, buffers = sent.reply(rid)
    arrays = decode_frame(content["result"], buffers)
    assert check_frame(content["result"], arrays, 2, 2, 5) == 5 and content["result"]["step"] == 50
    np.testing.assert_array_equal(arrays["W"], toy.W.numpy())


def test_frame_loss_curve_is_thinned_keeping_the_latest_point(
    monkeypatch: pytest.MonkeyPatch, capture: Callable[[Any], Any], ask: Callable[..., str]
) -> None:
    monkeypatch.setattr(superposition_widget, "MAX_CURVE_POINTS", 4)
    toy = mw.SuperpositionToy(n_features=3, n_hidden=1, sparsity=[0.5], steps=100, batch_size=8, autostart=False)
    toy.run()  # 10 logged chunks: more than the 4 points a frame may carry here
    sent = capture(toy)
    rid = ask(toy, "frame")
    sent.wait(rid)
    content, buffers = sent.reply(rid)
    arrays = decode_frame(content["result"], buffers)
    assert list(arrays["loss_steps"]) == [10, 40, 70, 100]  # every third point, ending at the latest
    np.testing.assert_allclose(arrays["loss"], toy.losses[[0, 3, 6, 9]].T.numpy(), rtol=1e-6)


def test_pushes_are_throttled_by_frame_rate(capture: Callable[[Any], Any]) -> None:
    fast = mw.SuperpositionToy(steps=300, batch_size=16, frame_rate=1e6, autostart=False)
    sent_fast = capture(fast)
    fast.run()
    assert len(events(sent_fast)) == 31  # every 10-step chunk, and the final frame

    slow = mw.SuperpositionToy(steps=300, batch_size=16, frame_rate=1.0, autostart=False)
    sent_slow = capture(slow)
    started = time.monotonic()
    slow.run()
    elapsed = time.monotonic() - started
    count = len(events(sent_slow))
    assert slow.status == "done"
    assert 2 <= count <= elapsed * 1.0 + 2, (count, elapsed)  # first chunk, at most one a second, final


# ----- NaN guard -------------------------------------------------------------------------------


@pytest.mark.parametrize("good_calls", [20, 15])
def test_nan_stops_training_and_keeps_the_last_good_weights(
    monkeypatch: pytest.MonkeyPatch, capture: Callable[[Any], Any], good_calls: int
) -> None:
    toy = mw.SuperpositionToy(steps=200, batch_size=32, autostart=False)
    sent = capture(toy)
    real = superposition_widget.sample_features
    calls = {"n": 0}
    chunk_start = (good_calls // 10) * 10  # the NaN spoils the chunk it is in; the chunk before is good
    snapshots: dict[int, torch.Tensor] = {}

    def sample(*args: Any, **kwargs: Any) -> torch.Tensor:
        calls["n"] += 1
        if calls["n"] == chunk_start + 1:
            snapshots["good"] = toy.W  # the weights after `chunk_start` steps, before the bad chunk
        x = real(*args, **kwargs)
        return x if calls["n"] <= good_calls else torch.full_like(x, float("nan"))

    monkeypatch.setattr(superposition_widget, "sample_features", sample)
    toy.start()
    toy.wait(60)
    assert toy.status == "error"
    assert "NaN" in toy.error
    assert f"steps {chunk_start + 1}-{chunk_start + 10}" in toy.error, toy.error
    assert f"back at step {chunk_start}" in toy.error, toy.error
    assert isinstance(toy.exception, TrainingDiverged)
    assert toy.step == chunk_start and toy.progress == {"done": chunk_start, "total": 200}
    W = toy.W
    assert bool(torch.isfinite(W).all()) and bool(torch.isfinite(toy.b).all())
    assert torch.equal(W, snapshots["good"])
    final = events(sent)[-1]
    assert final[0]["result"]["step"] == chunk_start
    np.testing.assert_array_equal(decode_array(final[0]["result"]["W"], final[1]), W.numpy())
    monkeypatch.setattr(superposition_widget, "sample_features", real)
    toy.start()  # a fresh run clears the error
    toy.wait(60)
    assert toy.status == "done" and toy.error == "" and toy.exception is None


def test_chunks_adapt_to_step_time() -> None:
    """Slow steps get shorter chunks so a frame can go out every 1/frame_rate s; the first chunk is one step."""
    toy = mw.SuperpositionToy(autostart=False, frame_rate=20)  # a frame every 50 ms; at most _chunk steps
    size = ADAPTIVE_CHUNK_SIZE
    assert size(toy, None) == 1
    assert size(toy, 0.0001) == toy._chunk  # fast steps: capped
    assert size(toy, 0.01) == 5  # 50 ms / 10 ms
    assert size(toy, 0.2) == 1  # a step slower than a frame: one step per check


def test_a_toy_too_big_to_stream_is_refused_with_a_reason() -> None:
    with pytest.raises(ValueError, match=r"2 instances of 800 features are too many to stream W\^T W .*got 1,280,000"):
        mw.SuperpositionToy(n_features=800, n_hidden=20, sparsity=[0.9, 0.99], autostart=False)
