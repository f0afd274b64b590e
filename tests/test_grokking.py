"""Grokking: the live modular-addition training widget (training, frames, phases, kept checks, bad input)."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pytest
import torch

import mi_widgets as mw
from mi_widgets.analysis import fourier
from mi_widgets.analysis.fourier import grokking_phases as phases
from mi_widgets.transport.codec import decode_array
from mi_widgets.zoo import modadd

SMALL = dict(p=23, d_model=32, n_heads=2, d_mlp=64, lr=3e-3, device="cpu")


@pytest.fixture(scope="module")
def trained() -> Any:
    run = mw.Grokking(**SMALL, steps=200, check_every=20, n_checkpoints=4)
    run.run()
    yield run
    run.close()


def test_a_run_logs_checks_and_keeps_weights(trained: Any) -> None:
    run = trained
    assert run.status == "done" and run.step == 200 and run.error == ""
    history = run.history
    assert history["step"].tolist() == list(range(0, 201, 10))
    assert float(history["train_loss"][-1]) < float(history["train_loss"][0])
    assert float(history["train_acc"][-1]) == 1.0  # 23x23 pairs, 40% of them: memorised in 200 steps
    checks = run.checks
    assert checks["step"].tolist() == list(range(0, 201, 20))
    assert checks["spectrum"].shape == (11, 12)
    assert len(checks["key_frequencies"]) == 11
    # Thinned to at most n_checkpoints (+1 while thinning), always with the first and the last.
    kept = run.kept_steps
    assert kept[0] == 0 and kept[-1] == 200 and len(kept) <= 5
    assert run.params_at(199).keys() == run.params.keys()
    assert torch.equal(run.params_at(1000)["embed.weight"], run.params["embed.weight"])  # nearest: the last
    assert torch.equal(run.params_at(-1)["embed.weight"], run.params["embed.weight"])


def test_the_model_is_a_bridge_with_the_trained_weights(trained: Any) -> None:
    model = trained.to_model()
    tokens, labels = fourier.all_pairs(23)
    with torch.no_grad():
        logits = model(tokens)[:, -1]
    ref = modadd.forward(trained.params, tokens, n_heads=2)
    assert torch.allclose(logits, ref, atol=1e-4)
    view = mw.FourierView(model)  # what one just trained can be read at once
    assert view.p == 23
    view.close()
    first = trained.to_model(0)
    with torch.no_grad():
        assert not torch.allclose(first(tokens)[:, -1], logits)


def test_frame_is_what_the_view_draws(trained: Any, capture: Any, ask: Any) -> None:
    sent = capture(trained)
    rid = ask(trained, "frame")
    sent.wait(rid)
    content, buffers = sent.reply(rid)
    r = content["result"]
    assert r["step"] == 200 and r["total"] == 200 and r["p"] == 23
    assert r["metrics"] == ["train_loss", "test_loss", "train_acc", "test_acc"]
    steps = decode_array(r["steps"], buffers)
    values = decode_array(r["values"], buffers)
    assert steps.dtype == np.int32 and values.shape == (4, len(steps))
    np.testing.assert_allclose(values[0], trained.history["train_loss"].numpy(), rtol=1e-6)
    check_values = decode_array(r["check_values"], buffers)
    assert check_values.shape == (4, 11)
    np.testing.assert_allclose(check_values[2], trained.checks["weight_norm"].numpy(), rtol=1e-6)
    spectrum = decode_array(r["spectrum"], buffers)
    assert spectrum.shape == (11, 12) and spectrum.dtype == np.float32
    assert [p["name"] for p in r["phases"]][0] == "memorisation"
    assert r["phases"] == trained.phases


def test_progress_measures_from_kept_weights(trained: Any) -> None:
    m = trained.progress_measures([1, 2])
    assert m["step"].tolist() == trained.kept_steps
    for name in ("restricted_loss", "excluded_loss", "weight_norm", "key_fraction", "test_loss"):
        assert m[name].shape == (len(trained.kept_steps),) and bool(torch.isfinite(m[name]).all())
    assert float(m["weight_norm"][-1]) == pytest.approx(modadd.weight_norm(trained.params), rel=1e-6)


def test_phases_from_the_log() -> None:
    rows = [(0, 4.0, 4.0, 0.0, 0.0), (10, 1.0, 5.0, 1.0, 0.02), (20, 0.1, 3.0, 1.0, 0.6), (30, 0.0, 0.0, 1.0, 1.0)]
    assert phases(rows) == [
        {"name": "memorisation", "start": 0, "end": 10},
        {"name": "circuit formation", "start": 10, "end": 20},
        {"name": "cleanup", "start": 20, "end": 30},
        {"name": "generalised", "start": 30, "end": None},
    ]
    assert phases(rows[:2]) == [
        {"name": "memorisation", "start": 0, "end": 10},
        {"name": "circuit formation", "start": 10, "end": None},
    ]
    assert phases([]) == []


def test_background_training_starts_and_stops(capture: Any) -> None:
    run = mw.Grokking(**SMALL, steps=100_000)
    sent = capture(run)
    run.start()
    try:
        deadline = time.monotonic() + 60
        while run.step < 30 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert run.step >= 30 and run.running
        # The user's own model is untouched by the training thread: a snapshot is a copy.
        snapshot = run.params
        time.sleep(0.3)
        assert not torch.equal(snapshot["embed.weight"], run.params["embed.weight"])
    finally:
        run.stop()
        run.wait(60)
    assert run.status == "stopped" and 30 <= run.step < 100_000
    frames = [c for c, _ in sent if c.get("type") == "event" and c.get("event") == "frame"]
    assert frames, "no frame was pushed while training"
    run.close()


def test_selected_step_picks_the_weights_of_to_model(trained: Any) -> None:
    trained.selected_step = 0
    try:
        tokens, _ = fourier.all_pairs(23)
        with torch.no_grad():
            assert torch.allclose(trained.to_model()(tokens)[:, -1], trained.to_model(0)(tokens)[:, -1])
    finally:
        trained.selected_step = -1


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"p": 12}, "p must be a prime number of at least 5 .*got 12"),
        ({"p": 3}, "p must be a prime number of at least 5"),
        ({"p": 113.0}, "p must be a prime number"),
        ({"train_frac": 0.0}, r"train_frac must be a fraction strictly between 0 and 1 .*got 0.0"),
        ({"train_frac": 1.0}, "train_frac must be a fraction strictly between 0 and 1"),
        ({"train_frac": True}, "train_frac must be a fraction"),
        ({"train_frac": 0.001}, "leaves 0 of 529 pairs for training"),
        ({"lr": 0.0}, "lr must be positive, got 0.0"),
        ({"weight_decay": float("nan")}, "weight_decay must be a finite number"),
        ({"d_model": 30, "n_heads": 4}, r"d_model \(30\) must be a multiple of n_heads \(4\)"),
        ({"steps": 0}, "steps must be a positive integer"),
        ({"seed": -1}, "seed must be a non-negative integer, got -1"),
        ({"data_seed": 1.5}, "data_seed must be a non-negative integer, got 1.5"),
    ],
)
def test_bad_settings_are_refused(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        mw.Grokking(**{**SMALL, **options})


def test_a_p_too_large_for_the_device_is_refused() -> None:
    with pytest.raises(
        ValueError, match=r"full-batch training on p=100003 .*needs about .* GiB, .* free on cpu: choose a smaller p"
    ):
        mw.Grokking(p=100003, device="cpu")


def test_phases_found_while_logging_match_the_whole_log(trained: Any) -> None:
    rows = [tuple(r) for r in zip(*(trained.history[k].tolist() for k in trained.history))]
    assert trained.phases == phases(rows) and trained.phase == trained.phases[-1]["name"]


def test_a_frame_keeps_at_most_max_checks_with_the_newest(capture: Any, ask: Any) -> None:
    from mi_widgets.widgets.grokking import MAX_CHECKS

    run = mw.Grokking(**SMALL, steps=450, check_every=1, n_checkpoints=2)
    run.run()
    sent = capture(run)
    rid = ask(run, "frame")
    sent.wait(rid)
    content, buffers = sent.reply(rid)
    check_steps = decode_array(content["result"]["check_steps"], buffers)
    assert len(run.checks["step"]) == 451
    assert len(check_steps) <= MAX_CHECKS and int(check_steps[-1]) == 450
    assert np.all(np.diff(check_steps) > 0)
    assert decode_array(content["result"]["spectrum"], buffers).shape == (len(check_steps), 12)
    run.close()


def test_divergence_rolls_weights_logs_and_checks_back_to_the_last_good_step() -> None:
    run = mw.Grokking(**SMALL, steps=400, check_every=10)
    trainer = run._trainer
    original = trainer.step

    def poisoned(evaluate: bool = False) -> torch.Tensor:
        loss = original(evaluate)
        if trainer.steps == 120:  # a blow-up in the middle of a chunk
            with torch.no_grad():
                trainer.params["embed.weight"].fill_(float("nan"))
        return loss

    trainer.step = poisoned  # type: ignore[method-assign]
    run._begin = lambda: None  # keep this trainer: start() would build a fresh one
    run.run()
    assert run.status == "error" and "TrainingDiverged" in run.error
    good = run.step
    assert 0 < good < 120 and trainer.steps == good
    assert all(bool(torch.isfinite(v).all()) for v in run.params.values())
    assert int(run.history["step"][-1]) <= good and int(run.checks["step"][-1]) <= good
    assert max(run.kept_steps) <= good
    run.close()


def test_reading_the_weights_while_training_runs(capture: Any) -> None:
    run = mw.Grokking(**SMALL, steps=100_000, check_every=1, n_checkpoints=3)
    capture(run)
    run.start()
    try:
        deadline = time.monotonic() + 20
        reads = 0
        while time.monotonic() < deadline and reads < 200:
            run.params_at(max(0, run.step - 1))  # kept weights change under this thread while it reads
            kept = run.kept_steps
            assert kept == sorted(set(kept)) and len(kept) <= 4
            reads += 1
        assert run.running and reads == 200
        state = run.params
        assert all(bool(torch.isfinite(v).all()) for v in state.values())
    finally:
        run.stop()
        run.wait(60)
    assert run.status == "stopped" and run.error == ""
    run.close()
