"""A view as one self-contained HTML file that works from disk: no kernel, no network.

The page carries the view's own bundle (the same ``_esm``/``_css`` the notebook runs), its synced state,
and the kernel's replies to the requests the view will make (each widget lists them,
``ProtocolWidget._export_requests``), recorded here by running the widget's own handlers. In the browser,
``js/src/pages/export_page.ts`` stands in for the kernel: an ``OfflineModel`` (``js/src/lib/offline.ts``) answers a
request from the recorded replies, and a request nobody recorded gets an error reply that says so, which the view
shows in its banner.

Replies keep the protocol's binary buffers (float16, uint8), gzipped and base64-encoded per reply: ``max_bytes``
bounds what they take in the file; what does not fit is left out, and the page and the returned
:class:`HtmlExport` say what.
"""

from __future__ import annotations

import base64
import gzip
import html
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .protocol import Buffer, RequestRouter

DEFAULT_MAX_BYTES = 25 * 2**20
PAGE_SCRIPT = Path(__file__).resolve().parent.parent / "static" / "export_page.js"


@dataclass(frozen=True)
class ExportRequest:
    """A request the exported page answers: the view's ``method`` and ``params`` as the view sends them (ints and
    strings: the keys must match byte for byte), and what to call it when it is left out (``"L3H2"``)."""

    method: str
    params: dict[str, Any] = field(default_factory=dict)
    label: str = ""
    required: bool = False  # kept whatever the budget (the view shows nothing without it)


@dataclass
class HtmlExport:
    """What ``to_html`` wrote: the page, and the requests it answers and leaves out."""

    html: str
    included: list[str]
    left_out: list[str]

    def __str__(self) -> str:
        return self.html


def request_key(method: str, params: dict[str, Any]) -> str:
    """The one string a request is looked up by, on both sides (``requestKey`` in ``js/src/lib/offline.ts``)."""
    return json.dumps({"method": method, "params": params}, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def record_replies(
    routes: dict[str, Any], revision: int, requests: list[ExportRequest]
) -> dict[str, list[tuple[dict[str, Any], list[Buffer]]]]:
    """Run ``routes`` (method -> handler) for each request on this thread and keep the messages each reply is
    made of (a reply over the message limit is several), as the view would have received them."""
    sent: list[tuple[dict[str, Any], list[Buffer]]] = []
    router = RequestRouter(lambda content, buffers: sent.append((content, list(buffers))), revision=lambda: revision)
    for method, handler in routes.items():
        router.add(method, handler, background=False)
    recorded: dict[str, list[tuple[dict[str, Any], list[Buffer]]]] = {}
    try:
        for i, request in enumerate(requests):
            sent.clear()
            router.handle({"type": "request", "id": f"export:{i}", "method": request.method, "params": request.params})
            recorded[request_key(request.method, request.params)] = [
                (content, buffers) for content, buffers in sent if content.get("type") == "response"
            ]
    finally:
        router.close()
    return recorded


def pack_reply(messages: list[tuple[dict[str, Any], list[Buffer]]]) -> dict[str, Any]:
    """One recorded reply for the page: its messages (without ids) and all their buffers gzipped in one piece."""
    blob = b"".join(bytes(b) for _, buffers in messages for b in buffers)
    return {
        "messages": [
            {"content": {k: v for k, v in content.items() if k != "id"}, "lengths": [len(bytes(b)) for b in buffers]}
            for content, buffers in messages
        ],
        "data": base64.b64encode(gzip.compress(blob, compresslevel=6, mtime=0)).decode("ascii"),
    }


def _script_json(value: Any) -> str:
    """JSON that can sit inside ``<script>``: every ``<`` (only ever inside a string) as ``\\u003c``, so no
    ``</script>`` or ``<!--`` in a token can end or open anything there."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).replace("<", "\\u003c")


def build_page(
    *,
    title: str,
    esm: str,
    css: str,
    state: dict[str, Any],
    recorded: dict[str, list[tuple[dict[str, Any], list[Buffer]]]],
    requests: list[ExportRequest],
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> HtmlExport:
    """The HTML page: the required replies, then the others in order while they fit in ``max_bytes``."""
    if not PAGE_SCRIPT.is_file():
        raise RuntimeError(
            f"the front end is not built ({PAGE_SCRIPT} is missing): run `npm install && npm run build` "
            "(or `bash .ci/setup`)"
        )
    replies: dict[str, Any] = {}
    included: list[str] = []
    left_out: list[str] = []
    used = 0
    for request in requests:
        key = request_key(request.method, request.params)
        failed = next((c["error"] for c, _ in recorded[key] if c.get("ok") is False), None)
        if failed is not None:  # the widget could not answer it: never write a page that only shows an error
            if request.required:
                raise RuntimeError(f"cannot export {request.label or key}: {failed['type']}: {failed['message']}")
            left_out.append(f"{request.label or key} ({failed['type']}: {failed['message']})")
            continue
        packed = pack_reply(recorded[key])
        size = len(packed["data"]) + len(json.dumps(packed["messages"]))
        if not request.required and used + size > max_bytes:
            left_out.append(request.label or key)
            continue
        replies[key] = packed
        used += size
        included.append(request.label or key)
    note = f"Exported from mi_widgets: works offline, from this file. {len(included)} of {len(requests)} parts of the data are here"
    if left_out:
        shown = ", ".join(left_out[:12]) + (f" and {len(left_out) - 12} more" if len(left_out) > 12 else "")
        note += f"; left out over the {max_bytes / 2**20:.0f} MiB budget: {shown}"
    note += "."
    payload = {
        "title": title,
        "note": note,
        "state": state,
        "replies": replies,
        "esm": base64.b64encode(esm.encode("utf-8")).decode("ascii"),
        "css": base64.b64encode(css.encode("utf-8")).decode("ascii"),
    }
    script = PAGE_SCRIPT.read_text(encoding="utf-8")
    if "</script" in script.lower() or "<!--" in script:
        raise RuntimeError("export_page.js contains '</script' or '<!--': it cannot be inlined")
    page = _TEMPLATE.format(
        title=html.escape(title),
        payload=_script_json(payload),
        script=script,
    )
    return HtmlExport(page, included, left_out)


# No network at all: scripts only inline or from blob: URLs (the view's bundle), images from data: and blob:.
_TEMPLATE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; script-src 'unsafe-inline' blob:; style-src 'unsafe-inline'; img-src data: blob:">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>
body {{ margin: 16px; font: 13px system-ui, sans-serif; background: #fff; color: #212121; }}
@media (prefers-color-scheme: dark) {{ body {{ background: #111; color: #e0e0e0; }} }}
#miw-note {{ margin: 0 0 12px; opacity: 0.7; }}
.miw-export {{ display: none !important; }}
</style>
</head>
<body>
<p id="miw-note"></p>
<div id="miw-view"></div>
<script type="application/json" id="miw-payload">{payload}</script>
<script type="module">{script}</script>
</body>
</html>
"""
