#!/usr/bin/env python
"""TopExamples benchmark: throughput vs a plain forward pass, peak memory vs holding all activations.

Model: the bundled ``code-2l`` (2 layers with MLPs, trained on the stdlib) with the stdlib's held-out
sources as the corpus, when it exists; otherwise a gpt2-small-shaped model with random weights
(``benchmarks/head_scan.py``'s, booted as a ``TransformerBridge``; no download) on random token rows.
Both sides read the same windows in the same padded batches (``TopExamples._batch``). Timed,
interleaved, medians over ``--repeats`` after a one-batch warm-up:

* forward: ``model(tokens)`` under ``torch.no_grad()``, batch by batch;
* TopExamples: ``ex.start(); ex.wait()`` (the scan: one hook captured, neurons selected and merged
  into the running top-k on the device, the pass stopped after the hook);
* hold all: ``run_with_cache(tokens, names_filter=hook)`` per batch, keeping every batch's activations
  of the hook (the naive way to find top examples: keep everything, sort later).

Peak memory: extra over the loaded model and corpus, per mode (CPU: a fresh process per mode, peak
RSS; CUDA: peak allocated). Also checks that TopExamples' maxima equal those of the held activations.
Writes the ``top_examples`` section of benchmarks/RESULTS.md; see benchmarks/README.md.

    python benchmarks/top_examples.py [--model auto|code-2l|gpt2-small] [--windows N] [--batch-size 8]
        [--neurons 64] [--k 10] [--hook HOOK] [--repeats 3] [--device cpu] [--threads 1]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import torch  # noqa: E402

import mi_widgets as mw  # noqa: E402
from benchmarks._common import GPT2_SMALL, MIB, SEED, build_model, load_model, peak, reset_peak, run_to_end, timed  # noqa: E402  (offline env)
from benchmarks._results import write_section  # noqa: E402
from mi_widgets.capture.adapter import ModelAdapter  # noqa: E402
from mi_widgets.capture.corpus import plan_corpus  # noqa: E402
from mi_widgets.widgets.top_examples import TopExamples  # noqa: E402

MODES = ("forward", "TopExamples", "hold all")
TARGET_RATIO = 0.8


def pick_model(name: str) -> str:
    if name != "auto":
        return name
    return "code-2l" if "code-2l" in mw.zoo.available() else "gpt2-small"


def load(name: str, folder: Path, device: str) -> Any:
    if name == "code-2l":
        return mw.zoo.load("code-2l", device=device)
    return load_model(folder, device)


def make_corpus(name: str, model: Any, windows: int) -> Any:
    """code-2l: the stdlib's held-out sources (texts; TopExamples cuts them into n_ctx windows).
    gpt2-small: ``windows`` random token rows of 256 tokens (random weights make any text as good)."""
    if name == "code-2l":
        from mi_widgets.zoo.code_2l import stdlib_texts

        return stdlib_texts("heldout")
    gen = torch.Generator().manual_seed(SEED)
    body = torch.randint(0, GPT2_SMALL["vocab_size"] - 1, (windows, 255), generator=gen)
    return torch.cat([torch.full((windows, 1), GPT2_SMALL["vocab_size"] - 1), body], dim=1)


def windows(model: Any, corpus: Any, n: int) -> list[torch.Tensor]:
    """The first ``n`` windows TopExamples cuts the corpus into (1-D token rows, BOS first)."""
    return plan_corpus(ModelAdapter(model), corpus)[0][:n]


def build(model: Any, rows: list[torch.Tensor], args: argparse.Namespace) -> TopExamples:
    """A TopExamples over these windows (a list of 1-D token tensors is a token corpus, one row each)."""
    return TopExamples(
        model, rows, hook=args.hook, neurons=range(args.neurons), k=args.k, batch_size=args.batch_size, autostart=False
    )


def prepare(mode: str, model: Any, ex: TopExamples) -> Callable[[], Any]:
    """Set a mode up (not timed) and return the call that is timed."""
    batches = [ex._batch(i) for i in range(ex._n_steps())]
    if mode == "forward":

        def forward() -> None:
            with torch.no_grad():
                for tokens, _, _ in batches:
                    model(tokens)

        return forward
    if mode == "TopExamples":
        return lambda: run_to_end(ex)

    def hold_all() -> list[torch.Tensor]:
        kept = []
        with torch.no_grad():
            for tokens, _, _ in batches:
                _, cache = model.run_with_cache(tokens, names_filter=ex.hook)
                kept.append(cache[ex.hook])
        return kept

    return hold_all


def agreement(ex: TopExamples, held: list[torch.Tensor]) -> float:
    """Largest difference between TopExamples' maxima and those of the held activations (padding left out)."""
    best = torch.full((len(ex.neurons),), float("-inf"))
    for i, acts in enumerate(held):
        _, mask, _ = ex._batch(i)
        chosen = acts.reshape(acts.shape[0], acts.shape[1], -1)[..., ex.neurons].float().cpu()
        chosen = chosen.masked_fill(~mask.cpu()[..., None], float("-inf"))
        best = torch.maximum(best, chosen.amax(dim=(0, 1)))
    return float((ex.maxima - best).abs().max())


def measure_here(mode: str, model: Any, ex: TopExamples, device: str) -> float:
    """Extra peak memory (MiB) over what is held now, for running ``mode`` once (results kept until measured)."""
    call = prepare(mode, model, ex)
    base = reset_peak(device)
    result = call()
    extra = (peak(device) - base) / MIB
    del result
    return extra


def measure_in_subprocess(mode: str, folder: Path, args: argparse.Namespace, n_windows: int) -> float:
    """On CPU each mode gets a fresh process, so one mode's freed memory cannot hide another's peak."""
    cmd = [sys.executable, __file__, "--_measure-memory", mode, "--_model-dir", str(folder)] + args._passthrough
    cmd += ["--windows", str(n_windows)]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"memory run for {mode} failed:\n{out.stderr[-3000:]}")
    return float(json.loads(out.stdout.strip().splitlines()[-1])["extra_mib"])


def describe_model(name: str, model: Any) -> str:
    cfg = model.cfg
    shape = f"{cfg.n_layers} layers, d_model {cfg.d_model}, d_mlp {cfg.d_mlp}, n_ctx {cfg.n_ctx}, d_vocab {cfg.d_vocab}"
    if name == "code-2l":
        return f"`code-2l` ({shape}), the bundled model trained on the stdlib; corpus: the stdlib's held-out sources"
    return (
        f"gpt2-small shape ({shape}), random weights (seed {SEED}), HF `GPT2LMHeadModel` booted as a `TransformerBridge`; "
        "corpus: random token rows of 256 (BOS first)"
    )


def report(
    command: str,
    facts: dict[str, str],
    ex: TopExamples,
    times: dict[str, list[float]],
    cpu: dict[str, list[float]],
    memory: dict[str, dict[int, float]],
    diff: float,
    args: argparse.Namespace,
) -> str:
    med = {m: statistics.median(ts) for m, ts in times.items()}
    med_cpu = {m: statistics.median(ts) for m, ts in cpu.items()}
    real = sum(int(r.shape[0]) for r in ex._rows)
    padded = sum(int(ex._batch(i)[0].numel()) for i in range(ex._n_steps()))
    n_units = ex._n_units
    state_bytes = sum(t.numel() * t.element_size() for t in ex._topk.snapshot())
    held_bytes = padded * n_units * 4
    what = {
        "forward": "logits, `model(tokens)` under no_grad",
        "TopExamples": f"top {args.k} of {args.neurons} neurons, one hook, pass stopped after it",
        "hold all": f"`run_with_cache(names_filter=hook)` per batch, all {n_units} units kept",
    }
    sizes = sorted(memory["forward"])
    mem_head = " | ".join(f"extra peak memory, {n} windows" for n in sizes)
    table = [
        f"| mode | computes | wall time (median; min-max) | tokens/s | throughput vs forward (wall / CPU time) | {mem_head} |",
        "|---|---|---|---|---|" + "---|" * len(sizes),
    ]
    for m in MODES:
        mem_cells = " | ".join(f"{memory[m][n]:,.1f} MiB" for n in sizes)
        table.append(
            f"| {m} | {what[m]} | {med[m]:.2f} s ({min(times[m]):.2f}-{max(times[m]):.2f}) | {real / med[m]:,.0f} "
            f"| {med['forward'] / med[m]:.2f}x / {med_cpu['forward'] / med_cpu[m]:.2f}x | {mem_cells} |"
        )
    ratio = med["forward"] / med["TopExamples"]
    cpu_ratio = med_cpu["forward"] / med_cpu["TopExamples"]
    verdict = "**met**" if ratio >= TARGET_RATIO else "**not met**"
    mem_how = (
        "peak allocated on the GPU minus allocated before, same process"
        if args.device.startswith("cuda")
        else "peak RSS minus RSS with the model, corpus and batches loaded, a fresh process per mode warmed up on one batch, "
        f"one pass, results kept until measured; median of {args.repeats} processes"
    )
    last_layer = ex.hook.startswith(f"blocks.{ex._adapter.n_layers - 1}.")
    return f"""## TopExamples benchmark results

Command: `{command}`

Date: {facts["date"]}

Machine: {os.cpu_count()} CPU cores ({platform.machine()}, {platform.system()}), device {facts["device"]}, torch {torch.__version__}
({torch.get_num_threads()} torch thread(s): `--threads`; on busy shared cores a 2-thread forward pass on the main thread ran
several times slower than the same pass on a worker thread, which would flatter the scan), transformer-lens
{version("transformer-lens")}, Python {platform.python_version()}.
Load average (1 min) at start / end: {facts["load_start"]} / {facts["load_end"]} (the cores are shared with other jobs).

Model: {describe_model(facts["model"], ex._adapter.model)}. Hook `{ex.hook}` ({n_units} units), neurons 0..{args.neurons - 1},
k = {args.k}. Windows: the first {len(ex._rows)} (at most n_ctx tokens, BOS first), {real:,} tokens ({padded:,} with padding),
in {ex._n_steps()} batches of {args.batch_size}, right-padded; every mode reads the same batches. Times: medians over
{args.repeats} interleaved repeats after a one-batch warm-up; tokens/s counts real tokens. Extra peak memory: {mem_how}.

### Results

{chr(10).join(table)}

Target (TopExamples throughput at least {TARGET_RATIO}x a plain forward pass over the same batches, wall time): {ratio:.2f}x, {verdict}
(by process CPU time, which other jobs on the shared cores disturb less: {cpu_ratio:.2f}x).

Memory at two corpus sizes: what `hold all` needs grows with the corpus; what TopExamples needs is the working
set of one batch's forward pass, like `forward`'s (single runs of one mode vary by tens of MiB with the
allocator, hence medians), and does not. TopExamples' running state is {state_bytes:,} bytes ({args.neurons} neurons x k {args.k} x value, doc, position),
the same for any corpus length; holding the hook's activations takes {held_bytes / MIB:,.1f} MiB of float32 for these
{padded:,} padded positions x {n_units} units and grows linearly with the corpus (x{1_000_000 / max(real, 1):,.0f} for a
million-token corpus: {held_bytes / MIB * 1_000_000 / max(real, 1):,.0f} MiB).

Check: TopExamples' per-neuron maxima equal those of the held activations to {diff:.1e}.

### Reading the numbers

TopExamples captures only `{ex.hook}`, reduces it inside the hook (select {args.neurons} of {n_units} units, per-batch
`torch.topk`, merge into the running top-k on the device) and stops the forward pass right after that hook, so it
{"skips the rest of the last layer, the final LayerNorm and the unembedding (no logits tensor)" if last_layer else "skips every later layer and the unembedding"}.
The forward pass computes logits it does not need here, and gets its batches ready-made, while TopExamples
pads and moves each batch itself inside the timed scan. `hold all` runs the whole forward pass (logits included)
and keeps every batch's `[batch, seq, {n_units}]` activations of the hook. Recomputing an example's context window (when a neuron is opened)
is one extra small pass over at most k windows and is not part of the scan. Times are on shared CPU cores:
compare the ratios of one run.
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model",
        choices=("auto", "code-2l", "gpt2-small"),
        default="auto",
        help="auto: code-2l when the zoo has it, else a random gpt2-small",
    )
    parser.add_argument(
        "--windows",
        type=int,
        default=None,
        help="corpus windows scanned (n_ctx tokens each at most); default 256 for code-2l, 16 for gpt2-small",
    )
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--neurons", type=int, default=64, help="neurons 0..N-1 are scanned")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--hook", default=None, help="default: the last layer's mlp.hook_post")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per mode (medians are reported)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads (0: torch's default); 1 by default, see README: with 2 threads on 2 busy "
        "cores the main thread's forward pass is several times slower than the same pass on a worker thread",
    )
    parser.add_argument("--_measure-memory", choices=MODES, help=argparse.SUPPRESS)
    parser.add_argument("--_model-dir", type=Path, help=argparse.SUPPRESS)
    raw = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(raw)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    args._passthrough = [a for a in raw if not a.startswith("--_")]
    name = pick_model(args.model)
    args.windows = args.windows or (256 if name == "code-2l" else 16)
    args._passthrough += ["--model", name, "--windows", str(args.windows)]

    if args._measure_memory:  # child process of measure_in_subprocess
        model = load(name, args._model_dir, args.device)
        args.hook = args.hook or f"blocks.{model.cfg.n_layers - 1}.mlp.hook_post"
        rows = windows(model, make_corpus(name, model, args.windows), args.windows)
        ex = build(model, rows, args)
        prepare(
            args._measure_memory, model, build(model, rows[: args.batch_size], args)
        )()  # one-time set-up is not the mode's cost
        print(json.dumps({"extra_mib": measure_here(args._measure_memory, model, ex, args.device)}))
        return 0

    command = "python benchmarks/top_examples.py " + " ".join(raw)
    facts = {"load_start": f"{os.getloadavg()[0]:.1f}", "model": name}
    with tempfile.TemporaryDirectory(prefix="top-examples-gpt2-") as tmp:
        folder = Path(tmp)
        if name == "gpt2-small":
            build_model(folder)
        model = load(name, folder, args.device)
        args.hook = args.hook or f"blocks.{model.cfg.n_layers - 1}.mlp.hook_post"
        facts["device"] = torch.cuda.get_device_name(args.device) if args.device.startswith("cuda") else "cpu"
        rows = windows(model, make_corpus(name, model, args.windows), args.windows)
        ex = build(model, rows, args)
        print(f"{len(rows)} windows, {ex._n_steps()} batches", flush=True)
        calls = {m: prepare(m, model, ex) for m in MODES}
        warm = build(model, rows[: args.batch_size], args)
        for m in MODES:  # warm-up: one batch each
            prepare(m, model, warm)()
        times: dict[str, list[float]] = {m: [] for m in MODES}
        cpu: dict[str, list[float]] = {m: [] for m in MODES}
        held: Any = None
        for rep in range(args.repeats):
            for m in MODES:
                seconds, cpu_seconds, result = timed(calls[m], args.device)
                times[m].append(seconds)
                cpu[m].append(cpu_seconds)
                if m == "hold all":
                    held = result
                del result
                print(f"repeat {rep} {m:12s} {seconds:7.2f} s wall {cpu_seconds:7.2f} s CPU", flush=True)
        diff = agreement(ex, held)
        del held, calls
        memory: dict[str, dict[int, float]] = {m: {} for m in MODES}
        for n in sorted({max(1, len(rows) // 4), len(rows)}):  # a quarter of the corpus and all of it
            for m in MODES:
                if args.device.startswith("cuda"):
                    memory[m][n] = measure_here(m, model, build(model, rows[:n], args), args.device)
                else:  # median of --repeats fresh processes: the allocator makes single peaks noisy
                    memory[m][n] = statistics.median(
                        measure_in_subprocess(m, folder, args, n) for _ in range(args.repeats)
                    )
                print(f"memory {m:12s} {n:5d} windows {memory[m][n]:,.1f} MiB", flush=True)
    facts.update(
        load_end=f"{os.getloadavg()[0]:.1f}", date=dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    )
    text = report(command, facts, ex, times, cpu, memory, diff, args)
    write_section("top_examples", text)
    print("\n" + text + "\nwrote benchmarks/RESULTS.md (top_examples section)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
