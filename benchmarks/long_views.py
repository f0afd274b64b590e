"""Long prompts in the other views with a token axis: LogitLens, ActivationView and FeatureView at 1024 and 4096
tokens.

    python benchmarks/long_views.py [--seqs 1024,4096] [--repeats 2]

AttentionView's long-context figures come from ``attention.py --long``; this script times the views whose data
grow linearly with the prompt (a row per layer, a value per token) on a model run, in JupyterLab in headless
Chromium: the Python build (the model run and what the view keeps), the bytes the browser received before the
first paint, the first paint (from running the cell to the second frame after the view's ``data-painted`` hook),
and hovers (the pointer moved onto a cell or token spread over the prompt, to the second frame after the answer
is shown: LogitLens's readout, from the lens the view holds; ActivationView's top units and FeatureView's top
features at that position, each a request to the kernel). Model: a random 4-layer GPT-2 (d_model 256, 8 heads, n_ctx 4096, a
word-level vocabulary of 2,048 ``t<i>`` words), built offline into ``benchmarks/output/long_model``. Writes the
``long_views`` section of RESULTS.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import statistics
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks._common import SEED  # noqa: E402  (offline env)
from benchmarks._results import write_section  # noqa: E402
from benchmarks.attention import close_quietly, fmt_bytes, fmt_ms, new_page, software_facts  # noqa: E402
from tests.e2e.lab import NotebookPage, cell_point, chromium_browser, running_lab, write_notebook  # noqa: E402

OUTPUT = REPO / "benchmarks" / "output"
MODEL_DIR = OUTPUT / "long_model"
VOCAB = 2048
CONFIG = {"n_layer": 4, "n_head": 8, "n_embd": 256, "n_inner": 1024, "n_positions": 4096, "vocab_size": VOCAB}
N_HOVERS = 8
LAZY = {"FeatureView"}  # runs the model after it is displayed, when the view asks for the prompt
TARGET_FIRST_PAINT_S = 1.0  # the long-context target AttentionView is held to, at 4,096 tokens
TARGET_HOVER_MS = 100.0

VIEWS = {
    # name: (test id, the code that makes `view`, what a hover points at, what it changes); FeatureView runs the
    # model when the view asks for the prompt's features (after it is displayed), the others when they are made
    "LogitLens": (
        "logit-lens",
        "view = mw.LogitLens(model, prompt)",
        "[data-testid=lens-heatmap]",
        "[data-testid=readout]",
    ),
    "ActivationView": (
        "activation-view",
        'view = mw.ActivationView(model, prompt, "mlp.post")',
        "[data-testid=token-strip] [data-testid=token]",
        "[data-testid=top-list]",  # the position's top units, from the kernel
    ),
    "FeatureView": (
        "feature-view",
        "sae = mw.SparseAutoencoder(256, 2048, 'topk', k=32, hook_name='blocks.1.hook_resid_post')\n"
        "view = mw.FeatureView(sae, model, prompt, autostart=False)\n"
        "view.selected = {'feature': 0}  # the strip is coloured by (and data-painted names) a feature",
        "[data-testid=prompt-tokens] [data-testid=token]",
        "[data-testid=token-features]",  # the token's top features, from the kernel
    ),
}


def build_model(folder: Path) -> None:
    """A random GPT-2 of ``CONFIG`` and a word-level tokenizer (word ``t<i>`` is id ``i``; the last id is BOS)."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    bos = "<|endoftext|>"
    vocab = {f"t{i}": i for i in range(VOCAB - 1)} | {bos: VOCAB - 1}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token=bos))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=bos, eos_token=bos, unk_token=bos, pad_token=bos)
    torch.manual_seed(SEED)
    GPT2LMHeadModel(GPT2Config(**CONFIG, bos_token_id=VOCAB - 1, eos_token_id=VOCAB - 1)).save_pretrained(folder)
    fast.save_pretrained(folder)


def notebook(root: Path, view: str, seq: int, run: int) -> str:
    """Cell 0 loads the model and makes a ``seq``-token prompt (BOS included); cell 1 builds and shows the view."""
    name = f"long_{view}_{seq}_{run}.ipynb"
    setup = (
        "import time\nimport numpy as np\nimport mi_widgets as mw\nfrom transformer_lens import TransformerBridge\n\n"
        f"model = TransformerBridge.boot_transformers({str(MODEL_DIR)!r}, device='cpu')\n"
        f"rng = np.random.default_rng({SEED})\n"
        f"prompt = ' '.join(f't{{i}}' for i in rng.integers(0, {VOCAB - 1}, {seq - 1}))\n"
        "import torch\n"
        "with torch.no_grad():  # the forward pass alone, warm\n"
        "    model(prompt)\n"
        "    _t = time.perf_counter()\n"
        "    model(prompt)\n"
        "    forward_s = time.perf_counter() - _t\n"
    )
    display = f"_t = time.perf_counter()\n{VIEWS[view][1]}\nbuild_s = time.perf_counter() - _t\nview"
    write_notebook(root / name, [setup, display])
    return name


FIRST_JS = """
async ([testid, timeoutMs]) => {
  const app = window.jupyterapp;
  app.shell.currentWidget.content.activeCellIndex = 1;
  const t0 = performance.now();
  const painted = new Promise((resolve, reject) => {
    const check = () => document.querySelector(`[data-testid=${testid}][data-painted]`);
    const observer = new MutationObserver(() => { if (check()) { observer.disconnect(); clearTimeout(timer); resolve(performance.now()); } });
    observer.observe(document.body, { subtree: true, childList: true, attributes: true, attributeFilter: ['data-painted'] });
    const timer = setTimeout(() => { observer.disconnect(); reject(new Error('no data-painted within ' + timeoutMs + ' ms')); }, timeoutMs);
  });
  app.commands.execute('notebook:run-cell');
  const at = await painted;
  await window.__bench.frames(2);
  return { ms: performance.now() - t0, painted_ms: at - t0 };
}
"""

# Armed before the pointer moves; t0 is the timestamp (the clock of performance.now()) of the move's first event:
# pointerover comes before pointermove, and a view may answer mouseover before pointermove is dispatched.
ARM_HOVER_JS = """
([testid, readoutSelector, timeoutMs]) => {
  const readout = document.querySelector(`[data-testid=${testid}] ${readoutSelector}`);
  const before = readout.textContent;
  window.__hoverBefore = before;
  let t0 = null;
  for (const type of ['pointerover', 'pointermove'])
    window.addEventListener(type, (e) => { if (t0 === null) t0 = e.timeStamp; }, { capture: true, once: true });
  window.__hover = new Promise((resolve, reject) => {
    const observer = new MutationObserver(async () => {
      // changed and filled in (a list that empties while its request is out is not the answer yet)
      if (readout.textContent === before || readout.textContent.trim() === '' || t0 === null) return;
      observer.disconnect(); clearTimeout(timer);
      await window.__bench.frames(2);
      resolve({ ms: performance.now() - t0, text: readout.textContent.slice(0, 120) });
    });
    observer.observe(readout, { subtree: true, childList: true, characterData: true });
    const timer = setTimeout(() => { observer.disconnect(); reject(new Error('readout unchanged within ' + timeoutMs + ' ms')); }, timeoutMs);
  });
}
"""


HOVER_FAILED_JS = """
([x, y, testid, readoutSelector]) => {
  const under = document.elementFromPoint(x, y);
  const readout = document.querySelector(`[data-testid=${testid}] ${readoutSelector}`)?.textContent ?? '';
  return `under the pointer: ${under?.dataset?.testid ?? under?.tagName}; readout before: ` +
    `${(window.__hoverBefore ?? '').slice(0, 60)}; now: ${readout.slice(0, 60)}`;
}
"""


@dataclass
class Run:
    view: str
    seq: int
    python_s: float = 0.0
    forward_s: float = 0.0
    bytes_before_paint: int = 0
    first_paint_s: float = 0.0
    hover_ms: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def hover_point(page: Any, view: str, testid: str, seq: int, k: int) -> tuple[float, float]:
    """Where hover ``k`` of ``N_HOVERS`` points, spread over the prompt: a cell of the lens's first row (the heatmap
    scrolled to it) or a token of the strip (scrolled into view): the hover times the view, not the scroll."""
    position = int(seq * (k + 0.5) / N_HOVERS)
    target = f"[data-testid={testid}] {VIEWS[view][2]}"
    if view == "LogitLens":
        el = page.locator(target)
        el.evaluate(f"e => {{ e.scrollLeft = Math.max(0, {position} * +e.dataset.cellWidth - e.clientWidth / 2); }}")
        page.wait_for_timeout(100)  # the scroll's frame
        return cell_point(page, target, 0, position)
    token = page.locator(target).nth(position)
    token.scroll_into_view_if_needed()
    box = token.bounding_box()
    return box["x"] + box["width"] / 2, box["y"] + box["height"] / 2


def run_view(browser: Any, lab: Any, view: str, seq: int, run: int) -> Run:
    result = Run(view, seq)
    testid = VIEWS[view][0]
    name = notebook(lab.root_dir, view, seq, run)
    context, page, _ = new_page(browser)
    page.on("pageerror", lambda e: result.errors.append(f"page error: {str(e)[:200]}"))
    counting = {"on": False, "bytes": 0}

    def on_frame(payload: str | bytes) -> None:
        if counting["on"]:
            counting["bytes"] += len(payload.encode() if isinstance(payload, str) else payload)

    page.on("websocket", lambda ws: ws.on("framereceived", on_frame))
    nb = NotebookPage(page)
    try:
        nb.open(lab, name, timeout_ms=120_000)
        page.evaluate("() => window.jupyterapp.commands.execute('notebook:run-cell')")  # cell 0: model, prompt
        page.wait_for_function(
            "() => window.jupyterapp.shell.currentWidget.content.widgets[0].model.executionCount !== null",
            timeout=300_000,
        )
        nb.wait_kernel_idle(300_000)
        counting["on"] = True
        first = page.evaluate(FIRST_JS, [testid, 120_000])
        counting["on"] = False
        result.first_paint_s = first["ms"] / 1000
        result.bytes_before_paint = counting["bytes"]
        nb.wait_kernel_idle(120_000)
        result.python_s = float(nb.python_value("build_s"))
        result.forward_s = float(nb.python_value("forward_s"))
        for k in range(N_HOVERS):
            page.mouse.move(5, 5)  # off the view (a scroll under the pointer would hover what comes under it) ...
            x, y = hover_point(page, view, testid, seq, k)
            page.wait_for_timeout(150)  # ... then onto the target in one pointermove
            page.evaluate(ARM_HOVER_JS, [testid, VIEWS[view][3], 10_000])
            page.mouse.move(x, y)
            try:
                result.hover_ms.append(page.evaluate("() => window.__hover")["ms"])
            except Exception as exc:  # say what was under the pointer, and keep a screenshot
                under = page.evaluate(HOVER_FAILED_JS, [x, y, testid, VIEWS[view][3]])
                page.screenshot(path=str(OUTPUT / "long_views_failed.png"))
                raise RuntimeError(f"hover {k} at ({x:.0f}, {y:.0f}): {under}: {exc}") from exc
    except Exception as exc:  # recorded, so one failing case does not lose the others
        result.errors.append(f"{type(exc).__name__}: {str(exc)[:300]}")
    finally:
        lab.shutdown_kernels(name)  # a 4,096-token run leaves GBs in its kernel: the next one needs the memory
        close_quietly(context)
    return result


def median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def report(command: str, runs: list[Run], seqs: list[int], facts: dict[str, str]) -> str:
    rows = []
    verdicts = []
    for view in VIEWS:
        for seq in seqs:
            mine = [r for r in runs if r.view == view and r.seq == seq and not r.errors]
            if not mine:
                rows.append(f"| {view} | {seq} | 0 | - | - | - | - | - | - |")
                continue
            first = median([r.first_paint_s for r in mine])
            build = median([r.python_s for r in mine])
            forward = median([r.forward_s for r in mine])
            # the view's own part, after the model ran in its constructor; a lazy view runs (part of) the model after
            # it is displayed, inside its first paint, so no part of its first paint is the view's alone
            after = None if view in LAZY else median([r.first_paint_s - r.python_s for r in mine])
            hover = median([h for r in mine for h in r.hover_ms])
            rows.append(
                f"| {view} | {seq} | {len(mine)} | {forward * 1000:.0f} ms | {build * 1000:.0f} ms | "
                f"{fmt_bytes(median([float(r.bytes_before_paint) for r in mine]))} | {first * 1000:.0f} ms | "
                f"{'- (model run inside)' if after is None else f'{after * 1000:.0f} ms'} | "
                f"{fmt_ms(hover)} (n={sum(len(r.hover_ms) for r in mine)}) |"
            )
            if seq == max(seqs):
                checks = [("hover (median)", hover, TARGET_HOVER_MS)]
                if after is not None:
                    checks.insert(0, ("first paint after the model run", after * 1000, TARGET_FIRST_PAINT_S * 1000))
                for what, value, limit in checks:
                    met = value is not None and value < limit
                    verdicts.append(
                        f"| {view}, {seq:,} tokens: {what} < {limit:.0f} ms | {fmt_ms(value)} | "
                        f"{'met' if met else '**not met**'} |"
                    )
    failures = [f"- {r.view} seq {r.seq}: {e}" for r in runs for e in r.errors]
    return f"""## Long prompts in LogitLens, ActivationView and FeatureView (`benchmarks/long_views.py`)

Command: `{command}`

Date: {facts["date"]}

Machine: {os.cpu_count()} CPU cores ({platform.machine()}, {platform.system()}), the model on the CPU, headless
Chromium (`--disable-gpu`, software compositing), Python {platform.python_version()}, JupyterLab {facts["jupyterlab"]}.
Model: a random 4-layer GPT-2 (d_model 256, 8 heads, n_ctx 4096, 2,048-word vocabulary); prompt: `seq` tokens,
BOS included. LogitLens: 5 rows (embeddings and 4 layers) x `seq` positions, top 5 each; ActivationView:
`mlp.post` of the 4 layers (1024 units), the strip coloured by one neuron; FeatureView: a random top-32 SAE of
2,048 features on `blocks.1.hook_resid_post`, no corpus, feature 0 selected. Python build: the model run and what
the view keeps. Hover: {N_HOVERS} positions spread over the prompt (LogitLens: a cell of the first row, scrolled to;
ActivationView, FeatureView: a token of the strip, scrolled into view first), from the pointer move to the second
frame after the answer is shown (LogitLens: its readout, from the lens the view holds; ActivationView: the
position's top units, FeatureView: the token's top features, each a request to the kernel). The forward pass
alone (timed warm in the same kernel) grows with the square of the prompt on this CPU; the views are held to the
long-context targets for what they add after the model run: the first paint minus the Python build for LogitLens
and ActivationView (which run the model when they are made). FeatureView runs the model up to its SAE's layer
when the view asks for the prompt, after it is displayed, so its first paint holds that run and only its hover is
held to a target.

| view | seq | runs | forward pass alone | Python build | bytes before first paint | first paint | first paint after the model run | hover to answer (median) |
|---|---|---|---|---|---|---|---|---|
{chr(10).join(rows)}

| target | measured | verdict |
|---|---|---|
{chr(10).join(verdicts)}

{chr(10).join(failures) or "No failures."}
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--seqs", default="1024,4096", help="comma-separated prompt lengths (at most 4096)")
    parser.add_argument("--repeats", type=int, default=2, help="runs per view and seq")
    parser.add_argument("--views", default=",".join(VIEWS), help="which views to run")
    args = parser.parse_args(argv)
    seqs = [int(s) for s in args.seqs.split(",")]
    views = [v.strip() for v in args.views.split(",")]
    if not (MODEL_DIR / "config.json").exists():
        MODEL_DIR.mkdir(parents=True, exist_ok=True)
        build_model(MODEL_DIR)
    facts = software_facts() | {"date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}
    runs: list[Run] = []
    lab_root = Path(tempfile.mkdtemp(prefix="lab-", dir=OUTPUT))
    with running_lab(lab_root) as lab, chromium_browser() as browser:
        for view in views:
            for seq in seqs:
                for run in range(args.repeats):
                    r = run_view(browser, lab, view, seq, run)
                    runs.append(r)
                    hover = median(r.hover_ms)
                    print(
                        f"{view} seq {seq} run {run}: build {r.python_s * 1000:.0f} ms, first paint "
                        f"{r.first_paint_s * 1000:.0f} ms, {r.bytes_before_paint} bytes, hover "
                        f"{'-' if hover is None else f'{hover:.0f} ms'} {r.errors or ''}",
                        flush=True,
                    )
    command = "python benchmarks/long_views.py " + " ".join(argv if argv is not None else sys.argv[1:])
    write_section("long_views", report(command.strip(), runs, seqs, facts))
    return 0 if all(not r.errors for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
