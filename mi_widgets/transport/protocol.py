"""Request/response protocol between a view and its widget in the kernel.

Bulk data never lives in traits: the view asks for it with a request and the
kernel answers with binary buffers. The TypeScript twin is
``js/src/lib/protocol.ts``; both are tested against ``tests/fixtures/protocol_vectors.json``.

Messages from the view (JSON content, at most 1 MiB with buffers)::

    {"type": "request", "id": "c7:3", "method": "pattern", "params": {...}}
    {"type": "cancel",  "id": "c7:3"}          # the view no longer wants this answer

Messages from the kernel::

    {"type": "progress", "id": ..., "done": 3, "total": 12, "label": "layer 3"}
    {"type": "response", "id": ..., "part": 0, "parts": n, "ok": true,
     "result": {...}, "buffer_lengths": [...]}            # + first slice(s) of bytes
    {"type": "response", "id": ..., "part": i, "parts": n}  # + further slices
    {"type": "response", "id": ..., "part": 0, "parts": 1, "ok": false,
     "error": {"type": "ValueError", "message": "..."}}
    {"type": "event", "event": "frame", "result": {...}, "buffer_lengths": [...]}  # + buffers

An ``event`` is pushed without a request (a training loop's latest frame): it reaches the view
even while the kernel is busy running a cell, which replies to requests cannot. It is one
message, so its buffers must fit in ``max_message_bytes``; the view's listeners get the same
``{result, buffers}`` a reply gives.

A reply whose buffers exceed ``max_message_bytes`` (4 MiB: Colab drops bigger
messages) is cut into parts; the view concatenates the slices of all parts in
order and splits them again by ``buffer_lengths``.

A router made with ``revision=`` (every widget's: ``ProtocolWidget.revision``) stamps each
reply's ``result["revision"]`` with the revision current when its handler started, unless the
handler names its own (a handler that made new data), so the view can drop a reply computed
for data it no longer shows.

Handlers marked ``background=True`` run on one worker thread, so the kernel
stays free to receive newer requests and ``cancel`` messages while a model
runs; a cancelled handler stops at its next ``ctx.raise_if_cancelled()``.
"""

from __future__ import annotations

import logging
import threading
import traceback
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Literal

from .codec import ArrayHeader, WireDtype, encode_array

MAX_REPLY_BYTES = 4 * 1024 * 1024
MAX_REQUEST_BYTES = 1024 * 1024

log = logging.getLogger("mi_widgets")

Buffer = bytes | memoryview
Send = Callable[[dict[str, Any], list[Buffer]], None]


class Cancelled(Exception):
    """Raised inside a handler whose request the view has cancelled or superseded."""


@dataclass
class Reply:
    """What a handler returns: JSON-able ``result`` and the buffers its array headers point at."""

    result: dict[str, Any] = field(default_factory=dict)
    buffers: list[Buffer] = field(default_factory=list)

    def add_array(
        self,
        array: Any,
        dtype: WireDtype = "float16",
        *,
        value_range: tuple[float, float] | None = None,
        layout: Literal["dense", "lower"] = "dense",
    ) -> ArrayHeader:
        """Encode ``array`` into this reply's buffers and return its header."""
        header, data = encode_array(
            array, dtype, value_range=value_range, buffer_index=len(self.buffers), layout=layout
        )
        self.buffers.append(data)
        return header


class Context:
    """Per-request handle a handler uses to report progress and notice cancellation."""

    def __init__(self, request_id: Any, method: str, send: Send) -> None:
        self.request_id = request_id
        self.method = method
        self._send = send
        self._cancelled = threading.Event()

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    def cancel(self) -> None:
        self._cancelled.set()

    def raise_if_cancelled(self) -> None:
        if self._cancelled.is_set():
            raise Cancelled(f"request {self.request_id} ({self.method}) was cancelled")

    def progress(self, done: int, total: int, label: str = "") -> None:
        """Tell the view how far the request has come; also a cancellation point."""
        self.raise_if_cancelled()
        self._send({"type": "progress", "id": self.request_id, "done": done, "total": total, "label": label}, [])


Handler = Callable[[dict[str, Any], list[memoryview], Context], Reply]


@dataclass
class _Route:
    handler: Handler
    background: bool


class RequestRouter:
    """Dispatches view requests to handlers and sends their replies (or errors) back."""

    def __init__(
        self, send: Send, *, max_message_bytes: int = MAX_REPLY_BYTES, revision: Callable[[], int] | None = None
    ) -> None:
        self._send = send
        self._revision = revision
        self._max_message_bytes = max_message_bytes
        self._routes: dict[str, _Route] = {}
        self._in_flight: dict[Any, Context] = {}
        self._lock = threading.Lock()
        self._worker: ThreadPoolExecutor | None = None

    def add(self, method: str, handler: Handler, *, background: bool = False) -> None:
        self._routes[method] = _Route(handler, background)

    def handle(self, content: Any, buffers: list[Buffer] | None = None) -> bool:
        """Handle one custom message; return False if it is not a protocol message."""
        if not isinstance(content, dict):
            return False
        kind = content.get("type")
        if kind == "cancel":
            with self._lock:
                ctx = self._in_flight.get(content.get("id"))
            if ctx is not None:
                ctx.cancel()
            return True
        if kind != "request":
            return False
        request_id = content.get("id")
        method = content.get("method")
        route = self._routes.get(method) if isinstance(method, str) else None
        if route is None:
            known = ", ".join(sorted(self._routes)) or "none"
            self._reply_error(request_id, "UnknownMethod", f"unknown method {method!r}; this widget serves: {known}")
            return True
        params = content.get("params") or {}
        views = [memoryview(b) for b in (buffers or [])]
        ctx = Context(request_id, method, self._send)
        with self._lock:
            self._in_flight[request_id] = ctx
        if route.background:
            if self._worker is None:
                self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mi_widgets")
            self._worker.submit(self._run, route.handler, params, views, ctx)
        else:
            self._run(route.handler, params, views, ctx)
        return True

    def push(self, event: str, reply: Reply) -> None:
        """Send ``reply`` to the view as an unrequested ``event`` (see :func:`event_message`)."""
        content, buffers = event_message(event, reply.result, reply.buffers, self._max_message_bytes)
        self._send(content, buffers)

    def close(self) -> None:
        with self._lock:
            for ctx in self._in_flight.values():
                ctx.cancel()
        if self._worker is not None:
            self._worker.shutdown(wait=False, cancel_futures=True)
            self._worker = None

    def _run(self, handler: Handler, params: dict[str, Any], buffers: list[memoryview], ctx: Context) -> None:
        try:
            ctx.raise_if_cancelled()
            revision = self._revision() if self._revision is not None else None
            reply = handler(params, buffers, ctx)
            ctx.raise_if_cancelled()
            if revision is not None:  # the data the handler read; a handler that made new data names its own
                reply.result.setdefault("revision", revision)
            for content, parts in split_reply(ctx.request_id, reply.result, reply.buffers, self._max_message_bytes):
                self._send(content, parts)
        except Cancelled as exc:
            self._reply_error(ctx.request_id, "Cancelled", str(exc))
        except Exception as exc:  # a failing request must never take the kernel or the view down
            log.debug("request %s failed:\n%s", ctx.request_id, traceback.format_exc())
            self._reply_error(ctx.request_id, type(exc).__name__, str(exc))
        finally:
            with self._lock:
                self._in_flight.pop(ctx.request_id, None)

    def _reply_error(self, request_id: Any, kind: str, message: str) -> None:
        # An exception message may quote untrusted text (a token with a lone surrogate): escape what
        # UTF-8 cannot carry, or the error reply itself would fail to send.
        message = message.encode("utf-8", "backslashreplace").decode("utf-8")
        self._send(
            {
                "type": "response",
                "id": request_id,
                "part": 0,
                "parts": 1,
                "ok": False,
                "error": {"type": kind, "message": message},
            },
            [],
        )


def event_message(
    event: str, result: dict[str, Any], buffers: list[Buffer], max_message_bytes: int = MAX_REPLY_BYTES
) -> tuple[dict[str, Any], list[Buffer]]:
    """The one message that pushes ``event`` to the view; a ValueError if its buffers exceed the limit."""
    if not isinstance(event, str) or not event:
        raise ValueError(f"event name must be a non-empty string, got {event!r}")
    lengths = [memoryview(b).nbytes for b in buffers]
    if sum(lengths) > max_message_bytes:
        raise ValueError(
            f"event {event!r} carries {sum(lengths)} bytes, over the {max_message_bytes}-byte limit for one message; "
            "push less per event (or serve it as a request)"
        )
    return {"type": "event", "event": event, "result": result, "buffer_lengths": lengths}, list(buffers)


def split_reply(
    request_id: Any, result: dict[str, Any], buffers: list[Buffer], max_message_bytes: int = MAX_REPLY_BYTES
) -> list[tuple[dict[str, Any], list[Buffer]]]:
    """Cut a reply into messages whose buffers add up to at most ``max_message_bytes`` each."""
    if max_message_bytes <= 0:
        raise ValueError(f"max_message_bytes must be positive, got {max_message_bytes}")
    views = [memoryview(b).cast("B") for b in buffers]
    lengths = [v.nbytes for v in views]
    messages: list[list[Buffer]] = [[]]
    room = max_message_bytes
    for view in views:
        offset = 0
        while True:
            if room == 0 and offset < view.nbytes:  # an empty buffer needs no room of its own
                messages.append([])
                room = max_message_bytes
            take = min(room, view.nbytes - offset)
            messages[-1].append(view[offset : offset + take])
            offset += take
            room -= take
            if offset >= view.nbytes:
                break
    parts = len(messages)
    out: list[tuple[dict[str, Any], list[Buffer]]] = []
    for index, slices in enumerate(messages):
        content: dict[str, Any] = {"type": "response", "id": request_id, "part": index, "parts": parts}
        if index == 0:
            content.update(ok=True, result=result, buffer_lengths=lengths)
        out.append((content, slices))
    return out
