"""Shared plumbing for widgets: the front-end bundle and the request protocol."""

from __future__ import annotations

import itertools
import json
import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import anywidget
import torch
import traitlets

from ..capture.corpus import Example, padded_activations
from ..transport.protocol import Buffer, Reply, RequestRouter

STATIC = Path(__file__).resolve().parent.parent / "static"

_NOT_BUILT = """
export default { render({ el }) {
  const p = document.createElement("pre");
  p.textContent = %s;
  el.appendChild(p);
} };
"""


def static_asset(name: str) -> Path | str:
    """The text of a built front-end file; an explanatory stand-in view when the JS is not built.

    Text, not a path: for a path anywidget connects every instance to a class-level file-change
    signal that is never disconnected, so closed widgets could never be freed (manzt/anywidget#929).
    Only in the live-reload dev loop (``ANYWIDGET_HMR=1``) is the path given, and closed views leak there.
    """
    path = STATIC / name
    if path.exists():
        if os.environ.get("ANYWIDGET_HMR") == "1":
            return path
        text = path.read_text(encoding="utf-8")
        return text if "\n" in text else text + "\n"  # a one-line string that ends in ".js" would be taken for a path
    if name.endswith(".css"):
        return ""
    message = (
        f"mi_widgets: the front end ({path}) is not built. From a clone run `npm install && npm run build` "
        "(or `bash .ci/setup`), then restart the kernel."
    )
    return _NOT_BUILT % json.dumps(message)


@dataclass(frozen=True)
class _Endpoint:
    method: str
    background: bool


F = TypeVar("F", bound=Callable[..., Reply])


def endpoint(method: str, *, background: bool = False) -> Callable[[F], F]:
    """Declare a widget method as the handler of the view's request ``method``.

    The handler is ``(self, params, buffers, ctx) -> Reply``. ``background=True`` runs it on the
    widget's worker thread (for model runs: the kernel stays free for newer requests and cancels).
    :class:`ProtocolWidget` finds every declared endpoint of its class (a subclass's declaration
    of a method name wins) and routes the requests; the router stamps each reply's revision.
    """

    def declare(handler: F) -> F:
        handler._endpoint = _Endpoint(method, background)  # type: ignore[attr-defined]
        return handler

    return declare


def _endpoints(cls: type) -> dict[str, tuple[str, bool]]:
    """``method -> (attribute name, background)`` for every endpoint ``cls`` declares or inherits."""
    found: dict[str, tuple[str, bool]] = {}
    for klass in reversed(cls.__mro__):
        for name, attr in vars(klass).items():
            spec = getattr(attr, "_endpoint", None)
            if isinstance(spec, _Endpoint):
                found[spec.method] = (name, spec.background)
    return found


# Revisions of data computed before it is applied come from one counter, so none is ever reused. (Not a
# counter per class: anywidget's add_traits makes a subclass per instance.)
_revisions = itertools.count(1)


class ProtocolWidget(anywidget.AnyWidget):
    """An anywidget that answers view requests through a :class:`RequestRouter`.

    It owns ``revision``: the state of the data its requests serve. Every reply is stamped with the
    revision it was computed for (the one current when the handler started, unless the handler names
    its own), so a view can drop a reply for data it no longer shows.
    """

    revision = traitlets.Int(0, read_only=True).tag(sync=True)

    @staticmethod
    def _new_revision() -> int:
        """A fresh revision for data computed before it is applied (a new prompt's snapshot), never reused."""
        return next(_revisions)

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._router = RequestRouter(self._send_message, revision=lambda: self.revision)
        for method, (name, background) in _endpoints(type(self)).items():
            self._router.add(method, getattr(self, name), background=background)
        self.on_msg(self._on_custom_msg)

    def _bump_revision(self, revision: int | None = None) -> int:
        """Move ``revision`` on: one step, or to ``revision`` (from :meth:`_new_revision`); returns it.

        It only ever grows (views drop replies older than what they drew): a widget that applies data
        computed in the background must drop a snapshot older than the one applied (``_apply``).
        """
        value = self.revision + 1 if revision is None else revision
        if value <= self.revision:
            raise ValueError(f"revision must grow: {self.revision} -> {value}")
        self.set_trait("revision", value)
        return value

    def _push(self, event: str, reply: Reply) -> None:
        """Push ``reply`` to every open view as event ``event`` (no request needed; see the protocol)."""
        self._router.push(event, reply)

    def _send_message(self, content: dict[str, Any], buffers: list[Buffer]) -> None:
        self.send(content, buffers or None)

    # ----- the static picture: what a saved notebook, an HTML export or GitHub shows -------------

    def _picture(self) -> Any:
        """A ``picture.Drawing`` (or ``PIL.Image``) of what the view shows now (``transport/picture.py``); each
        widget draws its own."""
        return None

    def _drawing(self) -> Any:
        image = self._picture()
        if image is None:
            raise NotImplementedError(f"{type(self).__name__} has no static picture")
        return image

    def to_png(self, path: str | os.PathLike[str] | None = None) -> bytes:
        """The view's static picture as PNG bytes (the one the notebook saves), also written to ``path``."""
        from ..transport.picture import png_bytes

        data = png_bytes(self._drawing())
        if path is not None:
            Path(path).write_bytes(data)
        return data

    def to_svg(self, path: str | os.PathLike[str] | None = None) -> str:
        """The view's picture as SVG, for papers: labels as vector text, heatmaps and charts as an embedded image.
        Also written to ``path``."""
        from ..transport.picture import Drawing

        image = self._drawing()
        if not isinstance(image, Drawing):  # a picture with no labels
            drawing = Drawing(image.width, image.height)
            drawing.paste(image, (0, 0))
            image = drawing
        text = image.svg()
        if path is not None:
            Path(path).write_text(text, encoding="utf-8")
        return text

    def _repr_png_(self) -> bytes | None:
        """IPython adds this to the display bundle beside the live view: the picture readers without a kernel see.

        A picture that cannot be drawn is left out with a warning: displaying the live view never fails for it."""
        try:
            image = self._picture()
            if image is None:
                return None
            from ..transport.picture import png_bytes

            return png_bytes(image)
        except Exception as exc:
            warnings.warn(f"mi_widgets: no static picture of this {type(self).__name__}: {exc}", stacklevel=2)
            return None

    def _export_requests(self) -> list[Any]:
        """The requests (``transport.export.ExportRequest``) an HTML export answers, most wanted first; a view
        with none has no HTML export."""
        return []

    def _export_state(self) -> dict[str, Any]:
        """Traits the HTML export overrides (e.g. ``can_rerun=False``: there is no kernel to run anything)."""
        return {}

    def to_html(self, path: str | os.PathLike[str] | None = None, *, max_bytes: int | None = None) -> Any:
        """The view as one self-contained HTML file that works offline from disk, without a kernel: its own
        bundle, its state and the data it asks for (``transport/export.py``), up to ``max_bytes`` (default
        25 MiB) of data; what does not fit is left out, and the page and the result say what. Written to
        ``path``; returns an ``HtmlExport`` (``.html``, ``.included``, ``.left_out``)."""
        from ..transport import export

        requests = self._export_requests()
        if not requests:
            raise NotImplementedError(
                f"{type(self).__name__} has no HTML export yet; its picture is: to_png() or to_svg()"
            )
        routes = {method: getattr(self, name) for method, (name, _) in _endpoints(type(self)).items()}
        recorded = export.record_replies(routes, self.revision, requests)
        state = {
            name: value
            for name, value in self.get_state().items()
            if not name.startswith("_") and name not in ("layout", "tabbable", "tooltip")
        }
        esm, css = self._esm, self._css
        result = export.build_page(
            title=f"{type(self).__name__} (mi_widgets)",
            esm=esm.read_text(encoding="utf-8") if isinstance(esm, Path) else str(esm),
            css=css.read_text(encoding="utf-8") if isinstance(css, Path) else str(css or ""),
            state={**state, **self._export_state()},
            recorded=recorded,
            requests=requests,
            max_bytes=export.DEFAULT_MAX_BYTES if max_bytes is None else max_bytes,
        )
        if result.left_out:
            warnings.warn(
                f"mi_widgets: the HTML export left out {len(result.left_out)} of {len(requests)} parts over its "
                f"budget ({', '.join(result.left_out[:6])}{' ...' if len(result.left_out) > 6 else ''}); "
                "raise max_bytes to keep them",
                stacklevel=2,
            )
        if path is not None:
            Path(path).write_text(result.html, encoding="utf-8")
        return result

    @endpoint("export")
    def _serve_export(self, params: dict[str, Any], buffers: list[Buffer], ctx: Any) -> Reply:
        """The view's export button: the picture as PNG or SVG bytes, which the view saves as a file."""
        kind = params.get("format")
        if kind not in ("png", "svg"):
            raise ValueError(f"export format must be 'png' or 'svg', got {kind!r}")
        data = self.to_png() if kind == "png" else self.to_svg().encode("utf-8")
        mime = "image/png" if kind == "png" else "image/svg+xml"
        return Reply({"filename": f"{type(self).__name__}.{kind}", "mime": mime}, [data])

    def _on_custom_msg(self, _widget: Any, content: Any, buffers: list[Buffer]) -> None:
        self._router.handle(content, buffers)

    def close(self) -> None:
        """Close the view, cancel its requests and free what it holds (the layout child widget too)."""
        router = getattr(self, "_router", None)
        if router is not None:
            router.close()
        layout = getattr(self, "layout", None)
        super().close()
        if layout is not None:
            layout.close()


def int_param(params: dict[str, Any], name: str) -> int:
    """An integer request parameter, or a TypeError that names it (JS numbers may arrive as anything)."""
    value = params.get(name)
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"request parameter {name!r} must be an integer, got {value!r}")
    return value


def add_examples(reply: Reply, examples: Sequence[Example]) -> None:
    """Add ``examples`` to ``reply`` in the one shape every view reads (``js/src/lib/examples.ts``):

    * ``examples``: ``[{tokens, max_index, window, position, source}]`` (JSON, best first);
    * ``example_values``: float32 ``[n]``, each example's value as the scan found it;
    * ``example_acts``: float16 ``[n, longest]``, the activations of each example's tokens, NaN-padded.
    """
    reply.result["examples"] = [
        {"tokens": e.tokens, "max_index": e.max_index, "window": e.window, "position": e.position, "source": e.source}
        for e in examples
    ]
    values = torch.tensor([e.value for e in examples], dtype=torch.float32)
    reply.result["example_values"] = reply.add_array(values, "float32")
    reply.result["example_acts"] = reply.add_array(padded_activations(examples), "float16")
