"""The zoo's tokenizers: byte-level BPE (GPT-2 style) trained locally with the ``tokenizers`` library."""

from __future__ import annotations

from pathlib import Path
from typing import Any

BOS_TOKEN = "<|endoftext|>"


def train_bpe_tokenizer(out: Path, texts: list[str], vocab_size: int, n_ctx: int) -> Any:
    """Train a byte-level BPE (no prefix space, ``BOS_TOKEN`` as bos/eos/pad/unk) on ``texts``, save it to
    ``out`` and load it back from disk (an in-memory tokenizer object breaks TransformerBridge boot)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[BOS_TOKEN],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    if tok.get_vocab_size() != vocab_size:
        raise RuntimeError(f"the corpus gave a vocabulary of {tok.get_vocab_size()} tokens, expected {vocab_size}")
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS_TOKEN,
        eos_token=BOS_TOKEN,
        unk_token=BOS_TOKEN,
        pad_token=BOS_TOKEN,
        model_max_length=n_ctx,
    )
    out.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(str(out))
    return AutoTokenizer.from_pretrained(str(out), local_files_only=True)
