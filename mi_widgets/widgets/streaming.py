"""Streaming scans: a long computation, batch by batch, on a worker thread.

Shared by HeadScan, TopExamples and FeatureView. After each batch ``progress`` and ``revision``
move together (the view refetches its partial results on ``revision`` with a coalescing resource,
see ``js/src/lib/resource.ts``).

A subclass implements three steps: ``_n_steps()`` (how many batches), ``_reset()`` (fresh running
state, called by ``start``) and ``_scan_step(i)`` (reduce batch ``i`` into that state).
"""

from __future__ import annotations

from .background import BackgroundTask


class StreamingWidget(BackgroundTask):
    """A :class:`~.background.BackgroundTask` whose loop reduces batches into a running state."""

    _thread_name = "mi_widgets-scan"

    def _scan_step(self, index: int) -> None:
        """Reduce batch ``index`` into the running state (on the worker thread)."""
        raise NotImplementedError

    def _loop(self) -> None:
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
