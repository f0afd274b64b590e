"""TopExamples: the running top-k against brute force, the streamed widget, its requests, bad input."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch
import traitlets
from hypothesis import given, settings
from hypothesis import strategies as st

import mi_widgets as mw
from mi_widgets.analysis.top_examples import EMPTY, RunningTopK, pad_rows, split_windows
from mi_widgets.transport.codec import decode_array

from .conftest import SENTENCES

HOOK = "blocks.1.mlp.hook_post"
LONG_TEXT = " ".join(SENTENCES * 6)  # several n_ctx=128 windows


# ----- RunningTopK vs brute force ---------------------------------------------------------


def brute_topk(batches: list[tuple[torch.Tensor, torch.Tensor]], k: int) -> tuple[list, list]:
    """Per unit, the k best (value, doc, position) over every valid activation, ties to the first seen."""
    n_units = batches[0][0].shape[-1]
    values, where = [], []
    doc = 0
    for acts, mask in batches:
        for b in range(acts.shape[0]):
            for s in range(acts.shape[1]):
                if mask[b, s]:
                    values.append(acts[b, s].tolist())
                    where.append((doc, s))
            doc += 1
    out_v, out_w = [], []
    for u in range(n_units):
        found = [(v[u], w) for v, w in zip(values, where) if not math.isnan(v[u]) and v[u] != float("-inf")]
        best = sorted(found, key=lambda t: -t[0])[:k]  # sorted() is stable: equal values keep scan order
        best += [(float("-inf"), (EMPTY, EMPTY))] * (k - len(best))
        out_v.append([v for v, _ in best])
        out_w.append([w for _, w in best])
    return out_v, out_w


@st.composite
def scans(draw: Any) -> tuple[int, int, list[tuple[torch.Tensor, torch.Tensor]]]:
    n_units = draw(st.integers(1, 4))
    k = draw(st.integers(1, 7))
    # Few distinct values, so ties are everywhere, at the cut and inside the top-k; NaN never counts.
    value = st.sampled_from([-2.0, -1.0, 0.0, 0.5, 1.0, 3.0, float("nan")])
    batches = []
    for _ in range(draw(st.integers(1, 4))):
        batch, seq = draw(st.integers(1, 3)), draw(st.integers(1, 6))
        acts = torch.tensor(draw(st.lists(value, min_size=batch * seq * n_units, max_size=batch * seq * n_units)))
        mask = torch.tensor(draw(st.lists(st.booleans(), min_size=batch * seq, max_size=batch * seq)))
        batches.append((acts.reshape(batch, seq, n_units), mask.reshape(batch, seq)))
    return n_units, k, batches


@settings(max_examples=300, deadline=None)
@given(scans())
def test_running_topk_equals_brute_force_with_ties_masks_and_nan(scan: tuple[int, int, list]) -> None:
    n_units, k, batches = scan
    running = RunningTopK(n_units, k)
    doc = 0
    for acts, mask in batches:
        running.update(acts, torch.arange(doc, doc + acts.shape[0]), mask)
        doc += acts.shape[0]
    values, docs, positions = running.snapshot()
    want_v, want_w = brute_topk(batches, k)
    assert values.tolist() == want_v
    assert [list(zip(d, p)) for d, p in zip(docs.tolist(), positions.tolist())] == want_w
    assert running.filled().tolist() == [sum(v != float("-inf") for v in row) for row in want_v]


def test_running_topk_on_continuous_values_keeps_bounded_state() -> None:
    gen = torch.Generator().manual_seed(0)
    running = RunningTopK(50, 8)
    batches = [(torch.randn(4, 33, 50, generator=gen), torch.ones(4, 33, dtype=torch.bool)) for _ in range(6)]
    for i, (acts, mask) in enumerate(batches):
        running.update(acts, torch.arange(4 * i, 4 * i + 4), mask)
        assert [tuple(t.shape) for t in running.snapshot()] == [(50, 8)] * 3  # never grows with the corpus
    everything = torch.cat([a.reshape(-1, 50) for a, _ in batches])
    torch.testing.assert_close(running.values, everything.topk(8, dim=0).values.T)
    flat = running.docs * 33 + running.positions
    torch.testing.assert_close(everything.gather(0, flat.T).T, running.values)


def test_running_topk_bad_input() -> None:
    running = RunningTopK(3, 2)
    with pytest.raises(ValueError, match=r"expected activations \[batch, seq, 3\]"):
        running.update(torch.zeros(2, 4, 5), [0, 1])
    with pytest.raises(ValueError, match="2 integer doc ids"):
        running.update(torch.zeros(2, 4, 3), [0])
    with pytest.raises(ValueError, match=r"mask \[batch, seq\] = \[2, 4\]"):
        running.update(torch.zeros(2, 4, 3), [0, 1], torch.ones(2, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="at least 1"):
        RunningTopK(3, 0)


def test_split_windows_and_pad_rows() -> None:
    tokens = torch.arange(10, 30)
    windows = split_windows(tokens, n_ctx=8, bos=1)
    assert [w.tolist()[0] for w in windows] == [1, 1, 1] and all(len(w) <= 8 for w in windows)
    assert torch.equal(torch.cat([w[1:] for w in windows]), tokens)
    assert [len(w) for w in split_windows(tokens, n_ctx=8, bos=None)] == [8, 8, 4]
    padded, mask = pad_rows([torch.tensor([5, 6, 7]), torch.tensor([8])], pad=0)
    assert padded.tolist() == [[5, 6, 7], [8, 0, 0]] and mask.tolist() == [[True] * 3, [True, False, False]]


# ----- the widget against run_with_cache ---------------------------------------------------


def windows_of(model: Any, texts: list[str]) -> list[torch.Tensor]:
    """The windows TopExamples should read: each text without BOS, cut into BOS + up to n_ctx - 1 tokens."""
    bos = model.tokenizer.bos_token_id
    return [
        w
        for t in texts
        for w in split_windows(model.to_tokens(t, prepend_bos=False, truncate=False)[0], model.cfg.n_ctx, bos)
    ]


def cached_activations(model: Any, rows: list[torch.Tensor], neurons: list[int]) -> list[torch.Tensor]:
    """Brute force: TransformerLens's own run_with_cache, one unpadded window at a time."""
    out = []
    for row in rows:
        _, cache = model.run_with_cache(row[None], names_filter=HOOK)
        out.append(cache[HOOK][0][:, neurons])
    return out


@pytest.fixture(scope="module")
def corpus() -> list[str]:
    return SENTENCES + [LONG_TEXT]


def test_widget_equals_run_with_cache_over_the_corpus(gpt2_bridge: Any, corpus: list[str]) -> None:
    neurons = list(range(0, 64, 2))
    ex = mw.TopExamples(gpt2_bridge, corpus, hook=HOOK, neurons=neurons, k=4, batch_size=3, context=5, after=2).wait(
        120
    )
    assert ex.status == "done", ex.error
    rows = windows_of(gpt2_bridge, corpus)
    assert ex.n_windows == len(rows) > len(corpus)  # the long text gave several windows
    assert all(torch.equal(a, b) for a, b in zip(ex._rows, rows))
    assert ex.progress == {"done": math.ceil(len(rows) / 3), "total": math.ceil(len(rows) / 3)}
    acts = cached_activations(gpt2_bridge, rows, neurons)
    everything = torch.cat(acts)
    starts = torch.as_tensor(np.cumsum([0] + [a.shape[0] for a in acts]))
    values, docs, positions = ex._topk.snapshot()
    torch.testing.assert_close(values, everything.topk(4, dim=0).values.T, atol=1e-5, rtol=1e-5)
    at = everything[starts[docs] + positions, torch.arange(len(neurons))[:, None]]
    torch.testing.assert_close(at, values, atol=1e-5, rtol=1e-5)  # each reported place holds the reported value
    torch.testing.assert_close(ex.maxima, values[:, 0])

    # examples[n]: keyed by neuron id; the window around each maximum, activations recomputed
    examples = ex.examples[6]
    col = neurons.index(6)
    assert [e.value for e in examples] == pytest.approx(values[col].tolist())
    for e in examples:
        row = rows[e.window]
        start = max(0, e.position - 5)
        end = min(len(row), e.position + 3)
        assert e.tokens == gpt2_bridge.to_str_tokens(row[start:end])
        assert e.max_index == e.position - start and e.source == (
            e.window if e.window < len(SENTENCES) else len(SENTENCES)
        )
        torch.testing.assert_close(e.activations, acts[e.window][start:end, col], atol=1e-5, rtol=1e-5)
        assert float(e.activations[e.max_index]) == pytest.approx(e.value, abs=1e-5)
    assert ex.examples[6] is examples  # cached until the scan moves on
    assert len(ex.examples) == len(neurons) and list(ex.examples)[:2] == [0, 2]
    with pytest.raises(KeyError, match="neuron 7 was not scanned"):
        ex.examples[7]


def test_token_batches_and_shorthand_hook(gpt2_bridge: Any) -> None:
    gen = torch.Generator().manual_seed(1)
    batches = [torch.randint(0, 300, (3, 20), generator=gen), torch.randint(0, 300, (2, 9), generator=gen)]
    ex = mw.TopExamples(gpt2_bridge, batches, hook="mlp.post", layer=1, neurons=[5, 1, 200], k=3, batch_size=2).wait(60)
    assert ex.status == "done" and ex.hook == HOOK and ex.neurons == [5, 1, 200] and ex.n_windows == 5
    rows = [r for b in batches for r in b]
    acts = cached_activations(gpt2_bridge, rows, [5, 1, 200])
    torch.testing.assert_close(ex._topk.values, torch.cat(acts).topk(3, dim=0).values.T, atol=1e-5, rtol=1e-5)
    assert [e.source for e in ex.examples[200]] == [e.window for e in ex.examples[200]]  # one source per row
    default = mw.TopExamples(gpt2_bridge, batches[0], hook="blocks.0.hook_resid_post", autostart=False)
    assert default.neurons == list(range(64)) and default.status == "idle"  # d_model 64: all of them


def test_stop_keeps_partial_results_equal_to_the_batches_seen(gpt2_bridge: Any, corpus: list[str]) -> None:
    long = corpus * 40
    ex = mw.TopExamples(gpt2_bridge, long, hook=HOOK, neurons=range(16), k=3, batch_size=1, autostart=False)
    total = ex.progress["total"]
    ex.start()
    deadline = time.monotonic() + 60
    while ex.progress["done"] < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    ex.stop()
    ex.wait(60)
    done = ex.progress["done"]
    assert ex.status == "stopped" and 3 <= done < total and ex.revision == done
    acts = cached_activations(gpt2_bridge, ex._rows[:done], list(range(16)))  # batch_size 1: one window per batch
    torch.testing.assert_close(ex._topk.values, torch.cat(acts).topk(3, dim=0).values.T, atol=1e-5, rtol=1e-5)
    assert all(e.window < done for e in ex.examples[0])
    revision = ex.revision
    ex.start()  # restart: from an empty state, the revision keeps growing
    ex.wait(120)
    assert ex.status == "done" and ex.revision == revision + total


def test_memory_is_bounded_by_k_times_neurons(gpt2_bridge: Any, corpus: list[str]) -> None:
    shapes = []
    for texts in (corpus[:2], corpus * 5):
        ex = mw.TopExamples(gpt2_bridge, texts, hook=HOOK, neurons=range(10), k=5, batch_size=4).wait(120)
        assert ex.status == "done"
        shapes.append([(tuple(t.shape), t.dtype) for t in ex._topk.snapshot()])
        assert sum(t.numel() for t in ex._topk.snapshot()) == 3 * 10 * 5
    assert shapes[0] == shapes[1]  # the running state does not depend on the corpus length


# ----- requests ------------------------------------------------------------------------------


def test_overview_and_examples_requests(gpt2_bridge: Any, corpus: list[str], capture: Callable, ask: Callable) -> None:
    ex = mw.TopExamples(gpt2_bridge, corpus, hook=HOOK, neurons=range(8, 24), k=3).wait(60)
    sent = capture(ex)
    rid = ask(ex, "overview")
    content, buffers = sent.reply(rid)
    assert (
        content["ok"]
        and content["result"]["revision"] == ex.revision
        and content["result"]["neurons"] == list(range(8, 24))
    )
    assert content["result"]["maxima"]["dtype"] == "float16"
    np.testing.assert_allclose(
        decode_array(content["result"]["maxima"], buffers), ex.maxima.numpy(), rtol=1e-3, atol=1e-3
    )
    assert decode_array(content["result"]["filled"], buffers).tolist() == [3] * 16

    rid = ask(ex, "examples", {"neuron": 12})
    sent.wait(rid)
    content, buffers = sent.reply(rid)
    assert content["ok"], content
    result = content["result"]
    examples = ex.examples[12]
    assert result["neuron"] == 12 and [e["tokens"] for e in result["examples"]] == [e.tokens for e in examples]
    assert [e["max_index"] for e in result["examples"]] == [e.max_index for e in examples]
    assert [[e["window"], e["position"], e["source"]] for e in result["examples"]] == [
        [e.window, e.position, e.source] for e in examples
    ]
    acts = decode_array(result["example_acts"], buffers)
    assert result["example_acts"]["dtype"] == "float16" and acts.shape == (3, max(len(e.tokens) for e in examples))
    for row, e in zip(acts, examples):
        np.testing.assert_allclose(row[: len(e.tokens)], e.activations.numpy(), rtol=2e-3, atol=2e-3)
        assert np.isnan(row[len(e.tokens) :]).all()
    assert result["example_values"]["dtype"] == "float32"
    np.testing.assert_allclose(decode_array(result["example_values"], buffers), [e.value for e in examples], rtol=1e-6)

    rid = ask(ex, "examples", {"neuron": 3})
    sent.wait(rid)
    assert "neuron 3 was not scanned; scanned neurons: 8..23" in sent.reply(rid)[0]["error"]["message"]
    rid = ask(ex, "examples", {"neuron": "12"})
    sent.wait(rid)
    assert "'neuron' must be an integer" in sent.reply(rid)[0]["error"]["message"]
    rid = ask(ex, "start")
    assert sent.reply(rid)[0]["ok"]
    ex.wait(60)
    assert ex.status == "done"


def test_selected_syncs_and_is_checked(gpt2_bridge: Any) -> None:
    ex = mw.TopExamples(gpt2_bridge, SENTENCES, hook=HOOK, neurons=[3, 17], autostart=False)
    assert ex.selected == {"neuron": None}
    ex.selected = {"neuron": 17}
    assert ex.selected == {"neuron": 17}
    with pytest.raises(traitlets.TraitError, match=r"scanned neurons \(3, 17\), got 4"):
        ex.selected = {"neuron": 4}
    with pytest.raises(traitlets.TraitError, match="key 'neuron'"):
        ex.selected = {"layer": 1}
    assert ex.examples[17] == []  # nothing scanned yet


def test_an_error_in_the_scan_reaches_the_view_and_the_kernel_survives(gpt2_bridge: Any) -> None:
    ex = mw.TopExamples(gpt2_bridge, SENTENCES, hook=HOOK, neurons=range(4), autostart=False)

    def boom(index: int) -> None:
        raise RuntimeError("device lost")

    ex._scan_step = boom  # type: ignore[method-assign]
    ex.start()
    ex.wait(30)
    assert ex.status == "error" and ex.error == "RuntimeError: device lost"


# ----- bad input ------------------------------------------------------------------------------


def test_bad_input(gpt2_bridge: Any, native_model_no_tokenizer: Any) -> None:
    m = gpt2_bridge
    with pytest.raises(ValueError, match="corpus is empty"):
        mw.TopExamples(m, [])
    with pytest.raises(ValueError, match="corpus is empty: its 2 text"):
        mw.TopExamples(m, ["", ""])
    with pytest.raises(ValueError, match="corpus is empty: its tensors hold no tokens"):
        mw.TopExamples(m, torch.zeros(0, 5, dtype=torch.long))
    with pytest.raises(TypeError, match="got a list of int, str"):
        mw.TopExamples(m, ["text", 3])
    with pytest.raises(TypeError, match="corpus must be a list of strings"):
        mw.TopExamples(m, {"a": 1})
    with pytest.raises(ValueError, match="did you mean blocks.1.mlp.hook_post"):
        mw.TopExamples(m, SENTENCES, hook="blocks.1.mlp.hook_pst")
    with pytest.raises(ValueError, match="did you mean mlp.post"):
        mw.TopExamples(m, SENTENCES, hook="mlp.pots")
    with pytest.raises(ValueError, match=r"one hook in each of the 2 layers.*layer=0..1"):
        mw.TopExamples(m, SENTENCES, hook="mlp.post")
    with pytest.raises(ValueError, match="layer must be in 0..1, got 2"):
        mw.TopExamples(m, SENTENCES, hook="mlp.post", layer=2)
    with pytest.raises(ValueError, match="layer= only applies"):
        mw.TopExamples(m, SENTENCES, hook=HOOK, layer=1)
    with pytest.raises(ValueError, match="not one vector per token"):
        mw.TopExamples(m, SENTENCES, hook="blocks.0.attn.hook_pattern")
    with pytest.raises(
        IndexError, match=r"neurons must be in 0..255 \(blocks.1.mlp.hook_post has 256 units\), got \[256, 900\]"
    ):
        mw.TopExamples(m, SENTENCES, neurons=[1, 256, 900])
    with pytest.raises(ValueError, match="neurons is empty"):
        mw.TopExamples(m, SENTENCES, neurons=[])
    with pytest.raises(ValueError, match="distinct"):
        mw.TopExamples(m, SENTENCES, neurons=[1, 1])
    with pytest.raises(TypeError, match="neurons must be integers"):
        mw.TopExamples(m, SENTENCES, neurons=[1.5])
    with pytest.raises(ValueError, match="k must be an integer >= 1"):
        mw.TopExamples(m, SENTENCES, k=0)
    with pytest.raises(ValueError, match=r"n_ctx\) is 128"):
        mw.TopExamples(m, torch.ones(2, 200, dtype=torch.long))
    with pytest.raises(ValueError, match="token ids must be in 0.."):
        mw.TopExamples(m, torch.full((1, 5), 10_000))
    with pytest.raises(ValueError, match="no tokenizer"):
        mw.TopExamples(native_model_no_tokenizer, SENTENCES, hook="blocks.1.hook_resid_post")
    ok = mw.TopExamples(
        native_model_no_tokenizer, torch.arange(1, 30)[None], hook="blocks.1.hook_resid_post", k=2
    ).wait(30)
    assert ok.status == "done" and ok.examples[0][0].tokens[0].startswith("<")  # <id> labels without a tokenizer
