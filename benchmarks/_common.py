"""What the model benchmarks share: offline settings, a random gpt2-small, timers and peak memory.

Importing this module sets the Hugging Face offline variables (nothing may download) and puts the
repository on ``sys.path``.
"""

from __future__ import annotations

import ctypes
import gc
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HUB_DISABLE_PROGRESS_BARS"):
    os.environ.setdefault(var, "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import torch  # noqa: E402

GPT2_SMALL = {"n_layer": 12, "n_head": 12, "n_embd": 768, "n_inner": 3072, "n_positions": 1024, "vocab_size": 50257}
BOS = "<|endoftext|>"
BOS_ID = GPT2_SMALL["vocab_size"] - 1  # as in GPT-2
SEED = 0
MIB = 2**20


def make_tokens(n_seqs: int, seq: int) -> torch.Tensor:
    """``[n_seqs, seq]`` on the CPU: BOS, then a random block of (seq - 1) // 2 tokens repeated until seq is full
    (induction heads have something to do)."""
    gen = torch.Generator().manual_seed(SEED)
    block = torch.randint(0, BOS_ID, (n_seqs, (seq - 1) // 2), generator=gen)
    body = block.repeat(1, 3)[:, : seq - 1]
    return torch.cat([torch.full((n_seqs, 1), BOS_ID), body], dim=1)


def forward_passes(model: Any, tokens: torch.Tensor, batch_size: int) -> Callable[[], None]:
    """The baseline every model benchmark times: plain forward passes over ``tokens`` in batches, no grad."""
    batches = tokens.to(next(model.parameters()).device).split(batch_size)

    def forward() -> None:
        with torch.no_grad():
            for batch in batches:
                model(batch)

    return forward


def build_model(folder: Path) -> None:
    """Save a random gpt2-small and a word-level tokenizer (word ``t<i>`` is token id ``i``).

    On a TransformerBridge, ``detect_head`` takes text only (the bridge's ``to_tokens`` tokenizes
    and rejects tensors), so the tokenizer must turn each sequence's text back into exactly the
    benchmark's token ids; a BPE tokenizer would merge random tokens differently.
    """
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    vocab = {f"t{i}": i for i in range(BOS_ID)} | {BOS: BOS_ID}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token=BOS))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=BOS, eos_token=BOS, unk_token=BOS, pad_token=BOS)
    torch.manual_seed(SEED)
    GPT2LMHeadModel(GPT2Config(**GPT2_SMALL)).save_pretrained(folder)
    fast.save_pretrained(folder)


def load_model(folder: Path, device: str) -> Any:
    from transformer_lens import TransformerBridge

    return TransformerBridge.boot_transformers(str(folder), device=device)


def timed(call: Callable[[], Any], device: str) -> tuple[float, float, Any]:
    """Wall time, process CPU time (all threads; less sensitive to other jobs on shared cores) and the result."""
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    wall, cpu = time.perf_counter(), time.process_time()
    result = call()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - wall, time.process_time() - cpu, result


def rss_kib(field: str) -> int:
    """``VmRSS`` (now) or ``VmHWM`` (peak) of this process from /proc/self/status.

    Not ``getrusage().ru_maxrss``: it also keeps the peak of the forked parent the child was
    exec'd from (the benchmark process, model loaded), which clear_refs does not reset.
    """
    line = next(l for l in Path("/proc/self/status").read_text().splitlines() if l.startswith(field + ":"))
    return int(line.split()[1])


def page_in(model: Any) -> None:
    """Read every weight once: they are memory-mapped from model.safetensors, and without this the
    first pass would count ~300 MiB of weights paged in as the mode's memory."""
    with torch.no_grad():
        for tensor in [*model.parameters(), *model.buffers()]:
            tensor.sum()


def reset_peak(device: str) -> int:
    """Reset the peak-memory counter; return the memory held now (bytes)."""
    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        return torch.cuda.memory_allocated()
    ctypes.CDLL("libc.so.6").malloc_trim(0)  # hand freed heap back so the baseline is what is really held
    Path("/proc/self/clear_refs").write_text("5")  # reset this process's peak RSS (VmHWM) to its current RSS
    return rss_kib("VmRSS") * 1024


def peak(device: str) -> int:
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated()
    return rss_kib("VmHWM") * 1024


def run_to_end(widget: Any) -> Any:
    """Start a streaming widget, wait for it and fail loudly unless it finished (the timed call of a scan mode)."""
    widget.start()
    widget.wait()
    if widget.status != "done":
        raise RuntimeError(f"{type(widget).__name__} ended with status {widget.status!r}: {widget.error}")
    return widget
