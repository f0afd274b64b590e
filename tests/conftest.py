"""Shared fixtures: tiny offline models and a capture of what a widget sends.

Everything is built locally (no hub access): a byte-level BPE tokenizer trained on a
few sentences, a random TL-native model, and a random GPT-2 saved to a folder and
loaded through ``TransformerBridge.boot_transformers`` (the real HF code path).
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # the package is used from the checkout, installed or not
    sys.path.insert(0, str(ROOT))

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)  # tiny models: one thread is faster than two on a 2-core machine

SPECIAL = "<|endoftext|>"
SENTENCES = [
    "The cat sat on the mat.",
    "When Mary and John went to the store, John gave a drink to Mary.",
    "The quick brown fox jumps over the lazy dog.",
    "Attention heads move information between token positions.",
    "Induction heads copy the token that followed an earlier copy of the current token.",
    "Hello world! Numbers like 1, 2, 3 and 42 appear in text too.",
]

PROMPT = "The cat sat on the mat. The cat sat on the"


# ----- models -----------------------------------------------------------------------------


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A byte-level BPE tokenizer (vocab 350) saved with ``save_pretrained``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=350,
        special_tokens=[SPECIAL],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(SENTENCES * 3, trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=SPECIAL, eos_token=SPECIAL, unk_token=SPECIAL, pad_token=SPECIAL
    )
    folder = tmp_path_factory.mktemp("tokenizer")
    fast.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tokenizer(tokenizer_dir: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tokenizer_dir))


@pytest.fixture(scope="session")
def vocab_size(tokenizer: Any) -> int:
    return len(tokenizer)


def _native_cfg(d_vocab: int) -> Any:
    from transformer_lens.config import TransformerBridgeConfig

    return TransformerBridgeConfig(
        d_model=64, d_head=16, n_heads=4, n_layers=2, n_ctx=64, d_vocab=d_vocab, attn_only=True, seed=0
    )


@pytest.fixture(scope="session")
def native_model(tokenizer: Any, vocab_size: int) -> Any:
    from transformer_lens import TransformerBridge

    return TransformerBridge.boot_native(_native_cfg(vocab_size), tokenizer=tokenizer)


@pytest.fixture(scope="session")
def native_model_no_tokenizer(vocab_size: int) -> Any:
    from transformer_lens import TransformerBridge

    return TransformerBridge.boot_native(_native_cfg(vocab_size))


@pytest.fixture(scope="session")
def gpt2_folder(tmp_path_factory: pytest.TempPathFactory, tokenizer: Any, vocab_size: int) -> Path:
    """A random 2-layer GPT-2 and the tokenizer, saved as a local HF model folder."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    config = GPT2Config(n_layer=2, n_head=4, n_embd=64, n_positions=128, vocab_size=vocab_size)
    folder = tmp_path_factory.mktemp("gpt2")
    GPT2LMHeadModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def gpt2_bridge(gpt2_folder: Path) -> Any:
    from transformer_lens import TransformerBridge

    return TransformerBridge.boot_transformers(str(gpt2_folder), device="cpu")


@pytest.fixture(params=["native_model", "gpt2_bridge"])
def any_model(request: pytest.FixtureRequest) -> Any:
    """Both model kinds with a tokenizer: the TL-native bridge and the HF GPT-2 bridge."""
    return request.getfixturevalue(request.param)


# ----- capturing what a widget sends --------------------------------------------------------


class Sent(list):
    """Messages a widget sent, as ``(content, buffers)``; helpers find and reassemble replies."""

    def of(self, request_id: Any) -> list[tuple[dict[str, Any], list[Any]]]:
        return [(c, b) for c, b in list(self) if isinstance(c, dict) and c.get("id") == request_id]

    def responses(self, request_id: Any) -> list[tuple[dict[str, Any], list[Any]]]:
        return [(c, b) for c, b in self.of(request_id) if c.get("type") == "response"]

    def progress(self, request_id: Any) -> list[dict[str, Any]]:
        return [c for c, _ in self.of(request_id) if c.get("type") == "progress"]

    def complete(self, request_id: Any) -> bool:
        parts = self.responses(request_id)
        return bool(parts) and len(parts) == int(parts[0][0]["parts"])

    def wait(self, request_id: Any, timeout: float = 30.0) -> None:
        """Poll until every part of the reply to ``request_id`` has arrived."""
        deadline = time.monotonic() + timeout
        while not self.complete(request_id):
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"no complete reply to {request_id!r} within {timeout} s; got {self.of(request_id)}"
                )
            time.sleep(0.005)

    def reply(self, request_id: Any) -> tuple[dict[str, Any], list[bytes]]:
        """The first part's content and the original buffers, rebuilt from all parts in order."""
        parts = sorted(self.responses(request_id), key=lambda m: m[0]["part"])
        assert parts, f"no reply to {request_id!r}"
        n = parts[0][0]["parts"]
        assert [c["part"] for c, _ in parts] == list(range(n)), "missing or duplicated parts"
        assert all(c["parts"] == n for c, _ in parts)
        first = parts[0][0]
        if not first.get("ok"):
            return first, []
        blob = b"".join(bytes(memoryview(s).cast("B")) for _, slices in parts for s in slices)
        lengths = first["buffer_lengths"]
        assert sum(lengths) == len(blob), "slices do not add up to buffer_lengths"
        out, offset = [], 0
        for length in lengths:
            out.append(blob[offset : offset + length])
            offset += length
        return first, out


def capture_sends(widget: Any) -> Sent:
    """Replace ``widget.send`` with a recorder; safe to call from the router's worker thread."""
    sent = Sent()
    lock = threading.Lock()

    def send(content: dict[str, Any], buffers: Any = None) -> None:
        with lock:
            sent.append((content, list(buffers or [])))

    widget.send = send
    return sent


@pytest.fixture
def capture() -> Callable[[Any], Sent]:
    """``sent = capture(widget)``: record everything ``widget`` sends from now on."""
    return capture_sends


_ids = iter(range(1, 10**9))


def request(widget: Any, method: str, params: dict[str, Any] | None = None, buffers: list[Any] | None = None) -> str:
    """Deliver a request to ``widget`` as the view would; return its id."""
    request_id = f"t:{next(_ids)}"
    widget._handle_custom_msg(
        {"type": "request", "id": request_id, "method": method, "params": params or {}}, buffers or []
    )
    return request_id


@pytest.fixture
def ask() -> Callable[..., str]:
    """``rid = ask(widget, method, params)``: send a protocol request to a widget."""
    return request
