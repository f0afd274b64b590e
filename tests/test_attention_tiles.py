"""AttentionView past EXACT_MAX_SEQ tokens: level-of-detail `tile` and exact `line` requests, and the export."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch

from mi_widgets.analysis.attention import pool_max
from mi_widgets.transport import decode_array
from mi_widgets.widgets import AttentionView
from mi_widgets.widgets.attention import EXACT_MAX_SEQ, TILE, tile_levels

SEQ = 1100  # > 2 * TILE: level 0 has 3 tiles a side (the last 76 cells wide), level 1 has 2, level 2 has 1


def causal(seq: int, heads: int = 2, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    scores = rng.standard_normal((heads, seq, seq), dtype=np.float32)
    scores[:, np.triu(np.ones((seq, seq), dtype=bool), 1)] = -np.inf
    weights = np.exp(scores - scores.max(-1, keepdims=True))
    return weights / weights.sum(-1, keepdims=True)


@pytest.fixture(scope="module")
def patterns() -> np.ndarray:
    return causal(SEQ)


@pytest.fixture
def long_view(patterns: np.ndarray) -> AttentionView:
    return AttentionView.from_patterns(patterns, [f"t{i}" for i in range(SEQ)])


def reply_of(sent: Any, rid: str) -> tuple[dict[str, Any], list[Any]]:
    sent.wait(rid, 10)
    content, buffers = sent.reply(rid)
    return content, buffers


def tile(w: Any, sent: Any, ask: Callable[..., str], **params: int) -> tuple[dict[str, Any], np.ndarray | None]:
    content, buffers = reply_of(sent, ask(w, "tile", params))
    assert content["ok"] is True, content
    result = content["result"]
    return result, None if result.get("zero") else decode_array(result["values"], buffers)


def reference_pool(values: np.ndarray, factor: int) -> np.ndarray:
    """Independent max-pooling with partial edge blocks."""
    n = math.ceil(values.shape[0] / factor)
    m = math.ceil(values.shape[1] / factor)
    out = np.empty((n, m), np.float32)
    for i in range(n):
        for j in range(m):
            out[i, j] = values[i * factor : (i + 1) * factor, j * factor : (j + 1) * factor].max()
    return out


def test_levels() -> None:
    assert [tile_levels(n) for n in (1, TILE, TILE + 1, 2 * TILE, 2 * TILE + 1, 4096)] == [1, 1, 2, 2, 3, 4]


def test_tiles_are_max_pooled_blocks_with_edges(
    long_view: AttentionView, patterns: np.ndarray, capture: Any, ask: Any
) -> None:
    sent = capture(long_view)
    head = patterns[1]
    assert tile_levels(SEQ) == 3
    result, top = tile(long_view, sent, ask, layer=0, head=1, level=2, row=0, col=0)
    assert result["size"] == math.ceil(SEQ / 4) and result["tile"] == TILE and result["revision"] == long_view.revision
    assert result["values"]["dtype"] == "uint8" and result["values"]["layout"] == "lower"  # causal: the triangle only
    np.testing.assert_allclose(top, reference_pool(head, 4), atol=1 / 254 + 1e-3)  # float16, then uint8
    np.testing.assert_allclose(long_view._snapshot.top_tiles[0, 1].float().numpy(), reference_pool(head, 4), atol=1e-3)
    # level 0, the bottom edge tile: 76 rows, full resolution
    _, edge = tile(long_view, sent, ask, layer=0, head=1, level=0, row=2, col=1)
    assert edge.shape == (SEQ - 2 * TILE, TILE)
    np.testing.assert_allclose(edge, head[2 * TILE :, TILE : 2 * TILE], atol=1 / 254 / 2 + 1e-6)
    # level 1: corner tile with a partial pooled block at the edge (1100 / 2 = 550 -> 38 cells in tile 1)
    _, corner = tile(long_view, sent, ask, layer=0, head=1, level=1, row=1, col=1)
    assert corner.shape == (550 - TILE, 550 - TILE)
    np.testing.assert_allclose(corner, reference_pool(head, 2)[TILE:, TILE:], atol=1 / 254 / 2 + 1e-6)
    # above the diagonal of a causal head: nothing to send
    result, values = tile(long_view, sent, ask, layer=0, head=1, level=0, row=0, col=2)
    assert result["zero"] is True and values is None and "values" not in result


def test_pool_max_nan_and_signed() -> None:
    block = torch.tensor([[0.1, -0.9, 0.2], [0.3, 0.4, math.nan], [0.5, 0.0, 0.1]])
    pooled = pool_max(block, 2).numpy()
    assert pooled.shape == (2, 2)
    assert pooled[0, 0] == pytest.approx(0.4) and math.isnan(pooled[0, 1]) and pooled[1, 0] == pytest.approx(0.5)
    signed = pool_max(block.nan_to_num(0.0), 2, signed=True).numpy()
    assert signed[0, 0] == pytest.approx(-0.9)  # the value of largest magnitude, sign and all
    assert signed[1, 1] == pytest.approx(0.1)  # the edge block holds one cell
    np.testing.assert_array_equal(pool_max(block, 1).numpy(), block.numpy())
    with pytest.raises(ValueError, match="at least 1"):
        pool_max(block, 0)


def test_bad_tile_params_get_clear_errors(long_view: AttentionView, capture: Any, ask: Any) -> None:
    sent = capture(long_view)
    cases = [
        ({"layer": 0, "head": 0, "level": 3, "row": 0, "col": 0}, "tile level must be in 0..2, got 3"),
        (
            {"layer": 0, "head": 0, "level": 1, "row": 2, "col": 0},
            "tile row (level 1: 2 tiles per side) must be in 0..1",
        ),
        (
            {"layer": 0, "head": 0, "level": 0, "row": 0, "col": -1},
            "tile col (level 0: 3 tiles per side) must be in 0..2",
        ),
        ({"layer": 0, "head": 2, "level": 0, "row": 0, "col": 0}, "head must be in 0..1"),
        ({"layer": 0, "head": 0, "level": 0.5, "row": 0, "col": 0}, "'level' must be an integer"),
        ({"layer": 0, "head": 0, "row": 0, "col": 0}, "'level' must be an integer, got None"),
    ]
    for params, message in cases:
        content, _ = reply_of(sent, ask(long_view, "tile", params))
        assert content["ok"] is False and message in content["error"]["message"], (params, content)


def test_line_is_exact_row_or_column(long_view: AttentionView, patterns: np.ndarray, capture: Any, ask: Any) -> None:
    sent = capture(long_view)
    content, buffers = reply_of(sent, ask(long_view, "line", {"layer": 0, "head": 1, "axis": "query", "index": 700}))
    row = decode_array(content["result"]["values"], buffers)
    np.testing.assert_array_equal(row, patterns[1, 700].astype(np.float16).astype(np.float32))
    content, buffers = reply_of(sent, ask(long_view, "line", {"layer": 0, "head": 0, "axis": "key", "index": 3}))
    np.testing.assert_array_equal(
        decode_array(content["result"]["values"], buffers), patterns[0, :, 3].astype(np.float16).astype(np.float32)
    )
    for params, message in [
        ({"layer": 0, "head": 0, "axis": "row", "index": 0}, "line axis must be 'query' or 'key', got 'row'"),
        ({"layer": 0, "head": 0, "axis": "key", "index": SEQ}, f"line key must be in 0..{SEQ - 1}, got {SEQ}"),
    ]:
        content, _ = reply_of(sent, ask(long_view, "line", params))
        assert content["ok"] is False and message in content["error"]["message"]


def test_masked_views_send_nothing_above_the_diagonal(capture: Any, ask: Any) -> None:
    full = np.random.default_rng(1).random((1, SEQ, SEQ), dtype=np.float32)  # not causal: mask_upper_tri hides it
    w = AttentionView.from_patterns(full, [str(i) for i in range(SEQ)], mask_upper_tri=True)
    sent = capture(w)
    result, _ = tile(w, sent, ask, layer=0, head=0, level=0, row=0, col=1)
    assert result.get("zero") is True
    _, diagonal = tile(w, sent, ask, layer=0, head=0, level=0, row=1, col=1)
    assert not np.triu(diagonal, 1).any() and (diagonal[np.tril_indices(TILE)] > 0).mean() > 0.99
    _, top = tile(w, sent, ask, layer=0, head=0, level=2, row=0, col=0)  # from the snapshot's top tiles
    assert not np.triu(top, 1).any() and np.diag(top).all()
    assert w._repr_png_()[:4] == b"\x89PNG"  # the picture draws the pooled head
    content, buffers = reply_of(sent, ask(w, "line", {"layer": 0, "head": 0, "axis": "query", "index": 5}))
    row = decode_array(content["result"]["values"], buffers)
    assert np.isnan(row[6:]).all() and not np.isnan(row[:6]).any()


def test_export_records_overviews_and_the_selected_heads_tiles(long_view: AttentionView) -> None:
    long_view.selected = {"layer": 0, "head": 1}
    requests = long_view._export_requests()
    tiles = [r for r in requests if r.method == "tile"]
    assert [r.method for r in requests[:1]] == ["overview"] and not [r for r in requests if r.method == "pattern"]
    overviews = [r for r in tiles if r.params["level"] == 2]
    assert [(r.params["head"], r.required) for r in overviews] == [(1, True), (0, False)]
    finer = {(r.params["level"], r.params["row"], r.params["col"]) for r in tiles if r.params["level"] < 2}
    assert finer == {(1, r, c) for r in range(2) for c in range(2)} | {(0, r, c) for r in range(3) for c in range(3)}
    assert all(r.params["head"] == 1 for r in tiles if r.params["level"] < 2)
    short = AttentionView.from_patterns(causal(EXACT_MAX_SEQ, 1), [str(i) for i in range(EXACT_MAX_SEQ)])
    assert {r.method for r in short._export_requests()} == {"overview", "pattern"}  # whole heads, as before


@pytest.mark.parametrize("factor", [2, 4, 8])
@pytest.mark.parametrize("signed", [False, True])
def test_pool_max_over_heads_equals_each_block_by_hand(factor: int, signed: bool) -> None:
    """Pooling every head at once (the snapshot's top tiles, the tile endpoint) equals a loop over the blocks:
    partial edge blocks over what they hold, NaN kept, signed keeps the value of largest magnitude."""
    x = torch.randn(3, 301, 301, generator=torch.Generator().manual_seed(0))
    x[1, 5, 7] = math.nan
    pooled = pool_max(x, factor, signed=signed)
    n = -(-301 // factor)
    assert pooled.shape == (3, n, n)
    for h in range(3):
        for i in range(n):
            for j in [*range(0, n, 7), n - 1]:
                block = x[h, i * factor : (i + 1) * factor, j * factor : (j + 1) * factor]
                if bool(torch.isnan(block).any()):
                    assert math.isnan(pooled[h, i, j])
                    continue
                top, low = block.max(), block.min()
                assert pooled[h, i, j] == (low if signed and -low > top.abs() else top)
