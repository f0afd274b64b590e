"""Training in the kernel, watched live: the shared loop of SuperpositionToy, SAETrainer and Grokking.

A :class:`TrainingWidget` is a :class:`~.background.BackgroundTask` whose steps are optimiser
steps (the other loop, beside the scan of :class:`~.streaming.StreamingWidget`). ``start()``
trains on a worker thread, so the user keeps running cells; ``run()`` trains in
the calling thread (``train_sae`` does, to return a trained model), and an interrupt then stops it
like the Stop button. Either way the latest state is pushed to the views as a ``frame`` event at
most ``frame_rate`` times a second: events reach the view even while a cell is running, which
replies to requests cannot. ``progress`` moves at most ten times a second.

A loss that becomes NaN or infinite stops training with an error that says so, and the weights go
back to the last state whose loss and weights were all finite, so nothing trained is lost.
"""

from __future__ import annotations

import math
import time
from typing import Any

import traitlets

from ..transport.protocol import Context, Reply
from .background import BackgroundTask
from .base import endpoint

PROGRESS_INTERVAL = 0.1


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the model holds the last good weights."""


class TrainingWidget(BackgroundTask):
    """Start/Stop/run of a training loop with live ``frame`` events and a NaN guard.

    A subclass implements ``_n_steps()`` (total optimiser steps), ``_reset()`` (fresh model
    and optimiser), ``_train(n) -> float`` (``n`` steps; returns the last loss), ``_frame() ->
    Reply`` (what the view draws), ``_checkpoint()`` (a copy of the weights, or None when any is
    NaN or infinite) / ``_restore(state)`` and may override ``_chunk``: the most steps between
    checks. Fewer are taken when steps are slow, so that a frame can go out every
    ``1 / frame_rate`` seconds (the first chunk is one step, for an early first frame).
    """

    foreground = traitlets.Bool(False, read_only=True).tag(sync=True)

    _chunk = 10
    _thread_name = "mi_widgets-training"

    def __init__(self, *, frame_rate: float = 30.0, **kwargs: Any) -> None:
        if isinstance(frame_rate, bool) or not isinstance(frame_rate, (int, float)) or not frame_rate > 0:
            raise ValueError(f"frame_rate must be a positive number of frames per second, got {frame_rate!r}")
        self._frame_interval = 1.0 / float(frame_rate)
        self._step = 0
        self.exception: BaseException | None = None  # what ended the last run with status "error"
        super().__init__(**kwargs)

    # ----- what a training widget implements ----------------------------------------------

    def _train(self, n: int) -> float:
        raise NotImplementedError

    def _frame(self) -> Reply:
        raise NotImplementedError

    def _checkpoint(self) -> Any | None:
        raise NotImplementedError

    def _restore(self, state: Any) -> None:
        raise NotImplementedError

    # ----- Python API ------------------------------------------------------------------

    @property
    def step(self) -> int:
        """Optimiser steps taken in the current (or last) run."""
        return self._step

    def run(self) -> None:
        """Train in the calling thread until done, stopped or interrupted (KeyboardInterrupt stops it)."""
        if self.running:
            raise RuntimeError("training is already running on a worker thread: call stop() and wait() first")
        self._begin()
        self.set_trait("foreground", True)
        try:
            self._loop()
        finally:
            self.set_trait("foreground", False)

    def restart(self) -> None:
        """Stop training if it runs, then start again from a fresh model (with the current settings)."""
        self.stop()
        self.wait()
        self.start()

    # ----- the loop ----------------------------------------------------------------------

    def _loop(self) -> None:
        total = self._n_steps()
        done = 0
        good, good_step = self._checkpoint(), 0
        last_frame = last_progress = 0.0
        per_step: float | None = None  # seconds per step, smoothed
        status = "stopped"
        try:
            while done < total and not self._stop.is_set():
                n = min(self._chunk_size(per_step), total - done)
                began = time.monotonic()
                loss = self._train(n)
                took = (time.monotonic() - began) / n
                per_step = took if per_step is None else 0.7 * per_step + 0.3 * took
                state = self._checkpoint() if math.isfinite(loss) else None
                if state is None:
                    self._restore(good)
                    self._step = good_step
                    raise TrainingDiverged(
                        f"the loss or the weights became NaN or infinite (loss {loss:.4g}) during steps {done + 1}-{done + n}: "
                        f"training stopped and the weights are back at step {good_step}, the last good one. "
                        "Try a lower learning rate."
                    )
                done += n
                good, good_step = state, done
                self._step = done
                now = time.monotonic()
                if now - last_progress >= PROGRESS_INTERVAL:
                    last_progress = now
                    self.set_trait("progress", {"done": done, "total": total})
                if now - last_frame >= self._frame_interval:
                    last_frame = now
                    self._push("frame", self._frame())
            status = "done" if done == total else "stopped"
        except KeyboardInterrupt:  # an interrupt in run() is a Stop
            status = "stopped"
        except Exception as exc:  # shown in the view; the kernel and the weights so far survive
            self.exception = exc
            self.set_trait("error", f"{type(exc).__name__}: {exc}")
            status = "error"
        finally:
            with self.hold_sync():
                self.set_trait("progress", {"done": self._step, "total": total})
                self._bump_revision()
                self.set_trait("status", status)
            try:
                self._push("frame", self._frame())
            except Exception as exc:  # e.g. a frame over the message limit: say so, keep the weights
                self.exception = self.exception or exc
                self.set_trait("error", self.error or f"{type(exc).__name__}: {exc}")

    def _begin(self) -> None:
        self._step = 0
        self.exception = None
        super()._begin()

    def _chunk_size(self, per_step: float | None) -> int:
        """Steps to take before the next check: at most ``_chunk``, fewer when a frame would be late."""
        if per_step is None:
            return 1
        return max(1, min(self._chunk, int(self._frame_interval / max(per_step, 1e-9))))

    @endpoint("frame")
    def _serve_frame(self, params: dict[str, Any], buffers: list[memoryview], ctx: Context) -> Reply:
        return self._frame()
