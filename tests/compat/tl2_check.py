"""Run inside a TransformerLens 2.x environment (``.venv-tl2``, made by ``.ci/setup-tl2``).

AttentionView, HeadScan and CompositionView promise to work on TL 2.x ``HookedTransformer`` by duck typing; TL 2 and TL 4
cannot share one environment (transformers 4 vs 5), so this script is run by
``tests/test_tl2_compat.py`` with the other interpreter and prints ``TL2 OK`` at the end.
"""

from __future__ import annotations

import numpy as np
import torch
import transformer_lens
from transformer_lens import HookedTransformer, HookedTransformerConfig

import mi_widgets as mw
from mi_widgets.transport.codec import decode_array

assert not hasattr(transformer_lens, "TransformerBridge"), "this check must run under TransformerLens 2.x"

cfg = HookedTransformerConfig(
    d_model=64, d_head=16, n_heads=4, n_layers=2, n_ctx=64, d_vocab=300, attn_only=True, act_fn=None, seed=0
)
model = HookedTransformer(cfg)  # no tokenizer: token ids in, <id> labels out
tokens = torch.arange(1, 12)

view = mw.AttentionView(model, tokens, layer=1, head=2)
_, cache = model.run_with_cache(tokens[None], names_filter=lambda name: name.endswith("hook_pattern"))
expected = torch.stack([cache["pattern", layer][0] for layer in range(cfg.n_layers)])
assert torch.allclose(view.patterns, expected), "AttentionView patterns differ from TL 2.x run_with_cache"
assert view.tokens == [f"<{i}>" for i in range(1, 12)], view.tokens

sent: list[tuple[dict, list]] = []
view.send = lambda content, buffers=None: sent.append((content, buffers or []))
view._handle_custom_msg({"type": "request", "id": 1, "method": "pattern", "params": {"layer": 1, "head": 2}}, [])
content, buffers = sent[-1]
assert content["ok"], content
served = decode_array(content["result"]["pattern"], buffers)
assert np.allclose(served, expected[1, 2].numpy(), atol=1e-3), "served pattern differs"

from_cache = mw.AttentionView.from_cache(cache, [str(i) for i in range(11)])
assert (from_cache.n_layers, from_cache.n_heads) == (2, 4)

try:
    mw.AttentionView(model, "a text prompt")
except ValueError as exc:
    assert "no tokenizer" in str(exc), exc
else:
    raise AssertionError("a text prompt on a model without tokenizer must raise")

scan = mw.HeadScan(model, n_batches=2, batch_size=4).wait(60)
assert scan.status == "done", (scan.status, scan.error)
assert scan.scores["induction"].shape == (2, 4) and torch.isfinite(scan.scores["induction"]).all()

comp = mw.CompositionView(model)
assert torch.allclose(comp.scores("K"), model.all_composition_scores("K").detach())
assert comp.top("K", k=1)[0][0] == 0

print(f"TL2 OK (transformer_lens 2.x, {len(sent)} reply)")
