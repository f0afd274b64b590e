"""HeadScan: streamed head scores, Stop, the linked AttentionView, and bad input."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pytest
import torch
import traitlets

import mi_widgets as mw
from mi_widgets.transport.codec import decode_array
from mi_widgets.widgets.head_scan import HeadScan


@pytest.fixture(scope="module")
def model() -> Any:
    return mw.zoo.load("induction-2l")


def test_scan_finds_the_induction_circuit(model: Any) -> None:
    scan = HeadScan(model).wait(60)
    assert scan.status == "done" and scan.progress == {"done": 8, "total": 8} and scan.revision == 8
    scores = scan.scores
    assert set(scores) == {"previous_token", "duplicate_token", "induction"}
    assert scores["induction"].shape == (2, 4)
    assert scores["induction"][1].min() > 0.9 and scores["induction"][0].max() < 0.1
    layer, head, value = scan.top("previous_token", k=1)[0]
    assert (layer, value > 0.9) == (0, True)
    assert [h[:2] for h in scan.top("induction", k=4)] == sorted(
        [h[:2] for h in scan.top("induction", k=4)], key=lambda lh: -float(scores["induction"][lh])
    )
    assert all(l == 1 for l, _, _ in scan.top("induction", k=4))


def test_stop_keeps_partial_scores_and_restart_resets(model: Any) -> None:
    scan = HeadScan(model, n_batches=400, batch_size=8, autostart=False)
    scan.start()
    deadline = time.monotonic() + 30
    while scan.progress["done"] < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    scan.stop()
    scan.wait(30)
    done = scan.progress["done"]
    assert scan.status == "stopped" and 2 <= done < 400
    assert scan.revision == done
    assert torch.isfinite(scan.scores["induction"]).all()  # the partial result stays in Python
    assert scan._running.hits["induction"].shape == (2, 4)  # running sums: memory does not grow with batches


def test_own_sequences_and_detection_pattern(model: Any) -> None:
    x = torch.randint(1, 512, (4, 10), generator=torch.Generator().manual_seed(3))
    seqs = torch.cat([torch.zeros(4, 1, dtype=torch.long), x, x], dim=1)
    bos_sink = torch.zeros(21, 21)
    bos_sink[:, 0] = 1.0
    scan = HeadScan(model, sequences=seqs, detection_pattern=bos_sink).wait(30)
    assert scan.score_names == ["previous_token", "duplicate_token", "induction", "custom"]
    assert scan.progress == {"done": 1, "total": 1}
    custom = scan.scores["custom"]
    assert custom.shape == (2, 4) and bool(((custom >= 0) & (custom <= 1)).all())
    text_scan = HeadScan(model, sequences=["one two three one two three", "four five six four five six"], batch_size=1)
    assert text_scan.wait(30).progress == {"done": 2, "total": 2}


def test_scores_request_and_start_stop_messages(model: Any) -> None:
    scan = HeadScan(model, n_batches=2).wait(30)
    sent: list[tuple[dict, list]] = []
    scan.send = lambda content, buffers=None: sent.append((content, buffers or []))
    scan._handle_custom_msg({"type": "request", "id": "t:1", "method": "scores", "params": {}}, [])
    content, buffers = sent[-1]
    assert content["ok"] and content["result"]["names"] == ["previous_token", "duplicate_token", "induction"]
    values = decode_array(content["result"]["scores"], buffers)
    np.testing.assert_allclose(values[2], scan.scores["induction"].numpy(), rtol=1e-6)
    scan._handle_custom_msg({"type": "request", "id": "t:2", "method": "start", "params": {}}, [])
    assert sent[-1][0]["ok"]
    scan.wait(30)
    assert scan.status == "done"


def test_clicking_a_head_opens_it_in_the_attention_view(model: Any) -> None:
    scan = HeadScan(model, n_batches=1).wait(30)
    assert isinstance(scan.attention, mw.AttentionView)
    scan.selected = {"score": "induction", "layer": 1, "head": 3}
    assert scan.attention.selected == {"layer": 1, "head": 3, "query": None, "key": None}
    with pytest.raises(traitlets.TraitError, match="score must be one of"):
        scan.selected = {"score": "nope", "layer": 0, "head": 0}
    with pytest.raises(traitlets.TraitError, match="selected head must be in 0..3"):  # as every widget's selected
        scan.selected = {"score": "induction", "layer": 0, "head": 9}
    with pytest.raises(ValueError, match="unknown score 'nope'"):
        scan.top("nope")


class _NoPatternHooks:
    """Looks like a TransformerLens model but has no attention-pattern hook points."""

    class cfg:  # noqa: N801 - mimics model.cfg
        n_layers, n_heads, n_ctx, d_vocab = 1, 2, 16, 10

    hook_dict = {"blocks.0.hook_resid_pre": None}

    def run_with_hooks(self, *args: Any, **kwargs: Any) -> None:
        return None


def test_bad_input(model: Any) -> None:
    with pytest.raises(ValueError, match="unknown hook name 'blocks.0.attn.hook_pattern'"):
        HeadScan(_NoPatternHooks())
    with pytest.raises(ValueError, match="n_ctx\\) is 128"):
        HeadScan(model, sequences=torch.ones(1, 200, dtype=torch.long))
    with pytest.raises(ValueError, match=r"shape \[21, 21\]"):
        HeadScan(model, sequences=torch.ones(2, 21, dtype=torch.long), detection_pattern=torch.zeros(5, 5))
    with pytest.raises(ValueError, match="at least 1"):
        HeadScan(model, n_batches=0)
    with pytest.raises(ValueError, match="sequences is empty"):
        HeadScan(model, sequences=[])
    with pytest.raises(TypeError, match="TransformerLens model"):
        HeadScan(object())


def test_random_batches_are_made_when_read_and_are_reproducible(model: Any) -> None:
    big = HeadScan(model, n_batches=10**6, batch_size=4, seed=5, autostart=False)  # nothing made up front
    batches = big._batches
    assert len(batches) == 10**6
    again = HeadScan(model, n_batches=3, batch_size=4, seed=5, autostart=False)._batches
    first = batches[0]
    assert torch.equal(first, again[0]) and torch.equal(batches[2], again[-1])
    half = first.shape[1] // 2  # [BOS] x x: the last 2 * repeat tokens
    body = first[:, -2 * half :]
    assert torch.equal(body[:, :half], body[:, half:])  # x x: the second half repeats the first
    assert not torch.equal(batches[0], batches[1]) or batches[0].shape != batches[1].shape
    with pytest.raises(IndexError):
        batches[10**6]
    with pytest.raises(ValueError, match="seed must be a non-negative integer, got -1"):
        HeadScan(model, seed=-1, autostart=False)
    big.close()
