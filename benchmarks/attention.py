#!/usr/bin/env python
"""Attention benchmark: CircuitsVis ``attention_heads`` vs mi_widgets ``AttentionView``.

Both tools get the same data (12 heads, causal softmax patterns from seeded random scores,
random token strings) and run in ONE headless Chromium, one browser context per run:

* CircuitsVis: its offline HTML (``RenderedHTML.local_src``, what ``_repr_html_`` returns
  offline: the 1.3 MB JS bundle inlined, the tensor as a JSON list) is written to a file and
  opened with ``file://``.
* AttentionView: a real JupyterLab (``tests/e2e/lab.py``) runs a notebook that builds the data
  and displays ``mw.attention_heads(attention, tokens)``.

Measured per run: bytes sent to the browser before the first painted view, Python time, time
to first painted view, head-switch time (click another head -> repaint) and JS heap after the
first paint (after a forced GC). See benchmarks/README.md.

    python benchmarks/attention.py [--seqs 64,256,512,1024] [--cv-timeout 150] [--repeats 3]
    python benchmarks/attention.py --long [--seqs 1024,2048,4096] [--repeats 3]

``--long``: AttentionView only, at long contexts (where CircuitsVis cannot paint), into its own section of
RESULTS.md (``attention_long``) with the long-context targets at 4,096 tokens; past 512 tokens the view
gets level-of-detail tiles (``tile`` requests) instead of whole heads. It also measures "far" head
switches (5 heads on: heads never shown).
"""

from __future__ import annotations

import argparse
import datetime as dt
import inspect
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks._results import RESULTS_MD, write_section  # noqa: E402
from tests.e2e.lab import JupyterLab, NotebookPage, cell_point, chromium_browser, running_lab, write_notebook  # noqa: E402

OUTPUT = REPO / "benchmarks" / "output"
VIEW = "[data-testid=attention-view]"
N_HEADS = 12
SEED = 0
VIEWPORT = {"width": 1400, "height": 1000}
N_SWITCHES = 10
N_FAR_SWITCHES = 4  # --long, first: 5 heads on from head 0 (5, 10, 3, 8): heads never shown
EXACT_MAX_SEQ = 512  # mi_widgets.widgets.attention.EXACT_MAX_SEQ: longer prompts go as tiles
TILE = 512
MB = 1024 * 1024
CV_SLOW_RUN_S = 60.0  # a CircuitsVis run slower than this is not repeated

# Targets for AttentionView at seq 1024.
TARGET_FIRST_PAINT_S = 1.0
TARGET_SWITCH_MS = 100.0
TARGET_BYTES = 2_000_000
TARGET_HEAP_MB = 150.0


def make_data(seq: int, n_heads: int = 12, seed: int = 0) -> tuple[Any, list[str]]:
    """Causal softmax patterns ``[n_heads, seq, seq]`` (float32) from random scores, and random tokens."""
    import numpy as np

    rng = np.random.default_rng(seed)
    scores = rng.standard_normal((n_heads, seq, seq), dtype=np.float32) * 3.0
    scores[:, np.triu(np.ones((seq, seq), dtype=bool), 1)] = -np.inf
    scores -= scores.max(axis=-1, keepdims=True)
    attention = np.exp(scores)
    attention /= attention.sum(axis=-1, keepdims=True)
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    tokens = [(" " if rng.random() < 0.5 else "") + "".join(rng.choice(letters, n)) for n in rng.integers(1, 8, seq)]
    return attention, tokens


# ----- results ---------------------------------------------------------------------------------


@dataclass
class RunResult:
    """One tool, one seq, one run."""

    tool: str
    seq: int
    run: int
    bytes_sent: int | None = None  # bytes the browser received before the first painted view
    python_s: float | None = None  # Python time to build the HTML / the widget
    first_paint_s: float | None = None  # start (navigation / cell execution) -> painted + 2 rAFs
    switch_ms: list[float] = field(default_factory=list)  # click another head -> repainted + 2 rAFs
    switch_hook_ms: list[float] = field(default_factory=list)  # AttentionView: click -> data-painted set
    switch_reply_ms: list[float] = field(default_factory=list)  # AttentionView: click -> pattern message received
    switch_far_ms: list[float] = field(default_factory=list)  # --long: switches 5 heads on (never shown)
    bytes_after: int | None = None  # --long: bytes received from first paint to the end of the switches
    first_hook_s: float | None = None  # AttentionView: cell start -> data-painted set
    first_reply_s: float | None = None  # AttentionView: cell start -> first pattern message received
    heap_mb: float | None = None  # JSHeapUsedSize of the page after the first paint, after GC
    heap_base_mb: float | None = None  # same, before displaying the view (JupyterLab itself)
    failure: str | None = None  # "did not paint within N s", "renderer crashed", ...
    notes: list[str] = field(default_factory=list)


@dataclass
class Summary:
    """Medians over the runs of one tool at one seq."""

    tool: str
    seq: int
    runs: int
    bytes_sent: float | None
    python_s: float | None
    first_paint_s: float | None
    switch_ms: float | None
    switch_hook_ms: float | None  # AttentionView: click -> data-painted, before the 2 rAFs
    switch_reply_ms: float | None  # AttentionView: click -> pattern message received
    switch_far_ms: float | None
    first_hook_s: float | None
    first_reply_s: float | None
    n_switches: int
    heap_mb: float | None
    heap_view_mb: float | None  # heap_mb minus the page's heap before the view (AttentionView only)
    failure: str | None

    @classmethod
    def of(cls, runs: list[RunResult]) -> Summary:
        ok = [r for r in runs if r.failure is None]

        def med(values: list[float | None]) -> float | None:
            present = [v for v in values if v is not None]
            return statistics.median(present) if present else None

        switches = [s for r in ok for s in r.switch_ms]
        return cls(
            tool=runs[0].tool,
            seq=runs[0].seq,
            runs=len(runs),
            bytes_sent=med([r.bytes_sent for r in runs]),
            python_s=med([r.python_s for r in runs]),
            first_paint_s=med([r.first_paint_s for r in ok]),
            switch_ms=statistics.median(switches) if switches else None,
            switch_hook_ms=med([s for r in ok for s in r.switch_hook_ms]),
            switch_reply_ms=med([s for r in ok for s in r.switch_reply_ms]),
            switch_far_ms=med([s for r in ok for s in r.switch_far_ms]),
            first_hook_s=med([r.first_hook_s for r in ok]),
            first_reply_s=med([r.first_reply_s for r in ok]),
            n_switches=len(switches),
            heap_mb=med([r.heap_mb for r in ok]),
            heap_view_mb=med(
                [r.heap_mb - r.heap_base_mb for r in ok if r.heap_mb is not None and r.heap_base_mb is not None]
            ),
            failure=None if ok else runs[0].failure,
        )


# ----- browser ---------------------------------------------------------------------------------

# Helpers injected into every page: wait a number of frames, poll a condition once per frame.
PAGE_HELPERS = """
window.__bench = {
  frames(n) {
    return new Promise((resolve) => { const step = (k) => k ? requestAnimationFrame(() => step(k - 1)) : resolve(); step(n); });
  },
  until(cond, timeoutMs) {
    return new Promise((resolve, reject) => {
      const start = performance.now();
      const tick = () => {
        let value;
        try { value = cond(); } catch (e) { reject(e); return; }
        if (value) resolve(value);
        else if (performance.now() - start > timeoutMs) reject(new Error("timeout after " + timeoutMs + " ms"));
        else requestAnimationFrame(tick);
      };
      tick();
    });
  },
};
"""


def new_page(browser: Any) -> tuple[Any, Any, Any]:
    """A fresh context (own renderer, own heap), its page and a CDP session on it."""
    context = browser.new_context(viewport=VIEWPORT)
    context.add_init_script(PAGE_HELPERS)
    page = context.new_page()
    cdp = context.new_cdp_session(page)
    cdp.send("Performance.enable")
    return context, page, cdp


def js_heap_mb(cdp: Any) -> float:
    """JS heap in use by the page after a forced GC, ArrayBuffer backing stores included, in MiB.

    ``JSHeapUsedSize`` alone leaves out typed arrays (a decoded 1024 x 1024 Float32Array is 4 MiB
    outside the V8 heap), so this adds ``backingStorageSize`` from ``Runtime.getHeapUsage``.
    """
    cdp.send("HeapProfiler.collectGarbage")
    usage = cdp.send("Runtime.getHeapUsage")
    return (usage["usedSize"] + usage.get("backingStorageSize", 0)) / MB


def browser_facts(browser: Any) -> dict[str, str]:
    """Chromium version and the WebGL renderer it reports (software rendering here)."""
    context, page, _ = new_page(browser)
    try:
        page.set_content("<canvas></canvas>")
        renderer = page.evaluate(
            """() => { const gl = document.querySelector('canvas').getContext('webgl');
                 if (!gl) return 'no WebGL';
                 const ext = gl.getExtension('WEBGL_debug_renderer_info');
                 return ext ? gl.getParameter(ext.UNMASKED_RENDERER_WEBGL) : gl.getParameter(gl.RENDERER); }"""
        )
        return {"chromium": browser.version, "webgl": str(renderer)}
    finally:
        context.close()


def close_target(browser: Any, target_id: str) -> None:
    """Close a page from the browser process: works even while its renderer is busy or hung."""
    try:
        session = browser.new_browser_cdp_session()
        session.send("Target.closeTarget", {"targetId": target_id})
        session.detach()
    except Exception:  # already gone
        pass


def close_quietly(context: Any) -> None:
    try:
        context.close()
    except Exception:  # a crashed or hung renderer: the browser still drops the context
        pass


# ----- CircuitsVis ---------------------------------------------------------------------------------

# The zoomed head is drawn by Chart.js on a canvas under "<h3>Head k Zoomed</h3>". A view counts as
# painted for head k when that heading names k, all 12 thumbnails exist, the zoomed canvas has ink
# and (after a switch) differs from the previous head's picture.
CV_JS = """
window.__cv = {
  zoomed() {
    const h3 = [...document.querySelectorAll('h3')].find((h) => h.textContent.endsWith(' Zoomed'));
    return h3 ? { head: h3.textContent.replace(' Zoomed', ''), canvas: h3.nextElementSibling?.querySelector('canvas') } : null;
  },
  // A 64 x 64 downscaled copy: ~0.1 ms a frame instead of ~6 ms for reading the full canvas.
  fingerprint(canvas) {
    if (!canvas || !canvas.width || !canvas.height) return null;
    const small = (window.__cvSmall ??= document.createElement('canvas'));
    small.width = small.height = 64;
    const ctx = small.getContext('2d', { willReadFrequently: true });
    ctx.drawImage(canvas, 0, 0, 64, 64);
    const data = ctx.getImageData(0, 0, 64, 64).data;
    let hash = 0, ink = 0;
    for (let i = 0; i < data.length; i += 4) {
      hash = (hash * 31 + data[i] + 3 * data[i + 1] + 7 * data[i + 2] + 11 * data[i + 3]) | 0;
      if (data[i + 3] > 0 && (data[i] < 250 || data[i + 1] < 250 || data[i + 2] < 250)) ink++;
    }
    return { hash, ink };
  },
  painted(head, previousHash) {
    const z = window.__cv.zoomed();
    if (!z || z.head !== 'Head ' + head || !z.canvas) return null;
    const thumbs = [...document.querySelectorAll('h4')].filter((h) => /^Head \\d+$/.test(h.textContent));
    if (thumbs.length < %(heads)d) return null;
    const last = thumbs[thumbs.length - 1].parentElement.querySelector('canvas');
    const f = window.__cv.fingerprint(z.canvas);
    if (!f || f.ink === 0 || f.hash === previousHash || !(window.__cv.fingerprint(last)?.ink > 0)) return null;
    return f;
  },
  thumbnail(head) {
    const h4 = [...document.querySelectorAll('h4')].find((h) => h.textContent === 'Head ' + head);
    return h4.parentElement.querySelector('canvas');
  },
};
// First paint, timed from navigation start (performance.now() origin) by polling once per frame.
window.__cvFirst = (async () => {
  const f = await window.__bench.until(() => window.__cv.painted(0, null), 1e9);
  const painted = performance.now();
  await window.__bench.frames(2);
  return { ms: performance.now(), painted_ms: painted, hash: f.hash };
})();
// Reported through the console: Python waits for it without needing the (busy) renderer.
window.__cvFirst.then((r) => console.debug('__cv_first ' + JSON.stringify(r)));
""" % {"heads": N_HEADS}

CV_SWITCH_JS = """
async ([head, previousHash, timeoutMs]) => {
  const t0 = performance.now();
  window.__cv.thumbnail(head).click();  // bubbles to the thumbnail's React onClick (locks that head)
  const f = await window.__bench.until(() => window.__cv.painted(head, previousHash), timeoutMs);
  await window.__bench.frames(2);
  return { ms: performance.now() - t0, hash: f.hash };
}
"""


def cv_html(seq: int) -> tuple[str, float]:
    """CircuitsVis's offline HTML for the benchmark data, and the Python time to build it."""
    from circuitsvis.attention import attention_heads

    attention, tokens = make_data(seq, N_HEADS, SEED)
    start = time.perf_counter()
    rendered = attention_heads(attention, tokens)
    html = rendered.local_src  # what _repr_html_ returns offline: the JS bundle inlined
    python_s = time.perf_counter() - start
    if "unpkg.com" in html or 'from "http' in html or "CircuitsVis.render(" not in html:
        raise RuntimeError("CircuitsVis offline HTML does not inline its bundle")
    return "<!doctype html><html><head><meta charset='utf-8'></head><body>" + html + "</body></html>", python_s


def run_circuitsvis(browser: Any, seq: int, run: int, timeout_s: float) -> RunResult:
    """One CircuitsVis run: load the HTML file, wait for the painted view, switch heads, read the heap."""
    result = RunResult("CircuitsVis", seq, run)
    html, result.python_s = cv_html(seq)
    path = OUTPUT / f"circuitsvis_{seq}.html"
    path.write_text(html, encoding="utf-8")
    result.bytes_sent = path.stat().st_size
    del html
    context, page, cdp = new_page(browser)
    context.add_init_script(CV_JS)
    target_id = cdp.send("Target.getTargetInfo")["targetInfo"]["targetId"]
    crashed: list[bool] = []
    first: list[dict[str, Any]] = []
    page.on("crash", lambda _: crashed.append(True))
    page.on("pageerror", lambda e: result.notes.append(f"page error: {str(e)[:200]}"))
    page.on(
        "console",
        lambda m: first.append(json.loads(m.text.split(" ", 1)[1])) if m.text.startswith("__cv_first ") else None,
    )
    started = time.monotonic()
    try:
        page.goto(path.as_uri(), wait_until="commit", timeout=timeout_s * 1000)
        # Waiting happens here, not in the page: a renderer busy for minutes cannot answer an evaluate
        # (Playwright's own timeouts then fire only when it is free again).
        while not first and not crashed and time.monotonic() - started < timeout_s:
            page.wait_for_timeout(250)
        if crashed:
            result.failure = f"renderer crashed after {time.monotonic() - started:.0f} s"
            return result
        if not first:
            result.failure = f"did not paint within {timeout_s:.0f} s"
            return result
        result.first_paint_s = first[0]["ms"] / 1000
        result.heap_mb = js_heap_mb(cdp)
        previous, head = first[0]["hash"], 0
        switch_budget = time.monotonic() + timeout_s / 2
        for k in range(N_SWITCHES):
            head = (head + 1) % N_HEADS
            out = page.evaluate(CV_SWITCH_JS, [head, previous, timeout_s * 1000])
            result.switch_ms.append(out["ms"])
            previous = out["hash"]
            if time.monotonic() > switch_budget and k + 1 < N_SWITCHES:
                result.notes.append(f"{k + 1} head switches (time budget {timeout_s / 2:.0f} s)")
                break
    except Exception as exc:  # noqa: BLE001 - a crash or closed page ends the case; report and go on
        if crashed or "crash" in str(exc).lower():
            result.failure = result.failure or f"renderer crashed after {time.monotonic() - started:.0f} s"
        else:
            result.notes.append(f"stopped: {type(exc).__name__}: {str(exc).splitlines()[0][:160]}")
    finally:
        close_target(browser, target_id)
        close_quietly(context)
    return result


# ----- AttentionView -----------------------------------------------------------------------------

# Arrival times of websocket messages the size of one head's pattern (its bytes plus a small JSON
# header), to split the wait into kernel round trip and drawing. One extra 'message' listener per socket; nothing else in JupyterLab changes.
AV_WS_JS = """
(() => {
  const Original = window.WebSocket;
  window.__wsBig = { min: Infinity, max: Infinity, at: [] };
  window.WebSocket = class extends Original {
    constructor(...args) {
      super(...args);
      this.addEventListener('message', (e) => {
        const n = typeof e.data === 'string' ? e.data.length : (e.data.byteLength ?? e.data.size ?? 0);
        if (n >= window.__wsBig.min && n <= window.__wsBig.max) window.__wsBig.at.push(performance.now());
      });
    }
  };
})();
"""

AV_FIRST_JS = """
async ([index, timeoutMs, bigBytes]) => {
  const app = window.jupyterapp;
  const panel = app.shell.currentWidget;
  panel.content.activeCellIndex = index;
  window.__wsBig = { min: bigBytes, max: bigBytes + 4096, at: [] };
  const t0 = performance.now();
  const painted = new Promise((resolve, reject) => {
    const check = () => {
      for (const v of document.querySelectorAll('%(view)s')) {
        const d = v.dataset;
        if (d.painted && d.painted === `${d.revision}:${d.layer}:${d.head}`) return v;
      }
      return null;
    };
    const done = (v) => { observer.disconnect(); clearTimeout(timer); resolve({ at: performance.now(), painted: v.dataset.painted }); };
    const observer = new MutationObserver(() => { const v = check(); if (v) done(v); });
    observer.observe(document.body, { subtree: true, childList: true, attributes: true, attributeFilter: ['data-painted'] });
    const timer = setTimeout(() => { observer.disconnect(); reject(new Error('no data-painted within ' + timeoutMs + ' ms')); }, timeoutMs);
  });
  app.commands.execute('notebook:run-cell');
  const p = await painted;
  await window.__bench.frames(2);
  const reply = window.__wsBig.at[0];
  return { ms: performance.now() - t0, painted_ms: p.at - t0, painted: p.painted, reply_ms: reply === undefined ? null : reply - t0 };
}
""" % {"view": VIEW}

# Armed before the click; t0 is the pointerdown's timestamp (same clock as performance.now()).
AV_ARM_SWITCH_JS = """
([layer, head, timeoutMs, bigBytes]) => {
  const view = document.querySelector('%(view)s');
  window.__wsBig = { min: bigBytes, max: bigBytes + 4096, at: [] };
  let t0 = null;
  window.addEventListener('pointerdown', (e) => { if (t0 === null) t0 = e.timeStamp; }, { capture: true, once: true });
  window.__avSwitch = new Promise((resolve, reject) => {
    const check = () => view.dataset.painted === `${view.dataset.revision}:${layer}:${head}`;
    const observer = new MutationObserver(async () => {
      if (!check()) return;
      observer.disconnect(); clearTimeout(timer);
      const at = performance.now();
      await window.__bench.frames(2);
      const reply = window.__wsBig.at[0];
      resolve({ ms: performance.now() - t0, painted_ms: at - t0, reply_ms: reply === undefined ? null : reply - t0 });
    });
    observer.observe(view, { attributes: true, attributeFilter: ['data-painted'] });
    const timer = setTimeout(() => { observer.disconnect(); reject(new Error('head ' + layer + ':' + head + ' not painted within ' + timeoutMs + ' ms')); }, timeoutMs);
  });
}
""" % {"view": VIEW}


def av_notebook(root: Path, seq: int, run: int) -> str:
    """Write the AttentionView notebook: cell 0 builds the data, cell 1 displays the view."""
    name = f"attention_{seq}_{run}.ipynb"
    setup = (
        "import time\nfrom typing import Any\n\nimport mi_widgets as mw\n\n"
        + inspect.getsource(make_data)
        + f"\nattention, tokens = make_data({seq}, {N_HEADS}, {SEED})\n"
    )
    display = (
        "_t = time.perf_counter()\n"
        "view = mw.attention_heads(attention, tokens)\n"
        "build_s = time.perf_counter() - _t\n"
        "view"
    )
    write_notebook(root / name, [setup, display])
    return name


def pattern_bytes(seq: int) -> int:
    """Size of the message that paints a head: up to EXACT_MAX_SEQ its seq x seq float16 pattern, beyond it
    its overview tile (the causal lower triangle of the one tile that holds the head, uint8)."""
    if seq <= EXACT_MAX_SEQ:
        return seq * seq * 2
    n = seq
    while n > TILE:
        n = -(-n // 2)
    return n * (n + 1) // 2


def run_attention_view(browser: Any, lab: JupyterLab, seq: int, run: int, far: bool = False) -> RunResult:
    """One AttentionView run in JupyterLab: display the view, count websocket bytes, switch heads."""
    result = RunResult("AttentionView", seq, run)
    name = av_notebook(lab.root_dir, seq, run)
    context, page, cdp = new_page(browser)
    context.add_init_script(AV_WS_JS)
    page.on("pageerror", lambda e: result.notes.append(f"page error: {str(e)[:200]}"))
    counting = {"on": False, "bytes": 0, "frames": 0}

    def on_frame(payload: str | bytes) -> None:
        if counting["on"]:
            counting["bytes"] += len(payload.encode() if isinstance(payload, str) else payload)
            counting["frames"] += 1

    page.on("websocket", lambda ws: ws.on("framereceived", on_frame))
    nb = NotebookPage(page)
    try:
        nb.open(lab, name, timeout_ms=120_000)
        page.evaluate("() => window.jupyterapp.commands.execute('notebook:run-cell')")  # cell 0: the data
        page.wait_for_function(
            "() => window.jupyterapp.shell.currentWidget.content.widgets[0].model.executionCount !== null",
            timeout=120_000,
        )
        nb.wait_kernel_idle(120_000)
        error = page.evaluate(
            "() => window.jupyterapp.shell.currentWidget.content.widgets[0].outputArea.node.querySelector('.jp-RenderedText[data-mime-type*=error]')?.innerText"
        )
        if error:
            raise RuntimeError(f"data cell failed: {error[-300:]}")
        result.heap_base_mb = js_heap_mb(cdp)
        counting["on"] = True
        first = page.evaluate(AV_FIRST_JS, [1, 120_000, pattern_bytes(seq)])
        counting["on"] = False
        result.first_paint_s = first["ms"] / 1000
        result.first_hook_s = first["painted_ms"] / 1000
        result.first_reply_s = None if first["reply_ms"] is None else first["reply_ms"] / 1000
        result.bytes_sent = counting["bytes"]
        result.notes.append(f"{counting['frames']} websocket frames before first paint")
        result.heap_mb = js_heap_mb(cdp)
        nb.wait_kernel_idle(60_000)
        result.python_s = float(nb.python_value("build_s"))
        layer, head = (int(x) for x in first["painted"].split(":")[1:])
        counting.update(on=True, bytes=0)
        n_far = N_FAR_SWITCHES if far else 0
        for k in range(n_far + N_SWITCHES):
            step = 5 if k < n_far else 1
            head = (head + step) % N_HEADS
            x, y = cell_point(page, f"{VIEW} [data-testid=head-grid]", layer, head)
            page.evaluate(AV_ARM_SWITCH_JS, [layer, head, 30_000, pattern_bytes(seq)])
            page.mouse.click(x, y)
            timing = page.evaluate("() => window.__avSwitch")
            if k < n_far:
                result.switch_far_ms.append(timing["ms"])
                continue
            result.switch_ms.append(timing["ms"])
            result.switch_hook_ms.append(timing["painted_ms"])
            if timing["reply_ms"] is not None:
                result.switch_reply_ms.append(timing["reply_ms"])
        counting["on"] = False
        result.bytes_after = counting["bytes"]
    except Exception as exc:  # noqa: BLE001 - report and go on with the next case
        result.failure = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
    finally:
        try:
            page.evaluate("() => window.jupyterapp.shell.currentWidget.sessionContext.shutdown()")
        except Exception:
            pass
        close_quietly(context)
    return result


# ----- report ------------------------------------------------------------------------------------


def fmt_bytes(n: float | None) -> str:
    if n is None:
        return "-"
    return f"{n / 1e6:.2f} MB" if n >= 1e6 else f"{n / 1e3:.0f} kB"


def fmt_s(s: float | None) -> str:
    if s is None:
        return "-"
    return f"{s * 1000:.0f} ms" if s < 1 else f"{s:.1f} s"


def fmt_ms(ms: float | None) -> str:
    return "-" if ms is None else fmt_s(ms / 1000)


def fmt_mb(mb: float | None) -> str:
    return "-" if mb is None else f"{mb:.0f} MB" if mb >= 10 else f"{mb:.1f} MB"


def ratio(cv: float | None, av: float | None) -> str:
    if cv is None or av is None or av <= 0:
        return "-"
    r = cv / av
    return f"{r:,.0f}x" if r >= 10 else f"{r:.1f}x"


def results_table(summaries: list[Summary]) -> str:
    rows = [
        "| tool | seq | runs | bytes sent before first paint | Python time | first painted view | head switch (median, n) | JS heap after first paint | of which the view |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for s in summaries:
        paint = s.failure if s.failure else fmt_s(s.first_paint_s)
        switch = f"{fmt_ms(s.switch_ms)} (n={s.n_switches})" if s.n_switches else "-"
        view_heap = fmt_mb(s.heap_view_mb) if s.tool == "AttentionView" else "all of it"
        rows.append(
            f"| {s.tool} | {s.seq} | {s.runs} | {fmt_bytes(s.bytes_sent)} | {fmt_s(s.python_s)} | {paint} | {switch} | {fmt_mb(s.heap_mb)} | {view_heap if s.heap_mb is not None else '-'} |"
        )
    return "\n".join(rows)


def ratio_table(summaries: list[Summary], seqs: list[int], cv_timeout_s: float) -> str:
    by = {(s.tool, s.seq): s for s in summaries}
    rows = [
        "| seq | bytes sent: CV / AV | first paint: CV / AV | head switch: CV / AV | JS heap: CV / AV (page) | JS heap: CV / AV (view only) |",
        "|---|---|---|---|---|---|",
    ]
    for seq in seqs:
        cv, av = by.get(("CircuitsVis", seq)), by.get(("AttentionView", seq))
        if cv is None or av is None:
            continue
        paint = ratio(cv.first_paint_s, av.first_paint_s)
        if cv.failure and av.first_paint_s:
            paint = f"> {ratio(cv_timeout_s, av.first_paint_s)} (CV {cv.failure})"
        rows.append(
            f"| {seq} | {ratio(cv.bytes_sent, av.bytes_sent)} | {paint} | {ratio(cv.switch_ms, av.switch_ms)} "
            f"| {ratio(cv.heap_mb, av.heap_mb)} | {ratio(cv.heap_mb, av.heap_view_mb)} |"
        )
    return "\n".join(rows)


def detail_table(summaries: list[Summary]) -> str:
    """Where AttentionView's time goes: pattern message received -> data-painted -> frame presented."""
    rows = [
        "| seq | first view: pattern received / `data-painted` / presented | head switch: pattern received / `data-painted` / presented | Python build |",
        "|---|---|---|---|",
    ]
    for s in summaries:
        if s.tool == "AttentionView":
            rows.append(
                f"| {s.seq} | {fmt_s(s.first_reply_s)} / {fmt_s(s.first_hook_s)} / {fmt_s(s.first_paint_s)} "
                f"| {fmt_ms(s.switch_reply_ms)} / {fmt_ms(s.switch_hook_ms)} / {fmt_ms(s.switch_ms)} | {fmt_s(s.python_s)} |"
            )
    return "\n".join(rows)


def target_gaps(av: Summary | None) -> str:
    """Plain-language explanation of each target AttentionView misses at seq 1024, from the numbers."""
    if av is None:
        return ""
    lines = []
    if av.bytes_sent is not None and av.bytes_sent >= TARGET_BYTES:
        pattern = pattern_bytes(av.seq)
        lines.append(
            f"- **Bytes**: the first head's pattern alone is {av.seq} x {av.seq} float16 = {pattern:,} bytes, already over "
            f"2,000,000; the other {av.bytes_sent - pattern:,.0f} bytes are the widget's `_esm` bundle and state, the "
            "thumbnails and Jupyter's own messages. Meeting the target needs a smaller first payload, e.g. only the "
            "causal lower triangle (halves it), 8-bit values (halves it), or a screen-sized first image with full "
            "precision fetched after the first paint."
        )
    if av.switch_ms is not None and av.switch_ms >= TARGET_SWITCH_MS:
        parts = []
        if av.switch_reply_ms is not None:
            parts.append(
                f"{av.switch_reply_ms:.0f} ms until the {pattern_bytes(av.seq) / MB:.0f} MiB pattern message arrives "
                "(click, comm message to the kernel, kernel reply through the Jupyter server)"
            )
        if av.switch_hook_ms is not None:
            parts.append(
                f"{av.switch_hook_ms - (av.switch_reply_ms or 0):.0f} ms to decode and colour it until `data-painted`"
            )
            parts.append(
                f"{av.switch_ms - av.switch_hook_ms:.0f} ms until the frame showing it is presented (two rAFs, "
                "software compositing)"
            )
        lines.append(
            f"- **Head switch**: median {av.switch_ms:.0f} ms for heads not shown before: " + "; ".join(parts) + ". "
            "Heads already shown come from the view's cache without a round trip (not measured here). Prefetching "
            "neighbouring heads after the first paint, or a smaller pattern payload, would cut the round trip; the "
            "presentation part grows with seq (compare the detail table), so it is work done per frame after the hook."
        )
    if not lines:
        lines.append("- All targets met in this run.")
    return "\n".join(lines)


def targets_table(av: Summary | None) -> str:
    if av is None:
        return "_seq 1024 was not part of this run._"

    def verdict(value: float | None, limit: float) -> str:
        return "not measured" if value is None else ("**met**" if value < limit else "**not met**")

    return "\n".join(
        [
            "| target at seq 1024 | AttentionView | verdict |",
            "|---|---|---|",
            f"| first painted view < 1 s | {fmt_s(av.first_paint_s)} | {verdict(av.first_paint_s, TARGET_FIRST_PAINT_S)} |",
            f"| head switch < 100 ms (median) | {fmt_ms(av.switch_ms)} | {verdict(av.switch_ms, TARGET_SWITCH_MS)} |",
            f"| < 2 MB sent before first paint | {fmt_bytes(av.bytes_sent)} | {verdict(av.bytes_sent, TARGET_BYTES)} |",
            f"| JS heap < 150 MB | {fmt_mb(av.heap_mb)} page ({fmt_mb(av.heap_view_mb)} for the view) | {verdict(av.heap_mb, TARGET_HEAP_MB)} |",
        ]
    )


def write_results(
    command: str, facts: dict[str, str], summaries: list[Summary], runs: list[RunResult], seqs: list[int]
) -> str:
    """Write the attention section of benchmarks/RESULTS.md and return the main table."""
    table = results_table(summaries)
    cv_timeout_s = float(facts.get("cv_timeout", "150"))
    av1024 = next((s for s in summaries if s.tool == "AttentionView" and s.seq == 1024), None)
    notes = [f"- {r.tool} seq {r.seq} run {r.run}: {'; '.join(dict.fromkeys(r.notes))}" for r in runs if r.notes]
    failures = [f"- {r.tool} seq {r.seq} run {r.run}: {r.failure}" for r in runs if r.failure]
    text = f"""## Attention benchmark results

Command: `{command}`

Date: {facts["date"]}

Machine: {os.cpu_count()} CPU cores ({platform.machine()}, {platform.system()}), headless Chromium {facts["chromium"]}
(`--disable-gpu`; WebGL is software: {facts["webgl"]}), Python {platform.python_version()},
circuitsvis {facts["circuitsvis"]}, JupyterLab {facts["jupyterlab"]}, anywidget {facts["anywidget"]},
AttentionView bundle {facts["bundle"]}.
Load average (1 min) at start / end: {facts["load_start"]} / {facts["load_end"]} (other jobs shared the 2 cores).

Data: {N_HEADS} heads (gpt2-small shape), causal softmax patterns of random scores (seed {SEED}), random token
strings; the same `make_data` code in both tools. Medians over runs (head switch: median over all
switches of all runs). How each number is taken: benchmarks/README.md.

### Results

{table}

### AttentionView vs CircuitsVis (how many times smaller / faster AttentionView is)

{ratio_table(summaries, seqs, cv_timeout_s)}

Reading the numbers: all times are on 2 shared CPU cores with software rendering, so compare
ratios, not absolute times. CircuitsVis is at its worst here: its TF.js backend runs on
SwiftShader WebGL, and other jobs loaded the machine (load average above). Measured earlier on a
quieter machine (/work/shared/notes/anchors.md) it painted seq 512 in 92 s and crashed the renderer
at seq 1024 (JS heap out of memory at 3.7 GB); with `--cv-timeout {cv_timeout_s:.0f}` both are reported as not
painted, and "> N x" is the lower bound {cv_timeout_s:.0f} s / AttentionView's time. The CircuitsVis page
heap is its whole cost; AttentionView's page heap is mostly JupyterLab, so the last column compares
CircuitsVis with the heap the view added.

### AttentionView detail (medians)

{detail_table(summaries)}

### Targets (AttentionView, seq 1024)

{targets_table(av1024)}

{target_gaps(av1024)}

### Failures and notes

{chr(10).join(failures) or "- none"}
{chr(10).join(notes)}
"""
    write_section("attention", text)
    return table


def write_long_results(
    command: str, facts: dict[str, str], summaries: list[Summary], runs: list[RunResult], section: str, title: str
) -> str:
    """Write the long-context section (``--long``): AttentionView only, targets at 4,096 tokens and the switch at 1,024."""
    rows = [
        "| seq | runs | bytes before first paint | Python build | first paint: overview message / `data-painted` / presented | head switch to the next head (median, n) | head switch 5 heads on, never shown (median, n) | bytes received during the switches (median) | JS heap of the view |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for s in summaries:
        ok = [r for r in runs if r.seq == s.seq and r.failure is None]
        far_n = sum(len(r.switch_far_ms) for r in ok)
        after = [r.bytes_after for r in ok if r.bytes_after is not None]
        paint = s.failure or (f"{fmt_s(s.first_reply_s)} / {fmt_s(s.first_hook_s)} / {fmt_s(s.first_paint_s)}")
        rows.append(
            f"| {s.seq} | {s.runs} | {fmt_bytes(s.bytes_sent)} | {fmt_s(s.python_s)} | {paint} "
            f"| {fmt_ms(s.switch_ms)} (n={s.n_switches}) | {fmt_ms(s.switch_far_ms)} (n={far_n}) "
            f"| {fmt_bytes(statistics.median(after)) if after else '-'} | {fmt_mb(s.heap_view_mb)} |"
        )

    def verdict(value: float | None, limit: float) -> str:
        return "not measured" if value is None else ("**met**" if value < limit else "**not met**")

    by = {s.seq: s for s in summaries}
    targets = ["| target | measured | verdict |", "|---|---|---|"]
    if 4096 in by:
        s = by[4096]
        targets += [
            f"| 4,096 tokens: first paint < 1 s | {fmt_s(s.first_paint_s)} | {verdict(s.first_paint_s, TARGET_FIRST_PAINT_S)} |",
            f"| 4,096 tokens: head switch < 100 ms (median, next head) | {fmt_ms(s.switch_ms)} | {verdict(s.switch_ms, TARGET_SWITCH_MS)} |",
            f"| 4,096 tokens: head switch < 100 ms (median, 5 heads on: never shown) | {fmt_ms(s.switch_far_ms)} | {verdict(s.switch_far_ms, TARGET_SWITCH_MS)} |",
            f"| 4,096 tokens: < 2 MB before first paint | {fmt_bytes(s.bytes_sent)} | {verdict(s.bytes_sent, TARGET_BYTES)} |",
        ]
    if 1024 in by:
        s = by[1024]
        targets += [
            f"| 1,024 tokens: head switch < 100 ms (median, next head) | {fmt_ms(s.switch_ms)} | {verdict(s.switch_ms, TARGET_SWITCH_MS)} |",
            f"| 1,024 tokens: head switch < 100 ms (median, 5 heads on: never shown) | {fmt_ms(s.switch_far_ms)} | {verdict(s.switch_far_ms, TARGET_SWITCH_MS)} |",
        ]
    failures = [f"- seq {r.seq} run {r.run}: {r.failure}" for r in runs if r.failure]
    text = f"""## {title}

Command: `{command}`

Date: {facts["date"]}

Machine: {os.cpu_count()} CPU cores ({platform.machine()}, {platform.system()}), no GPU used (the patterns are on the
CPU), headless Chromium {facts["chromium"]} (`--disable-gpu`, software compositing), Python {platform.python_version()},
JupyterLab {facts["jupyterlab"]}, anywidget {facts["anywidget"]}, AttentionView bundle {facts["bundle"]}.
Load average (1 min) at start / end: {facts["load_start"]} / {facts["load_end"]} (other jobs shared the 2 cores).

Data: `make_data(seq, {N_HEADS})` as above ({N_HEADS} heads, causal softmax patterns of random scores), shown with
`mw.attention_heads(attention, tokens)` in JupyterLab; viewport {VIEWPORT["width"]} x {VIEWPORT["height"]}, the pattern at "fit".
First paint is timed from running the cell (Python build included) to the frame that shows the head; a head
switch from the click on the head grid to the frame that shows the new head. First come {N_FAR_SWITCHES} switches
5 heads on (heads 5, 10, 3, 8: never shown), then {N_SWITCHES} switches one head on (4 of them to a head shown
before). After its first paint the view fetches overview tiles ahead (the heads an arrow key reaches, then the rest
of the shown head's layer; two requests out at a time), so here, with one layer, the switches are usually drawn
from its cache; a head not fetched yet (another layer, or clicked within the first few hundred ms) costs a kernel
round trip. The "overview message" is the websocket message of the size of the shown head's overview tile (or
whole pattern). Past 512 tokens the view gets level-of-detail tiles, so for seq 1024 these rows
supersede the AttentionView row of the CircuitsVis comparison above when both are from the current code.

{chr(10).join(rows)}

{chr(10).join(targets)}

{chr(10).join(failures) or "No failures."}
"""
    write_section(section, text)
    return "\n".join(rows)


RUNS_JSON = OUTPUT / "attention_runs.json"


def save_runs(command: str, facts: dict[str, str], seqs: list[int], runs: list[RunResult]) -> None:
    RUNS_JSON.write_text(
        json.dumps({"command": command, "facts": facts, "seqs": seqs, "runs": [asdict(r) for r in runs]}, indent=1)
    )


def summarize(runs: list[RunResult]) -> list[Summary]:
    """One Summary per (seq, tool), CircuitsVis first, in the order the runs were made."""
    cases: dict[tuple[int, str], list[RunResult]] = {}
    for r in runs:
        cases.setdefault((r.seq, r.tool), []).append(r)
    return [Summary.of(case) for case in cases.values()]


def report_only() -> int:
    """Rewrite the attention section of RESULTS.md from the last run's benchmarks/output/attention_runs.json."""
    saved = json.loads(RUNS_JSON.read_text())
    runs = [RunResult(**r) for r in saved["runs"]]
    print(write_results(saved["command"], saved["facts"], summarize(runs), runs, saved["seqs"]))
    return 0


# ----- main --------------------------------------------------------------------------------------


def software_facts(root: Path = REPO) -> dict[str, str]:
    from importlib.metadata import version

    bundle = root / "mi_widgets" / "static" / "attention.js"
    return {
        "circuitsvis": version("circuitsvis"),
        "jupyterlab": version("jupyterlab"),
        "anywidget": version("anywidget"),
        "bundle": fmt_bytes(bundle.stat().st_size) if bundle.exists() else "NOT BUILT",
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seqs", default="64,256,512,1024", help="comma-separated sequence lengths")
    parser.add_argument("--cv-timeout", type=float, default=150.0, help="seconds a CircuitsVis case may take to paint")
    parser.add_argument("--repeats", type=int, default=3, help="runs per tool and seq (medians are reported)")
    parser.add_argument("--tools", default="circuitsvis,attentionview", help="which tools to run")
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="rewrite the attention section of RESULTS.md from the last run's saved JSON",
    )
    parser.add_argument(
        "--long",
        action="store_true",
        help="AttentionView only at long contexts (default seqs 1024,2048,4096), into section attention_long",
    )
    parser.add_argument("--section", default="attention_long", help="--long: the RESULTS.md section to write")
    parser.add_argument(
        "--package-root",
        default=str(REPO),
        help="checkout whose mi_widgets the kernel imports (e.g. a worktree of an older commit, for a baseline)",
    )
    args = parser.parse_args(argv)
    if args.report_only:
        return report_only()
    if args.long and args.seqs == parser.get_default("seqs"):
        args.seqs = "1024,2048,4096"
    seqs = [int(s) for s in args.seqs.split(",")]
    tools = {"attentionview"} if args.long else {t.strip().lower() for t in args.tools.split(",")}
    package_root = Path(args.package_root).resolve()
    command = "python benchmarks/attention.py " + " ".join(sys.argv[1:] if argv is None else argv)
    OUTPUT.mkdir(parents=True, exist_ok=True)
    if "attentionview" in tools and not (package_root / "mi_widgets" / "static" / "attention.js").exists():
        print("mi_widgets/static/attention.js is not built: run `npm run build` first", file=sys.stderr)
        return 2

    facts = software_facts(package_root)
    facts.update(load_start=f"{os.getloadavg()[0]:.1f}", cv_timeout=f"{args.cv_timeout:g}")
    # The kernel imports mi_widgets from this checkout even when it is not pip-installed.
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(package_root), os.environ.get("PYTHONPATH")]))
    runs: list[RunResult] = []
    summaries: list[Summary] = []
    lab_root = Path(tempfile.mkdtemp(prefix="lab-", dir=OUTPUT))
    try:
        with running_lab(lab_root) as lab, chromium_browser() as browser:
            facts.update(browser_facts(browser))
            for seq in seqs:
                if "circuitsvis" in tools:
                    case: list[RunResult] = []
                    for run in range(args.repeats):
                        started = time.monotonic()
                        r = run_circuitsvis(browser, seq, run, args.cv_timeout)
                        case.append(r)
                        print(
                            f"CircuitsVis   seq {seq:5d} run {run}: {r.failure or fmt_s(r.first_paint_s)}", flush=True
                        )
                        if r.failure or time.monotonic() - started > CV_SLOW_RUN_S:
                            if run + 1 < args.repeats:
                                r.notes.append(f"1 run only: a run took {time.monotonic() - started:.0f} s")
                            break
                    runs += case
                    summaries.append(Summary.of(case))
                if "attentionview" in tools:
                    case = []
                    for run in range(args.repeats):
                        r = run_attention_view(browser, lab, seq, run, far=args.long)
                        case.append(r)
                        print(
                            f"AttentionView seq {seq:5d} run {run}: {r.failure or fmt_s(r.first_paint_s)}", flush=True
                        )
                    runs += case
                    summaries.append(Summary.of(case))
    finally:
        shutil.rmtree(lab_root, ignore_errors=True)
    facts.update(
        load_end=f"{os.getloadavg()[0]:.1f}", date=dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    )
    if args.long:
        (OUTPUT / f"{args.section}_runs.json").write_text(
            json.dumps({"command": command, "facts": facts, "runs": [asdict(r) for r in runs]}, indent=1)
        )
        title = "Long-context AttentionView" + ("" if package_root == REPO else f" (baseline: {args.package_root})")
        print(write_long_results(command, facts, summaries, runs, args.section, title))
        return 0
    save_runs(command, facts, seqs, runs)
    table = write_results(command, facts, summaries, runs, seqs)
    print()
    print(table)
    print(f"\nwrote {RESULTS_MD.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
