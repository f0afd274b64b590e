#!/usr/bin/env python
"""HeadScan benchmark: one scan vs a plain forward pass and vs TransformerLens ``detect_head``.

Model: gpt2-small shape with random weights, saved as a local Hugging Face folder and booted as
a TransformerLens 4.x ``TransformerBridge`` (no download). Tokens: ``--n-seqs`` sequences of BOS
plus one random block repeated (seq 256 by default), fixed seed, in batches of ``--batch-size``.
Timed, interleaved, medians over ``--repeats`` after a one-batch warm-up:

* forward: ``model(batch)`` under ``torch.no_grad()`` over the same batches;
* HeadScan: ``HeadScan(model, sequences=tokens, batch_size=...)``, then ``scan.start(); scan.wait()``;
* detect_head: ``detect_head(model, texts, name)`` for the three head types on the same sequences.

Also: extra peak memory over the loaded model per mode, and a check that the two scorers agree.
Writes the ``head_scan`` section of benchmarks/RESULTS.md; see benchmarks/README.md.

    python benchmarks/head_scan.py [--n-seqs 16] [--batch-size 8] [--seq 256] [--repeats 3] [--device cpu] [--threads 1]
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

from benchmarks._common import (  # noqa: E402  (sets the offline environment variables)
    GPT2_SMALL,
    MIB,
    SEED,
    build_model,
    forward_passes,
    load_model,
    make_tokens,
    page_in,
    peak,
    reset_peak,
    run_to_end,
    timed,
)
from benchmarks._results import write_section  # noqa: E402
from mi_widgets.analysis.head_scores import HEAD_TYPES, detection_patterns  # noqa: E402

MODES = ("forward", "HeadScan", "detect_head x3")
TL_NAMES = {
    "previous_token": "previous_token_head",
    "duplicate_token": "duplicate_token_head",
    "induction": "induction_head",
}
TARGET_RATIO = 1.2
AGREE_TOL = 1e-5


def as_text(row: torch.Tensor) -> str:
    """The text ``detect_head`` tokenizes back into ``row`` (the bridge prepends BOS itself)."""
    return " ".join(f"t{int(i)}" for i in row[1:])


def prepare(mode: str, model: Any, tokens: torch.Tensor, batch_size: int) -> Callable[[], Any]:
    """Set a mode up (not timed) and return the call that is timed."""
    if mode == "forward":
        return forward_passes(model, tokens, batch_size)
    if mode == "HeadScan":
        from mi_widgets.widgets.head_scan import HeadScan

        scan = HeadScan(model, sequences=tokens, batch_size=batch_size, autostart=False)
        return lambda: run_to_end(scan)
    from transformer_lens.head_detector import detect_head

    texts = [as_text(row) for row in tokens]
    if not torch.equal(model.to_tokens(texts).cpu(), tokens.cpu()):
        raise RuntimeError("the tokenizer does not turn the texts back into the benchmark's tokens")
    return lambda: {name: detect_head(model, texts, tl_name) for name, tl_name in TL_NAMES.items()}


def measure_here(mode: str, model: Any, tokens: torch.Tensor, batch_size: int, device: str) -> list[int]:
    """Extra peak memory (bytes) of a first pass of ``mode`` (its set-up included) and of the next pass."""
    extra = []
    base = reset_peak(device)
    call = prepare(mode, model, tokens, batch_size)
    call()
    extra.append(peak(device) - base)
    base = reset_peak(device)
    call()
    extra.append(peak(device) - base)
    return extra


def measure_in_subprocess(mode: str, folder: Path, args: argparse.Namespace) -> list[int]:
    """Each mode in a fresh process, so what one mode left behind cannot hide another's peak.

    On CPU glibc gets a fixed mmap threshold: freed tensors then go back to the OS and RSS follows
    the tensors alive (with its adaptive threshold, freed blocks stay and the peaks depend on
    allocation order).
    """
    cmd = [
        sys.executable,
        __file__,
        "--_measure-memory",
        mode,
        "--_model-dir",
        str(folder),
        "--device",
        args.device,
        "--n-seqs",
        str(args.n_seqs),
        "--batch-size",
        str(args.batch_size),
        "--seq",
        str(args.seq),
        "--threads",
        str(args.threads),
    ]
    env = os.environ | {"MALLOC_MMAP_THRESHOLD_": "65536"}
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if out.returncode != 0:
        raise RuntimeError(f"memory run for {mode} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])["extra_bytes"]


def agreement(
    scan_scores: dict[str, torch.Tensor], detect: dict[str, torch.Tensor], tokens: torch.Tensor, batch_size: int
) -> list[str]:
    """Table rows: HeadScan's score mapped to detect_head's "mul" measure vs detect_head itself.

    detect_head averages, over sequences, (attention on targets) / (all attention = seq); HeadScan
    divides the summed attention on targets by the number of rows that have a target. So
    detect_head == HeadScan * rows_with_target / (n_seqs * seq).
    """
    rows = []
    total = tokens.numel()
    for name in HEAD_TYPES:
        with_target = sum(int((detection_patterns(b)[name].sum(-1) > 0).sum()) for b in tokens.split(batch_size))
        mapped = scan_scores[name] * with_target / total
        diff = float((detect[name].cpu() - mapped).abs().max())
        verdict = "agree" if diff <= AGREE_TOL else "**DISAGREE**"
        rows.append(
            f"| {name} | {with_target} / {total} | {float(scan_scores[name].mean()):.4f} ({float(scan_scores[name].max()):.4f}) "
            f"| {float(detect[name].mean()):.4f} ({float(detect[name].max()):.4f}) | {diff:.1e} ({verdict}) |"
        )
    return rows


def mib(n_bytes: float) -> str:
    return f"{n_bytes / MIB:,.0f} MiB"


def skipped_share(seq: int) -> float:
    """Share of a forward pass's multiply-adds that the scan skips by stopping after the last layer's pattern."""
    d, f, v, layers = GPT2_SMALL["n_embd"], GPT2_SMALL["n_inner"], GPT2_SMALL["vocab_size"], GPT2_SMALL["n_layer"]
    to_pattern = 3 * d * d + seq * d  # per token: QKV projections, then scores against seq keys (eager, full square)
    after_pattern = seq * d + d * d + 2 * d * f  # pattern @ V, output projection, MLP
    full = layers * (to_pattern + after_pattern) + d * v  # + unembedding
    return 1 - (layers * to_pattern + (layers - 1) * after_pattern) / full


def report(
    command: str,
    facts: dict[str, str],
    times: dict[str, list[float]],
    cpu_times: dict[str, list[float]],
    memory: dict[str, str],
    agree_rows: list[str],
    args: argparse.Namespace,
) -> str:
    med = {m: statistics.median(ts) for m, ts in times.items()}
    cpu = {m: statistics.median(ts) for m, ts in cpu_times.items()}
    n_tokens = args.n_seqs * args.seq
    what = {
        "forward": "logits, `model(batch)`",
        "HeadScan": "3 scores x 144 heads, one pattern-hooked pass per batch",
        "detect_head x3": "3 scores x 144 heads, 3 full-cache passes per sequence (batch 1)",
    }
    table = [
        "| mode | computes | time (median; min-max) | ratio to forward | tokens/s | CPU time (ratio) | extra peak memory: first / next pass |",
        "|---|---|---|---|---|---|---|",
    ]
    for m in MODES:
        table.append(
            f"| {m} | {what[m]} | {med[m]:.2f} s ({min(times[m]):.2f}-{max(times[m]):.2f}) | **{med[m] / med['forward']:.2f}x** "
            f"| {n_tokens / med[m]:,.0f} | {cpu[m]:.2f} s ({cpu[m] / cpu['forward']:.2f}x) | {memory[m]} |"
        )
    layers_heads = GPT2_SMALL["n_layer"] * GPT2_SMALL["n_head"]
    ratio = med["HeadScan"] / med["forward"]
    verdict = "**met**" if ratio <= TARGET_RATIO else "**not met**"
    mem_how = (
        "peak allocated on the GPU minus allocated before"
        if args.device.startswith("cuda")
        else ("peak RSS (`VmHWM`) minus RSS before, glibc with a fixed mmap threshold")
    )
    return f"""## HeadScan benchmark results

Command: `{command}`

Date: {facts["date"]}

Machine: {os.cpu_count()} CPU cores ({platform.machine()}, {platform.system()}), device {facts["device"]}, torch {torch.__version__}
({torch.get_num_threads()} torch thread(s): `--threads`; on busy shared cores a 2-thread forward pass on the main thread ran
several times slower than the same pass on a fresh thread, where HeadScan runs, which would flatter the scan), transformer-lens {version("transformer-lens")}, transformers {version("transformers")}, Python {platform.python_version()}.
Load average (1 min) at start / end: {facts["load_start"]} / {facts["load_end"]} (the cores are shared with other jobs).

Model: gpt2-small shape (12 layers x 12 heads, d_model 768, d_mlp 3072, n_ctx 1024, d_vocab 50257), random
weights (seed {SEED}), HF `GPT2LMHeadModel` booted as a TransformerLens `TransformerBridge`. Tokens: {args.n_seqs}
sequences of {args.seq} tokens (BOS + a random block of {(args.seq - 1) // 2} repeated), {n_tokens:,} tokens, batches of
{args.batch_size}. Times: medians over {args.repeats} interleaved repeats after a one-batch warm-up. Extra peak memory: {mem_how},
in a fresh process per mode with the model loaded, over one batch: the first pass (set-up included, e.g. building
the HeadScan widget) / the next pass.

### Results

{chr(10).join(table)}

Target (HeadScan at most {TARGET_RATIO}x a plain forward pass over the same tokens): {ratio:.2f}x, {verdict}.
detect_head for the three head types takes {med["detect_head x3"] / med["HeadScan"]:.1f}x as long as HeadScan.

### Do they compute the same thing?

HeadScan scores a head by its attention on target keys averaged over the query rows that have a target
(a perfect head scores 1); `detect_head(error_measure="mul")` divides the same sum by all attention
(per sequence, then averages the sequences). On the same tokens the identity
`detect_head == HeadScan x rows_with_target / (n_seqs x seq)` must hold; mean (max) over the 144 heads:

| head type | rows with a target | HeadScan | detect_head | max abs difference after mapping |
|---|---|---|---|---|
{chr(10).join(agree_rows)}

Random weights give near-uniform attention, so all scores are small; the check is of the arithmetic.

### Reading the numbers

HeadScan does less work than the forward pass it is compared with: it captures only
`blocks.N.attn.hook_pattern`, reduces each pattern to running sums inside the hook, and stops the pass
right after the last layer's pattern, skipping that layer's attention output and MLP, the final LayerNorm
and the 768 x 50257 unembedding (about {100 * skipped_share(args.seq):.0f}% of the forward's multiply-adds at seq {args.seq};
no logits tensor either). detect_head runs the whole model again for each head type: per sequence, at
batch 1, `run_with_cache` (every activation cached, autograd on), then the 144 heads scored one by one, so
three head types cost about three full forward passes (plus the caching). Times are on {os.cpu_count()} shared CPU
cores: repeats vary with other jobs (see min-max and the load average), so compare the ratios of one run.

Memory: a forward pass at batch {args.batch_size} makes {mib(args.batch_size * args.seq * GPT2_SMALL["vocab_size"] * 4)} of logits, which the scan never computes;
the scan keeps running sums of {len(HEAD_TYPES)} x 144 numbers, and its widget holds the pattern view of one sequence
({mib(layers_heads * args.seq**2 * 4)}). The first pass costs every mode more because the bridge keeps state after a
pass: each layer's attention module holds on to its last pattern (`_pattern`, up to
{mib(layers_heads * args.batch_size * args.seq**2 * 4)} at this batch size; the scan stops before the last layer stores its
own); later passes replace it layer by layer. detect_head runs at batch 1, so its peak does not grow with the batch
size; it runs the model with autograd on, so the kept patterns also keep the last call's autograd graph and with
it that sequence's activations alive (none are left when it is called under `torch.no_grad()`).
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-seqs", type=int, default=16, help="number of sequences scanned")
    parser.add_argument("--batch-size", type=int, default=8, help="sequences per forward pass (forward and HeadScan)")
    parser.add_argument("--seq", type=int, default=256, help="tokens per sequence, BOS included (< n_ctx 1024)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per mode (medians are reported)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads (0: torch's default); 1 by default, see README: with 2 threads on 2 busy "
        "cores the main thread's forward pass is several times slower than the scan's worker thread",
    )
    parser.add_argument("--_measure-memory", choices=MODES, help=argparse.SUPPRESS)
    parser.add_argument("--_model-dir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if not 4 <= args.seq < GPT2_SMALL["n_positions"]:
        parser.error("--seq must be in 4..1023 (detect_head needs seq < n_ctx)")
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    tokens = make_tokens(args.n_seqs, args.seq)

    if args._measure_memory:  # child process of measure_in_subprocess: one batch (peaks do not grow with more)
        model = load_model(args._model_dir, args.device)
        page_in(model)
        extra = measure_here(args._measure_memory, model, tokens[: args.batch_size], args.batch_size, args.device)
        print(json.dumps({"extra_bytes": extra}))
        return 0

    command = " ".join(["python benchmarks/head_scan.py", *(sys.argv[1:] if argv is None else argv)])
    facts = {"load_start": f"{os.getloadavg()[0]:.1f}"}
    with tempfile.TemporaryDirectory(prefix="head-scan-gpt2-") as tmp:
        folder = Path(tmp)
        build_model(folder)
        model = load_model(folder, args.device)
        facts["device"] = torch.cuda.get_device_name(args.device) if args.device.startswith("cuda") else "cpu"
        calls = {m: prepare(m, model, tokens, args.batch_size) for m in MODES}
        for m in MODES:  # warm-up: one batch each
            prepare(m, model, tokens[: args.batch_size], args.batch_size)()
        times: dict[str, list[float]] = {m: [] for m in MODES}
        cpu_times: dict[str, list[float]] = {m: [] for m in MODES}
        results: dict[str, Any] = {}
        for rep in range(args.repeats):
            for m in MODES:
                seconds, cpu_seconds, results[m] = timed(calls[m], args.device)
                times[m].append(seconds)
                cpu_times[m].append(cpu_seconds)
                print(f"repeat {rep} {m:15s} {seconds:7.2f} s (CPU {cpu_seconds:.2f} s)", flush=True)
        agree_rows = agreement(results["HeadScan"].scores, results["detect_head x3"], tokens, args.batch_size)
        del results, calls
        memory = {}
        for m in MODES:
            first, later = measure_in_subprocess(m, folder, args)
            memory[m] = f"{mib(first)} / {mib(later)}"
            print(f"memory {m:15s} {memory[m]}", flush=True)
    facts.update(
        load_end=f"{os.getloadavg()[0]:.1f}", date=dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    )
    text = report(command, facts, times, cpu_times, memory, agree_rows, args)
    write_section("head_scan", text)
    print("\n" + text + "\nwrote benchmarks/RESULTS.md (head_scan section)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
