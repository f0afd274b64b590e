"""Background work in a widget: a loop on a worker thread that the view can start and stop.

:class:`BackgroundTask` owns what every long-running widget shares: the ``status`` / ``progress``
/ ``error`` traits, ``start()`` / ``stop()`` / ``wait()`` and the view's ``start`` / ``stop``
requests, and the worker thread. Its two loops are its two subclasses: the batch-by-batch scan of
:class:`~.streaming.StreamingWidget` and the training loop of :class:`~.training.TrainingWidget`.
The kernel stays free while the loop runs; Stop takes effect at the next step and keeps what was
computed; a failure lands in ``error`` (shown in the view) instead of taking the kernel down.

Background work never outlives the interpreter: at exit every running loop is stopped at its next
step and waited for, so a script that ends while one runs exits cleanly (a daemon thread still
inside torch during interpreter finalisation aborts the process).
"""

from __future__ import annotations

import atexit
import threading
import weakref
from typing import Any, TypeVar

import traitlets

from ..transport import picture
from ..transport.protocol import Context, Reply
from .base import ProtocolWidget, endpoint

S = TypeVar("S", bound="BackgroundTask")

# How long interpreter exit waits for one running scan to reach its next step.
EXIT_WAIT_S = 60.0

_live: weakref.WeakSet[BackgroundTask] = weakref.WeakSet()


@atexit.register
def _stop_background_work() -> None:
    """Stop every running scan and training loop, and wait for each to finish its current step."""
    running = [w for w in list(_live) if w.running]
    for widget in running:
        widget.stop()
    for widget in running:
        widget.wait(EXIT_WAIT_S)


class BackgroundTask(ProtocolWidget):
    """Start/Stop, ``status``/``progress``/``error``/``revision`` traits and the ``start``/``stop`` requests.

    ``status`` is ``idle``, ``running``, ``done``, ``stopped`` or ``error``; ``progress`` is
    ``{"done": steps, "total": steps}``; ``revision`` only ever grows. A subclass implements
    ``_n_steps()`` (steps in one run), ``_reset()`` (fresh state, on the caller's thread before the
    run starts) and ``_loop()`` (the run itself, on the worker thread: it checks ``self._stop``
    between steps and sets the final ``status``).
    """

    status = traitlets.Unicode("idle", read_only=True).tag(sync=True)
    progress = traitlets.Dict(read_only=True).tag(sync=True)
    error = traitlets.Unicode("", read_only=True).tag(sync=True)

    def _export_state(self) -> dict[str, Any]:
        return {"can_start": False}  # no kernel in an HTML export: the toolbar hides Start and Stop

    _thread_name = "mi_widgets-task"

    def __init__(self, **kwargs: Any) -> None:
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        super().__init__(**kwargs)
        self.set_trait("progress", {"done": 0, "total": self._n_steps()})

    # ----- what a task implements --------------------------------------------------------

    def _n_steps(self) -> int:
        """Number of steps in one full run."""
        raise NotImplementedError

    def _reset(self) -> None:
        """Start from a fresh state (called on the caller's thread before the worker starts)."""
        raise NotImplementedError

    def _loop(self) -> None:
        """Run to the end or to Stop (on the worker thread), then set ``status``."""
        raise NotImplementedError

    # ----- Python API ------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        """Start (or restart) the run on a worker thread, from a fresh state; a no-op while it runs."""
        if self.running:
            return
        self._begin()
        self._thread = threading.Thread(target=self._loop, name=self._thread_name, daemon=True)
        _live.add(self)
        self._thread.start()

    def stop(self) -> None:
        """Stop at the next step; what was computed so far stays."""
        self._stop.set()

    def wait(self: S, timeout: float | None = None) -> S:
        """Block until the run ends (for scripts and tests)."""
        if self._thread is not None:
            self._thread.join(timeout)
        return self

    def close(self) -> None:
        stop = getattr(self, "_stop", None)  # None when __init__ failed before setting it
        if stop is not None:
            stop.set()
        super().close()

    # ----- internals ---------------------------------------------------------------------

    def _picture_note(self) -> str:
        """The note under a picture of background work: how far it had come when the picture was drawn."""
        done, total = self.progress.get("done", 0), self.progress.get("total", 0)
        if self.status == "done":
            return f"{picture.NOTE} Drawn after all {total} steps."
        return f"{picture.NOTE} Drawn at step {done} of {total} ({self.status}): display it again when done."

    def _begin(self) -> None:
        """Fresh state and traits for a new run (on the caller's thread, before the run starts)."""
        self._stop.clear()
        self._reset()
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
