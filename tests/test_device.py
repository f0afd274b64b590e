"""Device tests: every widget computes on the model's device and moves to the host only what it sends.

They run on the device ``MIW_TEST_DEVICE`` names (default ``cuda`` when available, else ``cpu``) and are never
skipped: on a CPU-only machine they run on the CPU. On a GPU::

    MIW_TEST_DEVICE=cuda .venv/bin/python -m pytest -q tests/test_device.py

The bundled ``induction-2l`` is loaded on the test device and, as the reference, on the CPU. For AttentionView,
HeadScan, ActivationView, LogitLens, Patching and TopExamples each test

* builds (and, for a scan, runs) the widget on the test device and checks that what it keeps for serving
  (patterns, running scores, activations, residual streams, running top-k) stays on the model's device;
* serves the requests its view makes while ``HostReads`` records every read of a tensor into host memory
  (``Tensor.cpu``, ``.numpy``, ``.tolist``, ``.item``, ``.to(<cpu>)``), and checks that each reply's reads add up
  to at most the elements the reply sends (the logical shape of its arrays) plus a few scalars: reductions run
  before the transfer, never after it;
* checks the replies equal the same requests' replies from the CPU model (float tolerance).

On a GPU the recorder counts only reads of tensors on that device, i.e. real device-to-host copies. On the CPU
nothing crosses, so it counts every host read (a tensor read twice through ``.cpu().numpy()`` counted once) as a
stand-in: a path that copied a whole activation or pattern to the host before reducing it still fails here.
"""

from __future__ import annotations

import math
import os
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest
import torch

import mi_widgets as mw
from mi_widgets.transport.codec import decode_array

DEVICE = torch.device(os.environ.get("MIW_TEST_DEVICE") or ("cuda" if torch.cuda.is_available() else "cpu"))
ON_HOST = DEVICE.type == "cpu"
SLACK = 64  # scalar reads a reply may make besides its arrays (a range's max, a count)
PROMPT = "def f(x): return x + 1\ndef f(x): return x + 1\n"
HOOK = "blocks.1.hook_resid_post"


# ----- recording host reads -----------------------------------------------------------------


def _is_host(target: Any) -> bool:
    if isinstance(target, torch.Tensor):
        return target.device.type == "cpu"
    if isinstance(target, (str, torch.device)):
        try:
            return torch.device(target).type == "cpu"
        except RuntimeError:
            return False
    return False


class HostReads:
    """Every read of a tensor into host memory while active: ``(how, numel, shape, where)``."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.reads: list[tuple[str, int, tuple[int, ...], str]] = []
        self._seen: set[tuple[int, int, torch.dtype]] = set()
        self._lock = threading.Lock()
        self.active = False
        for name in ("cpu", "numpy", "tolist", "item"):
            monkeypatch.setattr(torch.Tensor, name, self._wrap(name, getattr(torch.Tensor, name)))
        original_to = torch.Tensor.to

        def to(tensor: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
            targets = [*args[:1], kwargs.get("device")]
            if not ON_HOST and any(_is_host(t) for t in targets):  # on the CPU .to(cpu) is the model's device
                self._record(tensor, "to(cpu)")
            return original_to(tensor, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, "to", to)

    def _wrap(self, name: str, method: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(tensor: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
            self._record(tensor, name)
            return method(tensor, *args, **kwargs)

        return wrapper

    def _record(self, tensor: torch.Tensor, how: str) -> None:
        if not self.active or tensor.device.type != DEVICE.type:  # cuda:0 is "cuda"
            return
        if ON_HOST:  # nothing is copied on the CPU: count each block of memory read once
            key = (tensor.data_ptr(), tensor.numel(), tensor.dtype)
            with self._lock:
                if key in self._seen:
                    return
                self._seen.add(key)
        frame = sys._getframe(2)
        where = f"{os.path.basename(frame.f_code.co_filename)}:{frame.f_lineno}"
        with self._lock:
            self.reads.append((how, tensor.numel(), tuple(tensor.shape), where))

    def start(self) -> None:
        with self._lock:
            self.reads, self._seen, self.active = [], set(), True

    def stop(self) -> list[tuple[str, int, tuple[int, ...], str]]:
        with self._lock:
            self.active = False
            return list(self.reads)

    @property
    def total(self) -> int:
        return sum(n for _, n, _, _ in self.reads)


@pytest.fixture
def host_reads(monkeypatch: pytest.MonkeyPatch) -> Iterator[HostReads]:
    reads = HostReads(monkeypatch)
    yield reads
    reads.active = False


# ----- models and replies --------------------------------------------------------------------


@pytest.fixture(scope="module")
def models() -> tuple[Any, Any]:
    """``(model on the test device, the same model on the CPU)``."""
    return mw.zoo.load("induction-2l", device=DEVICE), mw.zoo.load("induction-2l", device="cpu")


def _arrays(result: Any) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every array header in a reply's result, with its path."""
    stack: list[tuple[str, Any]] = [("", result)]
    while stack:
        path, node = stack.pop()
        if isinstance(node, dict) and {"dtype", "shape", "buffer"} <= node.keys():
            yield path, node
        elif isinstance(node, dict):
            stack.extend((f"{path}.{k}", v) for k, v in node.items())
        elif isinstance(node, list):
            stack.extend((f"{path}[{i}]", v) for i, v in enumerate(node))


def _labels(result: Any) -> int:
    """How many numbers and strings the reply's JSON lists hold (token labels, vocab labels: one id read each)."""
    if isinstance(result, dict):
        return 0 if {"dtype", "shape", "buffer"} <= result.keys() else sum(_labels(v) for v in result.values())
    if isinstance(result, list):
        return sum(_labels(v) if isinstance(v, (dict, list)) else 1 for v in result)
    return 0


def serve(
    widget: Any, method: str, params: dict[str, Any], reads: HostReads, capture: Any, ask: Any, allow: int = 0
) -> dict:
    """Serve one request while recording host reads; check they are bounded by what the reply sends (its
    arrays' elements and its JSON labels) plus ``allow`` and a few scalars.

    Returns ``{path: decoded array}`` plus ``"result"``: the reply's JSON.
    """
    sent = capture(widget)
    reads.start()
    rid = ask(widget, method, params)
    sent.wait(rid, timeout=60)
    got = reads.stop()
    content, buffers = sent.reply(rid)
    assert content["ok"], content
    arrays = {path: decode_array(header, buffers) for path, header in _arrays(content["result"])}
    sent_elements = sum(math.prod(header["shape"]) for _, header in _arrays(content["result"]))
    sent_elements += _labels(content["result"])
    read = sum(n for _, n, _, _ in got)
    assert read <= sent_elements + allow + SLACK, (
        f"{type(widget).__name__} {method} {params}: read {read} elements into host memory for a reply of "
        f"{sent_elements}: {sorted(got, key=lambda r: -r[1])[:8]}"
    )
    return {"result": content["result"], **arrays}


def assert_same(got: dict, want: dict, what: str) -> None:
    """Decoded replies equal within float tolerance (uint8 codes one step apart; float16 rounding)."""
    assert got.keys() == want.keys(), what
    for key, value in got.items():
        if key == "result":
            continue
        ref = want[key]
        assert value.shape == ref.shape and value.dtype == ref.dtype, f"{what} {key}"
        if value.dtype.kind in "iu":
            np.testing.assert_array_equal(value, ref, err_msg=f"{what} {key}")
        else:
            scale = float(np.nanmax(np.abs(ref))) if np.isfinite(ref).any() else 1.0
            np.testing.assert_allclose(value, ref, rtol=1e-2, atol=1e-2 * max(scale, 1e-3), err_msg=f"{what} {key}")


def on_device(tensor: torch.Tensor) -> bool:
    return tensor.device.type == DEVICE.type


def compare_replies(
    make: Callable[[Any], Any],
    requests: list[tuple[str, dict[str, Any]] | tuple[str, dict[str, Any], int]],
    models: tuple[Any, Any],
    reads: HostReads,
    capture: Any,
    ask: Any,
    check: Callable[[Any], None] = lambda w: None,
) -> None:
    """Build the widget on both models, check it with ``check``, and serve ``requests`` on both."""
    widget, reference = make(models[0]), make(models[1])
    try:
        check(widget)
        for method, params, *allow in requests:
            got = serve(widget, method, params, reads, capture, ask, *allow)
            want = serve(reference, method, params, reads, capture, ask, *allow)
            assert_same(got, want, f"{type(widget).__name__} {method} {params}")
    finally:
        widget.close()
        reference.close()


# ----- the widgets -------------------------------------------------------------------------


def test_device_is_named() -> None:
    """The device under test is the one MIW_TEST_DEVICE names (and it exists)."""
    assert torch.empty(1, device=DEVICE).device.type == DEVICE.type


def test_model_is_on_the_device(models: tuple[Any, Any]) -> None:
    model, _ = models
    assert all(on_device(p) for p in model.parameters())


def test_attention_view(models: tuple[Any, Any], host_reads: HostReads, capture: Any, ask: Any) -> None:
    def check(view: Any) -> None:
        assert all(on_device(layer) for layer in view._snapshot.layers)

    seq = len(mw.AttentionView(models[1], PROMPT).tokens)
    requests = [
        ("overview", {}),
        ("pattern", {"layer": 1, "head": 2}),
        ("line", {"layer": 1, "head": 0, "axis": "query", "index": seq - 1}),
        ("line", {"layer": 0, "head": 3, "axis": "key", "index": 0}),
        ("tile", {"layer": 0, "head": 1, "level": 0, "row": 0, "col": 0}),  # n_ctx 128 < TILE: one level
    ]
    compare_replies(lambda m: mw.AttentionView(m, PROMPT), requests, models, host_reads, capture, ask, check)


def test_attention_view_run(models: tuple[Any, Any], host_reads: HostReads, capture: Any, ask: Any) -> None:
    """A new prompt runs on the device; only the token labels' ids come back with it."""
    view = mw.AttentionView(models[0], PROMPT)
    try:
        sent = capture(view)
        host_reads.start()
        rid = ask(view, "run", {"prompt": PROMPT + "x = f(2)\n"})
        sent.wait(rid, timeout=60)
        host_reads.stop()
        assert sent.reply(rid)[0]["ok"]
        assert host_reads.total <= len(view.tokens) + SLACK, host_reads.reads
        assert all(on_device(layer) for layer in view._snapshot.layers)
    finally:
        view.close()


def test_head_scan(models: tuple[Any, Any], host_reads: HostReads, capture: Any, ask: Any) -> None:
    """The scan reduces each batch's patterns on the device: nothing comes to the host while it runs."""
    tokens = torch.randint(1, 512, (6, 40), generator=torch.Generator().manual_seed(0))
    tokens[:, 0] = 0
    tokens[:, 20:39] = tokens[:, 1:20]

    def make(model: Any) -> Any:
        scan = mw.HeadScan(model, sequences=tokens, batch_size=2, autostart=False)
        if model is models[0]:
            host_reads.start()
        scan.start()
        scan.wait(60)
        if model is models[0]:
            host_reads.stop()
            n_scores = len(scan.score_names) * scan.n_layers * scan.n_heads
            assert host_reads.total <= n_scores + SLACK, host_reads.reads
        assert scan.status == "done", scan.error
        return scan

    def check(scan: Any) -> None:
        assert all(on_device(t) for t in scan._running.scores().values())

    compare_replies(make, [("scores", {})], models, host_reads, capture, ask, check)


def test_activation_view(models: tuple[Any, Any], host_reads: HostReads, capture: Any, ask: Any) -> None:
    prompts = [PROMPT, "x = 1\ny = 2\nx = 1\n"]

    def check(view: Any) -> None:
        assert all(on_device(a) for a in view.activations)

    requests = [
        ("values", {"layer": 1, "neuron": 5}),
        ("values", {"layer": 0, "neuron": 17}),
        ("top", {"prompt_index": 0, "position": 3, "layer": 1, "k": 10}),
    ]
    compare_replies(
        lambda m: mw.ActivationView(m, prompts, hook="resid_post"), requests, models, host_reads, capture, ask, check
    )


def test_logit_lens(models: tuple[Any, Any], host_reads: HostReads, capture: Any, ask: Any) -> None:
    def check(lens: Any) -> None:
        assert on_device(lens._lens.resid)

    # A new target recomputes the lens on the device; only the ids of its top tokens come to the host, for the
    # labels the next lens reply sends (on the CPU read twice: as ids, then by the tokenizer's to_string).
    reference = mw.LogitLens(models[1], PROMPT, target=5, k=5)
    allow = 2 * len(reference._lens.vocab_ids) + len(reference.tokens)
    reference.close()
    requests = [("lens", {}), ("target", {"target": 5}, allow), ("lens", {})]
    compare_replies(lambda m: mw.LogitLens(m, PROMPT, k=5), requests, models, host_reads, capture, ask, check)


def test_patching(models: tuple[Any, Any], host_reads: HostReads, capture: Any, ask: Any) -> None:
    """Exact and attribution patching run on the device; only the reduced grids and per-prompt values come back."""
    gen = torch.Generator().manual_seed(0)
    clean = torch.randint(1, 512, (4, 8), generator=gen)
    clean[:, 0] = 0
    clean[:, 5:8] = clean[:, 1:4]
    corrupted = clean.clone()
    corrupted[:, 1:3] = torch.randint(1, 512, (4, 2), generator=gen)
    answers, wrong = clean[:, 4], torch.randint(1, 512, (4,), generator=gen)
    components = ["resid_pre", "head_out"]

    def make(model: Any) -> Any:
        patch = mw.Patching(
            model, clean, corrupted, mw.logit_diff(answers, wrong), components=components, autostart=False
        )
        if model is models[0]:
            host_reads.start()
        patch.start()
        patch.wait(60)
        if model is models[0]:
            host_reads.stop()
            kept = sum(t.numel() for t in patch.results.values())  # the grids
            # the exact grids, each cell's per-prompt values, and the attribution estimates
            assert host_reads.total <= 2 * kept * (len(clean) + 2) + SLACK, host_reads.reads
        assert patch.status == "done", patch.error
        return patch

    requests = [
        ("results", {}),
        ("per_prompt", {"component": "resid_pre", "layer": 1, "head": None, "position": 2}),
        ("per_prompt", {"component": "head_out", "layer": 0, "head": 1, "position": None}),
    ]
    compare_replies(make, requests, models, host_reads, capture, ask)


def test_top_examples(models: tuple[Any, Any], host_reads: HostReads, capture: Any, ask: Any) -> None:
    """The running top-k is kept on the device; a request reads only its neuron's k examples."""
    gen = torch.Generator().manual_seed(1)
    corpus = torch.randint(1, 512, (8, 24), generator=gen)
    corpus[:, 0] = 0
    neurons = list(range(16))

    def make(model: Any) -> Any:
        ex = mw.TopExamples(model, corpus, hook=HOOK, neurons=neurons, k=4, batch_size=4, context=5, after=2)
        ex.wait(60)
        assert ex.status == "done", ex.error
        return ex

    def check(ex: Any) -> None:
        assert all(on_device(t) for t in ex._topk.snapshot())

    requests = [("overview", {}), ("examples", {"neuron": 3}), ("examples", {"neuron": 12})]
    compare_replies(make, requests, models, host_reads, capture, ask, check)
