#!/usr/bin/env python
"""Device benchmark: a forward pass vs a HeadScan vs a capture, on the device the model is on.

Model: gpt2-small shape with random weights (12 layers x 12 heads, d_model 768, d_mlp 3072, vocab 50257,
n_ctx 1024), saved as a local Hugging Face folder and booted as a TransformerLens 4.x ``TransformerBridge`` on
``--device`` (no download; ``_common.build_model``). For each sequence length in ``--seqs``: ``--n-batches``
batches of ``--batch-size`` random sequences (BOS + a random block repeated, fixed seed). Timed, interleaved,
medians over ``--repeats`` after a warm-up of each mode (cuda synchronized around every timed call):

* forward: ``model(batch)`` under ``torch.no_grad()`` over the batches (logits stay on the device);
* HeadScan: ``HeadScan(model, sequences=tokens, batch_size=...)`` built once, then ``scan.start(); scan.wait()``;
* run_with_cache: ``model.run_with_cache(batch, names_filter=hook)`` under ``torch.no_grad()`` over the batches;
* ActivationView: ``ActivationView(model, tokens, hook=hook)``: the widget's capture of every sequence (its
  own batches of up to 16 prompts), kept on the device.

Also, per mode, in an untimed pass: the extra peak memory over the loaded model (GPU: peak allocated; CPU:
peak RSS, glibc with a fixed mmap threshold) and, on a GPU, the bytes read from the device into host memory
(``Tensor.cpu``/``.numpy``/``.tolist``/``.item``/``.to(cpu)`` of tensors on the device).
Writes the ``device_<device type>`` section of benchmarks/RESULTS.md; see benchmarks/README.md.

    python benchmarks/device.py [--device cuda] [--seqs 128,512,1024] [--batch-size 8] [--n-batches 4] [--repeats 5]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import statistics
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
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

MODES = ("forward", "HeadScan", "run_with_cache", "ActivationView")
HOOK = "blocks.6.hook_resid_post"
MMAP_THRESHOLD = "65536"


def prepare(mode: str, model: Any, tokens: torch.Tensor, batch_size: int) -> Callable[[], Any]:
    """Set a mode up (not timed) and return the call that is timed."""
    if mode == "forward":
        return forward_passes(model, tokens, batch_size)
    batches = tokens.to(next(model.parameters()).device).split(batch_size)
    if mode == "run_with_cache":

        def cache() -> None:
            with torch.no_grad():
                for batch in batches:
                    model.run_with_cache(batch, names_filter=HOOK)

        return cache
    if mode == "HeadScan":
        from mi_widgets.widgets.head_scan import HeadScan

        scan = HeadScan(model, sequences=tokens, batch_size=batch_size, autostart=False)
        return lambda: run_to_end(scan)
    from mi_widgets.widgets.activation import ActivationView

    return lambda: ActivationView(model, tokens, hook=HOOK)


class DeviceReads:
    """Bytes read from a non-CPU device into host memory while active (the tests' ``HostReads``, in bytes)."""

    def __init__(self) -> None:
        self.bytes = 0
        self._lock = threading.Lock()

    def record(self, tensor: torch.Tensor) -> None:
        if tensor.device.type != "cpu":
            with self._lock:
                self.bytes += tensor.numel() * tensor.element_size()

    @contextmanager
    def active(self) -> Iterator[DeviceReads]:
        saved = {name: getattr(torch.Tensor, name) for name in ("cpu", "numpy", "tolist", "item", "to")}

        def wrap(method: Callable[..., Any]) -> Callable[..., Any]:
            def wrapper(tensor: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
                self.record(tensor)
                return method(tensor, *args, **kwargs)

            return wrapper

        def to(tensor: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
            target = args[0] if args else kwargs.get("device")
            if isinstance(target, torch.Tensor):
                target = target.device
            if isinstance(target, (str, torch.device)) and torch.device(target).type == "cpu":
                self.record(tensor)
            return saved["to"](tensor, *args, **kwargs)

        try:
            for name in ("cpu", "numpy", "tolist", "item"):
                setattr(torch.Tensor, name, wrap(saved[name]))
            torch.Tensor.to = to  # type: ignore[method-assign]
            yield self
        finally:
            for name, method in saved.items():
                setattr(torch.Tensor, name, method)


def mib(n_bytes: float) -> str:
    return f"{n_bytes / MIB:,.0f} MiB"


def measure(model: Any, tokens: torch.Tensor, batch_size: int, device: str) -> dict[str, tuple[str, str]]:
    """Per mode: extra peak memory of one pass (set-up included) and the bytes it read from the device."""
    out = {}
    for mode in MODES:
        base = reset_peak(device)
        reads = DeviceReads()
        with reads.active():
            result = prepare(mode, model, tokens, batch_size)()
        extra = peak(device) - base
        del result
        moved = f"{reads.bytes:,} B" if device.startswith("cuda") else "n/a (no transfer)"
        out[mode] = (mib(extra), moved)
    return out


def report(command: str, facts: dict[str, str], rows: list[str], args: argparse.Namespace) -> str:
    on_gpu = args.device.startswith("cuda")
    mem_how = (
        "peak allocated on the GPU (`torch.cuda.max_memory_allocated`) minus allocated before"
        if on_gpu
        else "peak RSS (`VmHWM`, reset through `/proc/self/clear_refs`) minus RSS before, glibc with a fixed mmap "
        "threshold; in one process, so rough"
    )
    gpu_note = (
        ""
        if on_gpu
        else """
These are CPU figures (no GPU was lent to the session that ran it), with fewer sequences, batches and repeats than
the GPU defaults. The GPU figures are to be recorded when a GPU is available, with

    MIW_TEST_DEVICE=cuda .venv/bin/python -m pytest -q tests/test_device.py && .venv/bin/python benchmarks/device.py --device cuda

(the device tests first: they check on the GPU that every widget computes there and reads into host memory only
what its replies send).
"""
    )
    table = [
        "| seq | mode | time (median; min-max) | ratio to forward | tokens/s | extra peak memory | device-to-host bytes |",
        "|---|---|---|---|---|---|---|",
        *rows,
    ]
    return f"""## Device benchmark results: {facts["device"]}

Command: `{command}`

Date: {facts["date"]}

Machine: {os.cpu_count()} CPU cores ({platform.machine()}, {platform.system()}), device **{facts["device"]}**, torch
{torch.__version__} ({torch.get_num_threads()} torch CPU thread(s)), transformer-lens {version("transformer-lens")},
transformers {version("transformers")}, Python {platform.python_version()}. Load average (1 min) at start / end:
{facts["load_start"]} / {facts["load_end"]}.
{gpu_note}
Model: gpt2-small shape (12 layers x 12 heads, d_model 768, d_mlp 3072, n_ctx 1024, d_vocab 50257), random
weights (seed {SEED}), HF `GPT2LMHeadModel` booted as a TransformerLens `TransformerBridge` on the device. Per
sequence length: {args.n_batches} batch(es) of {args.batch_size} sequence(s) (BOS + a random block repeated).
Times: medians over {args.repeats} interleaved repeats after a warm-up of each mode. Modes: `forward` =
`model(batch)` per batch (logits kept on the device); `HeadScan` = the scan over the same batches (3 scores x 144
heads, the patterns reduced inside the hook, the pass stopped after the last layer's pattern); `run_with_cache` =
`model.run_with_cache(batch, names_filter="{HOOK}")` per batch; `ActivationView` = building
`ActivationView(model, tokens, hook="{HOOK}")` (its own batches of up to 16 prompts; the activations kept on
the device). Extra peak memory: {mem_how}, over one untimed pass of the mode (set-up included). Device-to-host
bytes: what that pass read from the device into host memory (`Tensor.cpu`/`.numpy`/`.tolist`/`.item`/`.to(cpu)`).

{chr(10).join(table)}

Reading the numbers: `HeadScan` and `ActivationView` stop the forward pass after the last hook they need (the last
layer's pattern; layer 6's residual stream, so half the blocks), and neither computes the 768 x 50257 unembedding,
which `forward` and `run_with_cache` do; `ActivationView` also runs its sequences in batches of up to 16, not
`--batch-size`. HeadScan's extra memory grows with seq^2: the bridge's attention modules keep their last pattern
(see the head_scan section). No mode needs anything from the device on the host: logits, caches, patterns and
activations stay where the model is (on a GPU the last column counts what a pass does read). {"" if on_gpu else "On shared CPU cores repeats vary a lot (min-max, load average): compare the ratios of one run."}
"""


def main(argv: list[str] | None = None) -> int:
    default_device = "cuda" if torch.cuda.is_available() else "cpu"
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default=default_device, help=f"torch device (default here: {default_device})")
    parser.add_argument("--seqs", default="128,512,1024", help="sequence lengths, BOS included (<= n_ctx 1024)")
    parser.add_argument("--batch-size", type=int, help="sequences per forward pass (default: 8 on a GPU, 1 on the CPU)")
    parser.add_argument("--n-batches", type=int, help="batches per timed call (default: 4 on a GPU, 2 on the CPU)")
    parser.add_argument("--repeats", type=int, help="timed runs per mode and seq (default: 5 on a GPU, 2 on the CPU)")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch CPU threads (0: torch's default); 1 as head_scan.py"
    )
    args = parser.parse_args(argv)
    on_gpu = args.device.startswith("cuda")
    args.batch_size = args.batch_size or (8 if on_gpu else 1)
    args.n_batches = args.n_batches or (4 if on_gpu else 2)
    args.repeats = args.repeats or (5 if on_gpu else 2)
    seqs = [int(s) for s in args.seqs.split(",")]
    if not all(4 <= s <= GPT2_SMALL["n_positions"] for s in seqs):
        parser.error("--seqs must be in 4..1024")
    if not on_gpu and os.environ.get("MALLOC_MMAP_THRESHOLD_") != MMAP_THRESHOLD:  # freed tensors back to the OS
        os.execve(
            sys.executable,
            [sys.executable, __file__, *sys.argv[1:]],
            os.environ | {"MALLOC_MMAP_THRESHOLD_": MMAP_THRESHOLD},
        )
    if args.threads > 0:
        torch.set_num_threads(args.threads)

    command = " ".join([".venv/bin/python benchmarks/device.py", *(sys.argv[1:] if argv is None else argv)])
    facts = {"load_start": f"{os.getloadavg()[0]:.1f}"}
    rows = []
    with tempfile.TemporaryDirectory(prefix="device-gpt2-") as tmp:
        folder = Path(tmp)
        build_model(folder)
        model = load_model(folder, args.device)
        page_in(model)
        facts["device"] = (
            torch.cuda.get_device_name(args.device) if on_gpu else f"cpu ({platform.processor() or platform.machine()})"
        )
        for seq in seqs:
            tokens = make_tokens(args.n_batches * args.batch_size, seq)
            calls = {m: prepare(m, model, tokens, args.batch_size) for m in MODES}
            for m in MODES:  # warm-up: one batch each
                prepare(m, model, tokens[: args.batch_size], args.batch_size)()
            times: dict[str, list[float]] = {m: [] for m in MODES}
            for rep in range(args.repeats):
                for m in MODES:
                    seconds, _, result = timed(calls[m], args.device)
                    del result
                    times[m].append(seconds)
                    print(f"seq {seq:5d} repeat {rep} {m:15s} {seconds:8.3f} s", flush=True)
            del calls
            memory = measure(model, tokens, args.batch_size, args.device)
            med = {m: statistics.median(ts) for m, ts in times.items()}
            for m in MODES:
                extra, moved = memory[m]
                rows.append(
                    f"| {seq} | {m} | {med[m]:.3f} s ({min(times[m]):.3f}-{max(times[m]):.3f}) | "
                    f"**{med[m] / med['forward']:.2f}x** | {tokens.numel() / med[m]:,.0f} | {extra} | {moved} |"
                )
                print(f"seq {seq:5d} {m:15s} memory {extra}, device-to-host {moved}", flush=True)
    facts.update(
        load_end=f"{os.getloadavg()[0]:.1f}", date=dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    )
    text = report(command, facts, rows, args)
    section = "device_" + torch.device(args.device).type
    write_section(section, text)
    print("\n" + text + f"\nwrote benchmarks/RESULTS.md ({section} section)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
