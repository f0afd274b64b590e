"""SAELens ``SAE`` objects work wherever mi_widgets takes an SAE; run inside ``.venv-tl2``.

SAELens 6 needs TransformerLens < 4, so it lives in the TL 2.x environment made by
``.ci/setup-tl2``; ``tests/test_tl2_compat.py`` runs this script there and expects ``SAELENS OK``.
The model is a TL 2.x ``HookedTransformer`` with code-2l's shape and tokenizer (random weights:
the check is about interop, not about what the features mean).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch
from sae_lens import StandardSAE, StandardSAEConfig, TopKSAE, TopKSAEConfig
from sae_lens.saes.sae import SAEMetadata
from transformer_lens import HookedTransformer, HookedTransformerConfig
from transformers import AutoTokenizer, PreTrainedTokenizerFast

import mi_widgets as mw
from mi_widgets.analysis.sae import as_sae

HOOK = "blocks.0.hook_resid_post"
FOLDER = Path(mw.__file__).resolve().parent / "zoo" / "models" / "code-2l"

torch.manual_seed(0)
cfg = HookedTransformerConfig(
    d_model=128,
    d_head=32,
    n_heads=4,
    n_layers=2,
    d_mlp=512,
    act_fn="gelu",
    normalization_type="LN",
    n_ctx=256,
    d_vocab=2048,
    seed=0,
)
# transformers 4 cannot read the tokenizer_config that transformers 5 wrote, but it reads tokenizer.json;
# TL 2.x wants a tokenizer loaded from a folder, so save one in its own format first.
folder = Path(tempfile.mkdtemp())
PreTrainedTokenizerFast(
    tokenizer_file=str(FOLDER / "tokenizer.json"), bos_token="<|endoftext|>", eos_token="<|endoftext|>"
).save_pretrained(folder)
model = HookedTransformer(cfg, tokenizer=AutoTokenizer.from_pretrained(str(folder), local_files_only=True))
model.eval()
texts = [
    "def add(a, b):\n    return a + b\n",
    "class Point:\n    def __init__(self, x, y):\n        self.x = x\n        self.y = y\n",
    "for i in range(10):\n    print(i)  # count\n",
]


def randomize(sae: torch.nn.Module) -> None:
    with torch.no_grad():
        for p in sae.parameters():
            p.copy_(torch.randn_like(p) * 0.1)


standard = StandardSAE(StandardSAEConfig(d_in=128, d_sae=96, metadata=SAEMetadata(hook_name=HOOK)))
topk = TopKSAE(TopKSAEConfig(d_in=128, d_sae=96, k=6, metadata=SAEMetadata(hook_name=HOOK)))
randomize(standard)
randomize(topk)

# 1. as_sae reads the sizes and the hook from the SAELens config.
for sae in (standard, topk):
    info = as_sae(sae)
    assert (info.d_in, info.d_sae, info.hook_name) == (128, 96, HOOK), info

# 2. Same parameter names and shapes: our SAE with SAELens' weights encodes and decodes alike.
x = torch.randn(20, 128)
for theirs, arch, k in ((standard, "relu", None), (topk, "topk", 6)):
    ours = mw.SparseAutoencoder(128, 96, arch, k, hook_name=HOOK)
    ours.load_state_dict({name: p.detach() for name, p in theirs.named_parameters()})
    with torch.no_grad():
        torch.testing.assert_close(ours.encode(x), theirs.encode(x), msg=f"{arch}: encode differs from SAELens")
        f = theirs.encode(x)
        torch.testing.assert_close(ours.decode(f), theirs.decode(f), msg=f"{arch}: decode differs from SAELens")

# 3. FeatureView takes a SAELens SAE: per-token features and the corpus statistics match SAELens itself.
_, cache = model.run_with_cache(texts[1], names_filter=HOOK)
with torch.no_grad():
    expected = topk.encode(cache[HOOK][0])
fv = mw.FeatureView(topk, model, texts[1], corpus=texts, k=4)
fv.wait()
assert fv.status == "done", fv.error
torch.testing.assert_close(fv.feature_acts(0), expected)
fires = torch.zeros(96)
scanned = 0
for text in texts:
    tokens = model.to_tokens(text)
    _, cache = model.run_with_cache(tokens, names_filter=HOOK)
    with torch.no_grad():
        acts = topk.encode(cache[HOOK][0, 1:])  # without BOS, as the scan does
    fires += (acts > 0).sum(0)
    scanned += acts.shape[0]
torch.testing.assert_close(fv.density, fires / scanned)
best = int(fv.density.argmax())
assert fv.examples(best), "the most frequent feature has top examples"
assert fv.logits(best) is not None and fv.logits(best).shape == (2048,)

# 4. train_sae reads a TL 2.x model's hook too.
trained = mw.train_sae(model, HOOK, texts, d_sae=32, k=4, steps=3, batch_size=16, display=False)
assert trained.hook_name == HOOK and trained.W_dec.shape == (32, 128)
print("SAELENS OK")
