"""Streaming scans: a widget that runs a long computation batch by batch on a worker thread.

Shared by HeadScan and TopExamples. The kernel stays free while the scan runs; after each
batch ``progress`` and ``revision`` move together (the view refetches its partial results on
``revision``, see ``js/src/lib/scan_toolbar.ts``), Stop takes effect at the next batch and
keeps what was computed, and a failure lands in ``error`` (shown in the view) instead of
taking the kernel down.

Background work never outlives the interpreter: at exit every running scan or training is
stopped at its next step and waited for, so a script that ends while one runs exits cleanly
(a daemon thread still inside torch during interpreter finalisation aborts the process).

A subclass implements three steps: ``_n_steps()`` (how many batches), ``_reset_scan()`` (fresh
running state, called by ``start``) and ``_scan_step(i)`` (reduce batch ``i`` into that state).
"""

from __future__ import annotations

import atexit
import threading
import weakref
from typing import Any, TypeVar

import traitlets

from ..transport.protocol import Context, Reply
from .base import ProtocolWidget, endpoint

S = TypeVar("S", bound="StreamingWidget")

# How long interpreter exit waits for one running scan to reach its next step.
EXIT_WAIT_S = 60.0

_live: weakref.WeakSet[StreamingWidget] = weakref.WeakSet()


@atexit.register
def _stop_background_work() -> None:
    """Stop every running scan and training loop, and wait for each to finish its current step."""
    running = [w for w in list(_live) if w.running]
    for widget in running:
        widget.stop()
    for widget in running:
        widget.wait(EXIT_WAIT_S)


class StreamingWidget(ProtocolWidget):
    """Start/Stop, ``status``/``progress``/``error``/``revision`` traits and the ``start``/``stop`` requests.

    ``status`` is ``idle``, ``running``, ``done``, ``stopped`` or ``error``; ``progress`` is
    ``{"done": batches, "total": batches}``; ``revision`` only ever grows (one step per batch).
    """

    status = traitlets.Unicode("idle", read_only=True).tag(sync=True)
    progress = traitlets.Dict(read_only=True).tag(sync=True)
    error = traitlets.Unicode("", read_only=True).tag(sync=True)

    _thread_name = "mi_widgets-scan"

    def __init__(self, **kwargs: Any) -> None:
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        super().__init__(**kwargs)
        self.set_trait("progress", {"done": 0, "total": self._n_steps()})

    # ----- what a scan implements --------------------------------------------------------

    def _n_steps(self) -> int:
        """Number of batches in one full scan."""
        raise NotImplementedError

    def _reset_scan(self) -> None:
        """Start from an empty running state (called on the caller's thread before the worker starts)."""
        raise NotImplementedError

    def _scan_step(self, index: int) -> None:
        """Reduce batch ``index`` into the running state (on the worker thread)."""
        raise NotImplementedError

    # ----- Python API ------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        """Start (or restart) the scan on a worker thread, from an empty state; a no-op while it runs."""
        if self.running:
            return
        self._begin()
        self._thread = threading.Thread(target=self._scan, name=self._thread_name, daemon=True)
        _live.add(self)
        self._thread.start()

    def stop(self) -> None:
        """Stop at the next batch; what was computed so far stays."""
        self._stop.set()

    def wait(self: S, timeout: float | None = None) -> S:
        """Block until the scan ends (for scripts and tests)."""
        if self._thread is not None:
            self._thread.join(timeout)
        return self

    def close(self) -> None:
        stop = getattr(self, "_stop", None)  # None when __init__ failed before setting it
        if stop is not None:
            stop.set()
        super().close()

    # ----- internals ---------------------------------------------------------------------

    def _begin(self) -> None:
        """Fresh state and traits for a new run (on the caller's thread, before the run starts)."""
        self._stop.clear()
        self._reset_scan()
        self.set_trait("error", "")
        self.set_trait("status", "running")
        self.set_trait("progress", {"done": 0, "total": self._n_steps()})

    @endpoint("start")
    def _serve_start(self, params: dict[str, Any], buffers: list[memoryview], ctx: Context) -> Reply:
        self.start()
        return Reply()

    @endpoint("stop")
    def _serve_stop(self, params: dict[str, Any], buffers: list[memoryview], ctx: Context) -> Reply:
        self.stop()
        return Reply()

    def _scan(self) -> None:
        total = self._n_steps()
        done = 0
        try:
            for index in range(total):
                if self._stop.is_set():
                    break
                self._scan_step(index)
                done += 1
                with self.hold_sync():
                    self.set_trait("progress", {"done": done, "total": total})
                    self._bump_revision()
            self.set_trait("status", "done" if done == total else "stopped")
        except Exception as exc:  # shown in the view; the kernel and the partial results survive
            self.set_trait("error", f"{type(exc).__name__}: {exc}")
            self.set_trait("status", "error")
