"""Reliability: closed widgets are freed, interpreter exit with background work exits 0, the user's
own hooks and calls never mix with a view's or a scan's, and analysis never sees dropout."""

from __future__ import annotations

import gc
import os
import subprocess
import sys
import textwrap
import threading
import weakref
from collections.abc import Callable
from typing import Any

import ipywidgets
import pytest
import torch

import mi_widgets as mw
from mi_widgets.capture import ModelAdapter
from mi_widgets.widgets.head_scan import HeadScan

from .conftest import PROMPT, ROOT


@pytest.fixture(scope="module")
def induction() -> Any:
    return mw.zoo.load("induction-2l")


@pytest.fixture(scope="module")
def code() -> Any:
    return mw.zoo.load("code-2l")


def _registered() -> set[str]:
    return set(ipywidgets.Widget.widgets) if hasattr(ipywidgets.Widget, "widgets") else set()


# ----- 1. closed widgets are freed ------------------------------------------------------------


def _makers(induction: Any, code: Any) -> dict[str, Callable[[], Any]]:
    texts = mw.zoo.stdlib_texts("heldout")[:2]
    clean = torch.tensor([[0, 5, 7, 9, 5, 7], [0, 6, 8, 10, 6, 8]])
    corrupted = torch.tensor([[0, 11, 7, 9, 5, 7], [0, 12, 8, 10, 6, 8]])
    metric = mw.logit_diff([9, 10], [11, 12])
    sae = mw.SparseAutoencoder(d_in=int(code.cfg.d_model), d_sae=32, k=4, hook_name="blocks.0.hook_resid_post")
    return {
        "AttentionView": lambda: mw.AttentionView(induction, PROMPT),
        "attention_heads": lambda: mw.attention_heads(torch.rand(4, 6, 6).tril(), list("abcdef")),
        "HeadScan": lambda: HeadScan(induction, n_batches=2, batch_size=4),
        "CompositionView": lambda: mw.CompositionView(induction),
        "ActivationView": lambda: mw.ActivationView(code, ["def f(x):\n    return x"], hook="mlp.post"),
        "LogitLens": lambda: mw.LogitLens(code, "def f(x):\n    return x"),
        "LogitAttribution": lambda: mw.LogitAttribution(code, "def f(x):\n    return x", answer=0, wrong=1),
        "TopExamples": lambda: mw.TopExamples(code, texts, hook="blocks.1.mlp.hook_post", neurons=range(4)),
        "SuperpositionToy": lambda: mw.SuperpositionToy(n_features=5, n_hidden=2, steps=50),
        "SAETrainer": lambda: mw.SAETrainer(activations=torch.randn(256, 8), d_sae=16, k=2, steps=20, batch_size=32),
        "FeatureView": lambda: mw.FeatureView(sae, code, ["def f(x):\n    return x"], corpus=texts),
        "Patching": lambda: mw.Patching(induction, clean, corrupted, metric, components=["head_out"]),
        "PathPatching": lambda: mw.PathPatching(induction, clean=clean, corrupted=corrupted, metric=metric),
        "Grokking": lambda: mw.Grokking(p=13, d_model=16, n_heads=2, d_mlp=16, steps=50, device="cpu", autostart=True),
        "FourierView": lambda: mw.FourierView(_small_modadd()),
        # the array paths (mi_widgets.circuitsvis): no model
        "ActivationView.from_activations": lambda: mw.ActivationView.from_activations(
            list("abc"), torch.randn(3, 2, 4)
        ),
        "TopExamples.from_samples": lambda: mw.TopExamples.from_samples(
            [[["a", "b"]], [["c"]]], [[[1.0, 2.0]], [[3.0]]]
        ),
        "LogitLens.from_log_probs": lambda: mw.LogitLens.from_log_probs(
            torch.tensor([0, 1, 2]), torch.randn(3, 5).log_softmax(-1), str
        ),
    }


def _small_modadd() -> Any:
    from mi_widgets.zoo import modadd

    config = modadd.ModAddConfig(p=13, d_model=16, n_heads=2, d_head=8, d_mlp=16)
    return modadd.to_bridge(modadd.init_params(config), config)


WIDGETS = [
    "AttentionView",
    "attention_heads",
    "HeadScan",
    "CompositionView",
    "ActivationView",
    "LogitLens",
    "LogitAttribution",
    "TopExamples",
    "SuperpositionToy",
    "SAETrainer",
    "FeatureView",
    "Patching",
    "PathPatching",
    "Grokking",
    "FourierView",
    "ActivationView.from_activations",
    "TopExamples.from_samples",
    "LogitLens.from_log_probs",
]


@pytest.mark.parametrize("name", WIDGETS)
def test_closed_widget_is_freed(name: str, induction: Any, code: Any) -> None:
    make = _makers(induction, code)[name]
    make().close()  # warm-up: module-level caches (the model's analysis twin) are made once, not per widget
    gc.collect()
    before = _registered()
    widgets = []
    for _ in range(3):
        widget = make()
        widget._repr_mimebundle_()  # as a notebook would display it
        widgets.append(weakref.ref(widget))
        tensors = [weakref.ref(t) for t in vars(widget).values() if isinstance(t, torch.Tensor)]
        snapshot = getattr(widget, "_snapshot", None)
        if isinstance(widget, mw.AttentionView):  # its patterns must go with it
            tensors += [weakref.ref(t) for t in snapshot.layers]
        del snapshot
        widget.close()
        if hasattr(widget, "wait"):
            widget.wait(60)  # a closed scan or training stops at its next step
        del widget
    gc.collect()
    alive = [w for w in widgets if w() is not None]
    assert not alive, f"{len(alive)} of 3 closed {name} widgets are still alive: {gc.get_referrers(alive[0]())!r:.500}"
    assert all(t() is None for t in tensors), "the closed widget's tensors are still alive"
    leftover = _registered() - before
    assert not leftover, f"closing {name} left {len(leftover)} child widgets registered (e.g. its layout)"


def test_closed_running_scan_frees_its_thread(induction: Any) -> None:
    scan = HeadScan(induction, n_batches=200, batch_size=4)
    thread = scan._thread
    assert thread is not None and scan.running
    ref = weakref.ref(scan)
    scan.close()
    thread.join(60)
    assert not thread.is_alive() and scan.status == "stopped"
    del scan
    gc.collect()
    assert ref() is None


# ----- 2. interpreter exit while background work runs -------------------------------------------

EXIT_SCRIPT = """
import sys, time
import torch
import mi_widgets as mw
how = sys.argv[1]
toy = mw.SuperpositionToy(n_features=20, n_hidden=5, steps=10**7)   # trains on a worker thread
grok = mw.Grokking(p=13, d_model=16, n_heads=2, d_mlp=16, steps=10**7, device="cpu", autostart=True)
model = mw.zoo.load("induction-2l")
scan = mw.HeadScan(model, n_batches=10**5, batch_size=4)
time.sleep(0.5)
assert toy.running and scan.running and grok.running, (toy.status, scan.status, grok.status)
if how == "close":
    toy.close(); scan.close(); grok.close()
print("exiting", flush=True)
"""


@pytest.mark.parametrize("how", ["plain", "close"])
def test_interpreter_exit_with_background_work_exits_0(how: str, tmp_path: Any) -> None:
    script = tmp_path / "exit.py"
    script.write_text(textwrap.dedent(EXIT_SCRIPT))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}  # this checkout's package, installed or not
    done = subprocess.run(
        [sys.executable, str(script), how], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, f"exit code {done.returncode}; stderr:\n{done.stderr[-2000:]}"
    assert "exiting" in done.stdout and "terminate called" not in done.stderr


# ----- 3. the user's hooks and calls never mix with a scan's -----------------------------------


def _slow_scan(model: Any) -> HeadScan:
    return HeadScan(model, n_batches=60, batch_size=16, seed=3, autostart=False)


def test_user_calls_during_a_scan_see_only_their_own_batch(induction: Any) -> None:
    alone = _slow_scan(induction)
    alone.start()
    alone.wait(120)
    expected = {k: v.clone() for k, v in alone.scores.items()}
    alone.close()

    scan = _slow_scan(induction)
    tokens = induction.to_tokens("The cat sat on the mat. The cat sat on the mat again.")
    seq = tokens.shape[-1]
    hook = "blocks.0.attn.hook_pattern"
    shapes: list[tuple[int, ...]] = []
    fired: list[int] = []

    def ablate(pattern: torch.Tensor, hook: Any) -> torch.Tensor:  # a user's ablation of head 0
        fired.append(pattern.shape[0])
        pattern[:, 0] = 0.0
        return pattern

    scan.start()
    calls = 0
    while scan.running:
        _, cache = induction.run_with_cache(tokens, names_filter=hook)
        shapes.append(tuple(cache[hook].shape))
        induction.run_with_hooks(tokens, fwd_hooks=[(hook, ablate)])
        calls += 1
    scan.wait(120)
    assert scan.status == "done" and calls >= 3, f"the user's calls must overlap the scan (got {calls})"
    assert set(shapes) == {(1, 4, seq, seq)}, f"the user's cache held other batches: {set(shapes)}"
    assert set(fired) == {1}, "the user's hook fired on the scan's batches"
    for name, scores in scan.scores.items():
        assert torch.equal(scores, expected[name]), f"{name} scores changed under the user's hooks"


def test_user_hooks_left_on_the_model_do_not_reach_views(induction: Any) -> None:
    clean = mw.AttentionView(induction, PROMPT).patterns.clone()
    handle_fired: list[int] = []

    def zero(pattern: torch.Tensor, hook: Any) -> torch.Tensor:
        handle_fired.append(1)
        return torch.zeros_like(pattern)

    induction.add_hook("blocks.1.attn.hook_pattern", zero)
    try:
        view = mw.AttentionView(induction, PROMPT)
        assert torch.equal(view.patterns, clean) and not handle_fired
        induction(induction.to_tokens(PROMPT))
        assert handle_fired, "the user's own forward pass still runs their hook"
    finally:
        induction.reset_hooks()


def test_user_hooks_that_cannot_be_copied_do_not_stop_the_twin(induction: Any) -> None:
    """The twin never copies the user's hooks: one holding a lock (not deep-copyable) is simply left out."""
    from mi_widgets.capture.twin import make_twin

    class Recorder:
        def __init__(self) -> None:
            self.lock = threading.Lock()
            self.seen = 0

        def hook(self, act: torch.Tensor, hook: Any) -> None:
            with self.lock:
                self.seen += 1

    recorder = Recorder()
    induction.add_hook("blocks.0.attn.hook_pattern", recorder.hook)
    try:
        twin = make_twin(induction)
        assert not any(getattr(m, "_forward_hooks", {}) for m in twin.modules())
        assert not any(getattr(m, "fwd_hooks", []) for m in twin.modules())
        twin(induction.to_tokens(PROMPT))
        assert recorder.seen == 0, "the user's hook fired inside the twin"
        induction(induction.to_tokens(PROMPT))
        assert recorder.seen == 1, "the user's own forward pass still runs their hook"
    finally:
        induction.reset_hooks()


# ----- 4. analysis runs in eval mode without changing the user's model ----------------------------


def test_train_mode_model_is_analysed_in_eval_mode_and_left_in_train_mode(gpt2_bridge: Any) -> None:
    assert any(isinstance(m, torch.nn.Dropout) and m.p > 0 for m in gpt2_bridge.modules()), "the test needs dropout"
    gpt2_bridge.eval()
    expected = mw.AttentionView(gpt2_bridge, PROMPT).patterns.clone()
    attribution = mw.LogitAttribution(gpt2_bridge, PROMPT, answer=5, wrong=6)
    expected_heads = attribution.heads.clone()
    gpt2_bridge.train()
    try:
        for _ in range(3):  # dropout would differ on every run
            view = mw.AttentionView(gpt2_bridge, PROMPT)
            torch.testing.assert_close(view.patterns, expected, atol=0, rtol=0)
            torch.testing.assert_close(view.patterns.sum(-1), torch.ones_like(view.patterns[..., 0]))
            attr = mw.LogitAttribution(gpt2_bridge, PROMPT, answer=5, wrong=6)
            torch.testing.assert_close(attr.heads, expected_heads, atol=0, rtol=0)
        assert gpt2_bridge.training and all(m.training for m in gpt2_bridge.modules()), "the user's mode is kept"
    finally:
        gpt2_bridge.eval()


def test_the_twin_keeps_no_attention_patterns_after_a_run(gpt2_bridge: Any) -> None:
    """TransformerLens 4.x's joint-QKV attention bridges keep each forward pass's pattern (``_pattern``); on the
    twin that would hold [batch, heads, seq, seq] per layer until its next run (GBs on long prompts), so a run drops
    them. The user's model is not the twin: what its own calls keep is left to it."""
    adapter = ModelAdapter(gpt2_bridge)
    twin, _ = adapter.runner()
    kept = [m for m in twin.modules() if hasattr(m, "_pattern")]
    assert kept, "this TransformerLens keeps no _pattern: the test checks nothing here"
    mw.ActivationView(gpt2_bridge, PROMPT, "resid_post").close()  # a run to the logits' last hook
    view = mw.LogitLens(gpt2_bridge, PROMPT)  # a run to the logits
    assert all(m._pattern is None for m in kept)
    view.close()
    with torch.no_grad():
        gpt2_bridge(PROMPT)  # the user's own call
    assert any(getattr(m, "_pattern", None) is not None for m in gpt2_bridge.modules()), "the user's model is untouched"


def test_twin_follows_the_model(native_model: Any) -> None:
    adapter = ModelAdapter(native_model)
    twin, lock = adapter.runner()
    assert adapter.runner()[0] is twin, "one twin per model, reused"
    assert all(a is b for a, b in zip(native_model.parameters(), twin.parameters())), "weights are shared, not copied"
    tokens = adapter.to_tokens(PROMPT)
    before = adapter.attention_patterns(tokens)
    w_q = next(p for name, p in native_model.named_parameters() if ".q." in name or name.endswith("W_Q"))  # layer 0's
    with torch.no_grad():
        w_q.mul_(2.0)  # an in-place update is seen at once
    try:
        changed = adapter.attention_patterns(tokens)
        assert not torch.equal(before[0], changed[0])
    finally:
        with torch.no_grad():
            w_q.div_(2.0)
    native_model.register_buffer("extra_buffer_for_test", torch.zeros(1))  # a new tensor: a new twin
    try:
        assert adapter.runner()[0] is not twin and adapter.runner()[1] is lock
    finally:
        del native_model._buffers["extra_buffer_for_test"]
    with lock:  # re-entrant: a forward pass inside the lock on the same thread does not deadlock
        assert len(adapter.attention_patterns(tokens)) == 2


def test_revision_only_grows_and_an_older_snapshot_never_replaces_a_newer_one(induction: Any) -> None:
    """Two runs finishing out of order (a Python ``view.prompt = ...`` beside the view's own run): the one
    computed last stays shown, and ``revision`` never moves back (views drop replies older than they drew)."""
    view = mw.AttentionView(induction, PROMPT)
    older = view._compute("The dog ran. The dog")  # computed first ...
    newer = view._compute("A cat. A cat")  # ... and this one later
    assert view._apply(newer)
    shown = view.revision
    assert not view._apply(older), "an older snapshot replaced a newer one"
    assert view.revision == shown and view.prompt == "A cat. A cat"
    with pytest.raises(ValueError, match="revision must grow"):
        view._bump_revision(shown - 1)
    view.close()
