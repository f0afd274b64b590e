"""Tiny random Hugging Face causal LMs of every family the suite checks, built offline from configs.

All have 2 layers, d_model 64 and 4 heads over the local test tokenizer's vocabulary. Weights are drawn larger
than the HF default and biases and norm weights are perturbed, so logits are big enough for Gemma 2's soft cap
to matter and every norm weight and bias term is exercised. ``tests/test_architectures.py`` boots them through
TransformerLens 4.x, ``tests/test_nnsight.py`` wraps them in ``nnsight.LanguageModel``.
"""

from __future__ import annotations

from typing import Any

import torch

GEMMA2_SOFTCAP = 2.0  # small next to these models' logits (up to ~2), so the cap visibly changes them

#: The families every view is checked on (both backends).
FAMILIES = ["gpt2", "llama", "mistral", "qwen2", "neox", "gemma2", "opt", "phi", "phi3"]


def tiny_config(name: str, vocab: int, bos: int) -> tuple[Any, type]:
    """The HF config and model class of family (or variant) ``name``."""
    import transformers

    ids = dict(bos_token_id=bos, eos_token_id=bos, pad_token_id=bos)
    common = dict(
        vocab_size=vocab,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=128,
        max_position_embeddings=128,
        initializer_range=0.1,
        **ids,
    )
    opt = {k: v for k, v in common.items() if k != "intermediate_size"} | dict(ffn_dim=128, word_embed_proj_dim=64)
    table: dict[str, tuple[str, str, dict[str, Any]]] = {
        "gpt2": (
            "GPT2Config",
            "GPT2LMHeadModel",
            dict(n_layer=2, n_head=4, n_embd=64, n_positions=128, vocab_size=vocab, initializer_range=0.1, **ids),
        ),
        "llama": ("LlamaConfig", "LlamaForCausalLM", dict(common, num_key_value_heads=2)),  # grouped-query attention
        # Llama's layout: Mistral with a sliding window, Qwen2 with biases on q, k and v
        "mistral": ("MistralConfig", "MistralForCausalLM", dict(common, num_key_value_heads=2, sliding_window=4)),
        "qwen2": ("Qwen2Config", "Qwen2ForCausalLM", dict(common, num_key_value_heads=2)),
        "neox": ("GPTNeoXConfig", "GPTNeoXForCausalLM", dict(common, use_parallel_residual=True, rotary_pct=0.25)),
        # GPT-NeoX with sequential attention and MLP (Pythia's layout is parallel)
        "neox_seq": ("GPTNeoXConfig", "GPTNeoXForCausalLM", dict(common, use_parallel_residual=False, rotary_pct=0.25)),
        "gemma2": (
            "Gemma2Config",
            "Gemma2ForCausalLM",
            dict(
                common,
                num_key_value_heads=2,
                head_dim=16,
                query_pre_attn_scalar=16,
                sliding_window=4,
                final_logit_softcapping=GEMMA2_SOFTCAP,
                attn_logit_softcapping=5.0,
            ),
        ),
        "opt": ("OPTConfig", "OPTForCausalLM", opt),
        # OPT-350m's layout: post-LN blocks, project_in/project_out around a 32-wide embedding
        "opt350m": ("OPTConfig", "OPTForCausalLM", dict(opt, word_embed_proj_dim=32, do_layer_norm_before=False)),
        # a pre-LN OPT with project_in/project_out
        "opt_proj": ("OPTConfig", "OPTForCausalLM", dict(opt, word_embed_proj_dim=32)),
        "phi": ("PhiConfig", "PhiForCausalLM", dict(common, partial_rotary_factor=0.5)),  # parallel attention and MLP
        "phi3": ("Phi3Config", "Phi3ForCausalLM", dict(common, num_key_value_heads=2)),
    }
    config_cls, model_cls, kwargs = table[name]
    return getattr(transformers, config_cls)(**kwargs), getattr(transformers, model_cls)


def tiny_model(name: str, vocab: int, bos: int, attn: str | None = None) -> Any:
    """A random model of ``name`` (seed 0), biases and norm weights perturbed; ``attn``: the attention
    implementation (``"eager"`` gives patterns). In training mode, as a model built from a config is."""
    config, cls = tiny_config(name, vocab, bos)
    if attn is not None:
        config._attn_implementation = attn
    torch.manual_seed(0)
    model = cls(config)
    with torch.no_grad():
        for pname, p in model.named_parameters():
            if ("norm" in pname or "ln" in pname) and pname.endswith("weight"):
                p.add_(0.3 * torch.randn_like(p))  # Gemma's 1 + w and everyone's w differ from 1
            elif pname.endswith("bias"):
                p.copy_(0.1 * torch.randn_like(p))
    return model
