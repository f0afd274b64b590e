"""HTML export (``view.to_html``): one offline file with the view's bundle, state and recorded replies."""

from __future__ import annotations

import base64
import gzip
import json
import re
from typing import Any

import numpy as np
import pytest

import mi_widgets as mw
from mi_widgets.transport.codec import decode_array
from mi_widgets.transport.export import request_key
from mi_widgets.widgets.base import ProtocolWidget

HOSTILE = "a </script><script>alert(1)</script> <!-- b"


@pytest.fixture(scope="module")
def induction() -> Any:
    return mw.zoo.load("induction-2l")


def _payload(page: str) -> dict[str, Any]:
    found = re.search(r'<script type="application/json" id="miw-payload">(.*?)</script>', page, re.S)
    assert found is not None, "the page carries no payload"
    return json.loads(found.group(1))


def _unpack(reply: dict[str, Any]) -> tuple[dict[str, Any], list[bytes]]:
    """The first message's content and the reply's whole buffers (parts joined), as the view gets them."""
    data = gzip.decompress(base64.b64decode(reply["data"]))
    head = reply["messages"][0]["content"]
    buffers, at = [], 0
    for length in head["buffer_lengths"]:
        buffers.append(data[at : at + length])
        at += length
    assert at == len(data)
    return head, buffers


def test_the_page_carries_the_view_its_state_and_every_head(induction: Any, tmp_path: Any) -> None:
    view = mw.AttentionView(induction, "The cat sat on the mat. The cat sat on the", layer=1, head=2)
    path = tmp_path / "attention.html"
    export = view.to_html(path)
    page = path.read_text(encoding="utf-8")
    assert page == export.html and export.left_out == []
    assert export.included == ["overview", "L1H2"] + [
        f"L{l}H{h}" for l in range(2) for h in range(4) if (l, h) != (1, 2)
    ]
    payload = _payload(page)
    assert payload["state"]["tokens"] == view.tokens and payload["state"]["selected"]["head"] == 2
    assert payload["state"]["can_rerun"] is False  # no kernel in the page
    assert base64.b64decode(payload["esm"]).decode() == view._esm
    head, buffers = _unpack(payload["replies"][request_key("pattern", {"layer": 0, "head": 3})])
    assert head["ok"] and head["result"]["revision"] == view.revision
    pattern = decode_array(head["result"]["pattern"], buffers)
    expected = view._snapshot.layers[0][3].float().numpy().astype(np.float16)
    np.testing.assert_array_equal(pattern, expected)
    view.close()


def test_nothing_in_the_page_reaches_the_network_or_escapes_its_script(induction: Any) -> None:
    view = mw.AttentionView(induction, HOSTILE)
    page = view.to_html().html
    assert "default-src 'none'" in page  # the page's own policy: no request leaves it
    assert not re.search(r"<(link|img|iframe)\b|\bsrc=", page)
    assert page.lower().count("</script") == 2 and page.count("<!--") == 0  # the payload's and the script's own
    assert HOSTILE in json.loads(json.dumps(_payload(page)["state"]["prompt"]))
    view.close()


def test_a_budget_keeps_the_overview_and_the_selected_head_and_says_what_it_left_out(induction: Any) -> None:
    view = mw.AttentionView(induction, "The cat sat on the mat.", layer=0, head=1)
    with pytest.warns(UserWarning, match=r"left out 7 of 9 parts .*L0H0, L0H2"):
        export = view.to_html(max_bytes=1)
    assert export.included == ["overview", "L0H1"]
    assert export.left_out == ["L0H0", "L0H2", "L0H3", "L1H0", "L1H1", "L1H2", "L1H3"]
    payload = _payload(export.html)
    assert set(payload["replies"]) == {request_key("overview", {}), request_key("pattern", {"head": 1, "layer": 0})}
    assert "left out over the 0 MiB budget: L0H0, L0H2" in payload["note"]
    view.close()


def test_a_view_without_an_export_says_so() -> None:
    widget = ProtocolWidget()
    with pytest.raises(NotImplementedError, match="no HTML export yet; its picture is: to_png"):
        widget.to_html()
    widget.close()


@pytest.fixture(scope="module")
def ioi() -> Any:
    return mw.zoo.load("ioi-4l")


IOI_PROMPT = "When Mary and John went to the store, John gave a drink to"


def test_composition_and_attribution_views_export_all_they_show(ioi: Any) -> None:
    views = {
        "CompositionView": (mw.CompositionView(ioi, mode="V"), ["V-composition", "Q-composition", "K-composition"]),
        "LogitAttribution": (mw.LogitAttribution(ioi, IOI_PROMPT, answer=" Mary", wrong=" John"), ["attribution"]),
    }
    for name, (view, parts) in views.items():
        export = view.to_html()
        assert sorted(export.included) == sorted(parts) and export.included[0] == parts[0], name
        for reply in _payload(export.html)["replies"].values():
            head, buffers = _unpack(reply)
            assert head["ok"], (name, head)
            assert head["result"]["revision"] == view.revision and buffers, name
        view.close()


def test_a_head_scan_exports_when_it_has_finished(induction: Any) -> None:
    scan = mw.HeadScan(induction, n_batches=2, batch_size=2, autostart=False)
    scan.set_trait("status", "running")  # as while its worker runs
    with pytest.raises(ValueError, match="the scan is still running .*export it when it is done or stopped"):
        scan.to_html()
    scan.set_trait("status", "idle")
    scan.start()
    scan.wait(60)
    export = scan.to_html()
    assert export.included == ["scores"]
    head, _ = _unpack(_payload(export.html)["replies"][request_key("scores", {})])
    assert head["ok"] and head["result"]["names"] == scan.score_names
    state = _payload(export.html)["state"]
    assert state["status"] == "done"
    assert state["can_start"] is False  # the page hides Start and Stop: no kernel to run a scan
    scan.close()


def test_a_reply_that_fails_is_left_out_with_its_error_or_stops_the_export(induction: Any) -> None:
    from mi_widgets.transport.export import ExportRequest

    view = mw.AttentionView(induction, "The cat sat on the mat.")
    requests = view._export_requests() + [ExportRequest("pattern", {"layer": 9, "head": 0}, "L9H0")]
    view._export_requests = lambda: requests  # type: ignore[method-assign]
    with pytest.warns(UserWarning, match="left out 1 of 10"):
        export = view.to_html()
    assert export.left_out == ["L9H0 (IndexError: layer must be in 0..1, got 9)"]
    assert request_key("pattern", {"layer": 9, "head": 0}) not in _payload(export.html)["replies"]
    requests[-1] = ExportRequest("pattern", {"layer": 9, "head": 0}, "L9H0", required=True)
    with pytest.raises(RuntimeError, match="cannot export L9H0: IndexError: layer must be in 0..1"):
        view.to_html()
    view.close()
