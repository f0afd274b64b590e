"""FeatureView: construction checks, the corpus scan against brute force, known-answer SAEs, requests.

Everything runs on the tiny TL-native model of ``conftest`` (attention only, d_model 64, n_ctx 64)
plus, for ``mlp.hook_post``, a native model with MLPs built here. The brute force runs the model
on each corpus window alone (``run_with_cache``) and encodes with ``sae.encode`` itself.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch
import traitlets

import mi_widgets as mw
from mi_widgets.analysis.sae import SparseAutoencoder
from mi_widgets.analysis.top_examples import split_windows
from mi_widgets.transport.codec import decode_array

from .conftest import PROMPT, SENTENCES

RESID = "blocks.0.hook_resid_post"
LONG_TEXT = " ".join(SENTENCES)  # longer than n_ctx=64 tokens: several windows
CORPUS = SENTENCES + [LONG_TEXT]
PROMPTS = [PROMPT, "Hello world! The cat sat."]
D_SAE = 16
K = 5


# ----- helpers ------------------------------------------------------------------------------


def windows_of(model: Any, texts: list[str]) -> list[torch.Tensor]:
    """The windows a scan reads: each text without BOS, cut into BOS + up to n_ctx - 1 tokens."""
    bos = model.tokenizer.bos_token_id
    return [
        w
        for t in texts
        for w in split_windows(model.to_tokens(t, prepend_bos=False, truncate=False)[0], model.cfg.n_ctx, bos)
    ]


@torch.no_grad()
def encode_rows(model: Any, hook: str, sae: SparseAutoencoder, rows: list[torch.Tensor]) -> list[torch.Tensor]:
    """Brute force: each window alone through ``run_with_cache``, then ``sae.encode``: ``[seq, d_sae]`` per row."""
    out = []
    for row in rows:
        _, cache = model.run_with_cache(row[None], names_filter=hook)
        out.append(sae.encode(cache[hook][0].reshape(row.shape[0], -1)).float())
    return out


def non_bos(rows: list[torch.Tensor], acts: list[torch.Tensor], bos: int) -> tuple[torch.Tensor, list[tuple[int, int]]]:
    """All corpus activations except BOS positions ``[n, d_sae]`` and their (row, position)."""
    values, where = [], []
    for doc, (row, a) in enumerate(zip(rows, acts)):
        for pos in range(row.shape[0]):
            if pos == 0 and int(row[0]) == bos:
                continue
            values.append(a[pos])
            where.append((doc, pos))
    return torch.stack(values), where


def reply_of(sent: Any, rid: str) -> tuple[dict[str, Any], list[bytes]]:
    sent.wait(rid)
    return sent.reply(rid)


def error_of(sent: Any, rid: str) -> str:
    content, _ = reply_of(sent, rid)
    assert not content["ok"], content
    return content["error"]["message"]


def random_sae(d_in: int, d_sae: int, hook: str | None, seed: int = 0) -> SparseAutoencoder:
    """A ReLU SAE with random unit directions and biases that give features of very different densities."""
    sae = SparseAutoencoder(d_in, d_sae, "relu", hook_name=hook, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        sae.b_enc.copy_(-0.06 * torch.arange(d_sae, dtype=torch.float32))
        sae.b_enc[-1] = -1e4  # a dead feature
    return sae


# ----- fixtures -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sae() -> SparseAutoencoder:
    return random_sae(64, D_SAE, RESID)


@pytest.fixture(scope="module")
def fv(native_model: Any, sae: SparseAutoencoder) -> Any:
    view = mw.FeatureView(sae, native_model, PROMPTS, corpus=CORPUS, k=K, batch_size=3, context=4, after=2).wait(60)
    assert view.status == "done", view.error
    return view


@pytest.fixture(scope="module")
def brute(native_model: Any, sae: SparseAutoencoder) -> dict[str, Any]:
    rows = windows_of(native_model, CORPUS)
    acts = encode_rows(native_model, RESID, sae, rows)
    flat, where = non_bos(rows, acts, native_model.tokenizer.bos_token_id)
    return {"rows": rows, "acts": acts, "flat": flat, "where": where}


@pytest.fixture(scope="module")
def mlp_model(tokenizer: Any, vocab_size: int) -> Any:
    """Like conftest's native model, but with MLPs (d_mlp 128)."""
    from transformer_lens import TransformerBridge
    from transformer_lens.config import TransformerBridgeConfig

    cfg = TransformerBridgeConfig(
        d_model=64,
        d_head=16,
        n_heads=4,
        n_layers=2,
        n_ctx=64,
        d_vocab=vocab_size,
        d_mlp=128,
        attn_only=False,
        act_fn="gelu",
        seed=0,
    )
    return TransformerBridge.boot_native(cfg, tokenizer=tokenizer)


# ----- construction ------------------------------------------------------------------------------


def test_hook_comes_from_the_sae_or_from_hook(native_model: Any) -> None:
    fv = mw.FeatureView(random_sae(64, 8, "blocks.1.hook_resid_pre"), native_model, PROMPT, autostart=False)
    assert fv.hook == "blocks.1.hook_resid_pre" and fv.d_sae == 8 and fv.k == 10 and fv.status == "idle"
    assert fv.prompts == [PROMPT] and fv.prompt_index == 0 and fv.selected == {"feature": None}
    rows = windows_of(native_model, [PROMPT])  # corpus defaults to the prompts
    assert fv.n_windows == len(rows) == 1 and fv.n_tokens == sum(len(r) for r in rows)
    assert fv.progress == {"done": 0, "total": 1}

    override = mw.FeatureView(
        random_sae(64, 8, "blocks.1.hook_resid_pre"), native_model, PROMPT, hook=RESID, autostart=False
    )
    assert override.hook == RESID
    nameless = mw.FeatureView(
        random_sae(64, 8, None), native_model, [PROMPT], hook="blocks.1.hook_attn_out", autostart=False
    )
    assert nameless.hook == "blocks.1.hook_attn_out"
    z = mw.FeatureView(
        random_sae(64, 8, "blocks.0.attn.hook_z"), native_model, PROMPT, autostart=False
    )  # [seq, 4, 16] flattened
    assert z.hook == "blocks.0.attn.hook_z" and z.feature_acts(0).shape == (len(native_model.to_tokens(PROMPT)[0]), 8)


def test_construction_errors(native_model: Any, native_model_no_tokenizer: Any) -> None:
    m = native_model
    with pytest.raises(ValueError, match=r"does not say which hook it reads \(no hook_name\).*hook="):
        mw.FeatureView(random_sae(64, 8, None), m, PROMPT)
    with pytest.raises(ValueError, match=r"d_in=32.*blocks\.0\.hook_resid_post holds 64 units per token"):
        mw.FeatureView(random_sae(32, 8, RESID), m, PROMPT)
    with pytest.raises(ValueError, match=r"d_in=128.*blocks\.0\.attn\.hook_z holds 64 units per token"):
        mw.FeatureView(random_sae(128, 8, "blocks.0.attn.hook_z"), m, PROMPT)
    with pytest.raises(ValueError, match="unknown hook name 'blocks.0.hook_resid_pots'.*did you mean"):
        mw.FeatureView(random_sae(64, 8, "blocks.0.hook_resid_pots"), m, PROMPT)
    with pytest.raises(ValueError, match="not one vector per token"):
        mw.FeatureView(random_sae(64, 8, "blocks.0.attn.hook_pattern"), m, PROMPT)
    with pytest.raises(
        TypeError, match=r"expected a sparse autoencoder.*got Linear without encode, decode, W_enc, W_dec"
    ):
        mw.FeatureView(torch.nn.Linear(64, 8), m, PROMPT, hook=RESID)
    with pytest.raises(TypeError, match="expected a sparse autoencoder.*got str"):
        mw.FeatureView("my_sae", m, PROMPT, hook=RESID)
    with pytest.raises(TypeError, match="expected a TransformerLens model"):
        mw.FeatureView(random_sae(64, 8, RESID), object(), PROMPT)
    with pytest.raises(ValueError, match="no tokenizer"):
        mw.FeatureView(random_sae(64, 8, RESID), native_model_no_tokenizer, PROMPT)
    for prompts in ([], "", "   ", [""], [PROMPT, ""], [PROMPT, " \n"], [PROMPT, 3]):
        with pytest.raises(ValueError, match="prompts must be a non-blank string or a list of non-blank strings"):
            mw.FeatureView(random_sae(64, 8, RESID), m, prompts)
    for kwargs, message in [
        ({"k": 0}, "k must be a positive integer, got 0"),
        ({"k": True}, "k must be a positive integer, got True"),
        ({"k": 2.5}, "k must be a positive integer, got 2.5"),
        ({"batch_size": 0}, "batch_size must be a positive integer, got 0"),
        ({"batch_size": -3}, "batch_size must be a positive integer, got -3"),
        ({"batch_size": "8"}, "batch_size must be a positive integer, got '8'"),
        ({"context": -1}, "context must be a non-negative integer, got -1"),
        ({"after": -1}, "after must be a non-negative integer, got -1"),
    ]:
        with pytest.raises(ValueError, match=re.escape(message)):
            mw.FeatureView(random_sae(64, 8, RESID), m, PROMPT, **kwargs)
    with pytest.raises(ValueError, match="corpus is empty"):
        mw.FeatureView(random_sae(64, 8, RESID), m, PROMPT, corpus=[])


# ----- the corpus scan against brute force ------------------------------------------------------


def test_scan_reads_the_corpus_windows(fv: Any, brute: dict[str, Any]) -> None:
    rows = brute["rows"]
    assert len(rows) > len(CORPUS)  # the long text gave several windows; batches of 3 are padded
    assert fv.n_windows == len(rows) and all(torch.equal(a, b) for a, b in zip(fv._rows, rows))
    assert fv.n_tokens == sum(len(r) for r in rows)
    assert fv.progress == {"done": math.ceil(len(rows) / 3), "total": math.ceil(len(rows) / 3)}
    assert fv._scanned == len(brute["where"]) == fv.n_tokens - len(rows)  # every token but the BOS of each window


def test_density_and_fires_equal_brute_force(fv: Any, brute: dict[str, Any]) -> None:
    flat = brute["flat"]
    fires = (flat > 0).sum(0)
    assert fv._fires.tolist() == fires.tolist()
    torch.testing.assert_close(fv.density, fires.float() / flat.shape[0])
    assert 0 < float(fv.density[0]) < 1 and float(fv.density[D_SAE - 1]) == 0.0  # features of very different density
    assert len(set(fires.tolist())) > D_SAE // 2


def test_examples_equal_a_brute_force_sort(fv: Any, native_model: Any, brute: dict[str, Any]) -> None:
    flat, where, rows, acts = brute["flat"], brute["where"], brute["rows"], brute["acts"]
    for f in range(D_SAE):
        examples = fv.examples(f)
        want = flat[:, f].sort(descending=True, stable=True).values[:K]
        want = want[want > 0]  # only contexts where the feature fires are examples
        assert len(examples) == len(want)
        torch.testing.assert_close(torch.tensor([e.value for e in examples]), want, atol=1e-5, rtol=1e-5)
        assert [e.value for e in examples] == sorted((e.value for e in examples), reverse=True)  # best first
        for e in examples:
            assert (e.window, e.position) in where  # never a BOS position
            assert float(acts[e.window][e.position, f]) == pytest.approx(e.value, abs=1e-5)
            start, end = max(0, e.position - 4), min(len(rows[e.window]), e.position + 3)
            assert e.max_index == e.position - start and e.source == min(e.window, len(SENTENCES))
            assert e.tokens == native_model.to_str_tokens(rows[e.window][start:end])
            torch.testing.assert_close(e.activations, acts[e.window][start:end, f], atol=1e-5, rtol=1e-5)
            assert float(e.activations[e.max_index]) == pytest.approx(e.value, abs=1e-5)
        if len(want):  # the best example's window peaks at its max_index
            best = examples[0]
            assert float(best.activations.max()) == pytest.approx(float(best.activations[best.max_index]), abs=1e-5)
    assert fv.examples(3) is fv.examples(3)  # cached until the scan moves on


def test_histogram_counts_sum_to_the_firing_count(fv: Any, brute: dict[str, Any]) -> None:
    flat = brute["flat"]
    counts = fv._histogram.counts
    assert counts.shape == (D_SAE, 32)
    assert counts.sum(1).tolist() == fv._fires.tolist() == (flat > 0).sum(0).tolist()
    for f in range(D_SAE):
        lo, hi = fv._histogram.edges(f)
        positive = flat[:, f][flat[:, f] > 0]
        if positive.numel() == 0:
            assert (lo, hi) == (0.0, 0.0) and int(counts[f].sum()) == 0
            continue
        top = float(positive.max())
        assert (
            lo == 0.0 and hi / 2 <= top < hi and math.log2(hi) == round(math.log2(hi))
        )  # a power of two above the max
        want = torch.bincount((positive / hi * 32).long().clamp(0, 31), minlength=32)
        assert counts[f].tolist() == want.tolist()


def test_feature_acts_equal_brute_force(fv: Any, native_model: Any, sae: SparseAutoencoder) -> None:
    for i, text in enumerate(PROMPTS):
        tokens = native_model.to_tokens(text)
        want = encode_rows(native_model, RESID, sae, [tokens[0]])[0]
        torch.testing.assert_close(fv.feature_acts(i), want, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(fv.feature_acts(text), want, atol=1e-5, rtol=1e-5)
    other = "The quick brown fox."  # not one of the prompts: any text works
    want = encode_rows(native_model, RESID, sae, [native_model.to_tokens(other)[0]])[0]
    torch.testing.assert_close(fv.feature_acts(other), want, atol=1e-5, rtol=1e-5)


def test_before_the_scan_and_restart(
    native_model: Any, sae: SparseAutoencoder, capture: Callable, ask: Callable
) -> None:
    fv = mw.FeatureView(sae, native_model, PROMPTS, corpus=CORPUS, k=3, autostart=False)
    assert fv.status == "idle" and fv.examples(0) == [] and float(fv.density.sum()) == 0.0
    sent = capture(fv)
    content, _ = reply_of(sent, ask(fv, "feature", {"feature": 0}))
    result = content["result"]
    assert content["ok"] and result["max"] is None and result["fires"] == 0 and result["density"] == 0.0
    assert result["examples"] == [] and result["histogram"]["lo"] == 0.0 and result["histogram"]["hi"] == 0.0
    fv.start()
    fv.wait(60)
    assert fv.status == "done" and len(fv.examples(0)) == 3
    first = fv._fires.clone()
    revision = fv.revision
    fv.start()  # a rescan starts from an empty state: the counts are not doubled
    fv.wait(60)
    assert fv.revision == 2 * revision and torch.equal(fv._fires, first)


# ----- a known answer: hand-built features on hook_embed ------------------------------------------


@pytest.fixture(scope="module")
def planted(native_model: Any) -> dict[str, Any]:
    """Feature 0 fires exactly on the corpus's most common token, feature 1 exactly on BOS (= the pad id), feature 2's decoder
    is W_U[:, j] (promotes token j), feature 3's is -W_U[:, j] (suppresses it). hook_embed holds W_E[token]."""
    m = native_model
    W_E, W_U = m.W_E.detach(), m.W_U.detach()
    bos = m.tokenizer.bos_token_id
    text = torch.cat([r[1:] for r in windows_of(m, CORPUS)])
    at = int(text.bincount().argmax())
    assert m.tokenizer.pad_token_id == bos and at != bos
    sae = SparseAutoencoder(64, 4, "relu", hook_name="hook_embed", generator=torch.Generator().manual_seed(3))
    margins = {}
    with torch.no_grad():
        for f, token in ((0, at), (1, bos)):
            u = W_E[token] / W_E[token].dot(W_E[token])  # W_E[token] . u == 1
            others = torch.cat([W_E[:token], W_E[token + 1 :]]) @ u
            assert float(others.max()) < 0.9  # a clean detector: every other token stays well below
            sae.W_enc[:, f] = u
            sae.b_enc[f] = -(1 + float(others.max())) / 2
            margins[f] = (1 - float(others.max())) / 2
        j = 123
        sae.W_enc[:, 2:] = 0
        sae.b_enc[2:] = -1.0  # never fire
        sae.W_dec[2] = W_U[:, j]
        sae.W_dec[3] = -W_U[:, j]
    return {"sae": sae, "at": at, "bos": bos, "j": j, "margins": margins}


def test_planted_features_fire_exactly_where_expected(
    native_model: Any, planted: dict[str, Any], capture: Callable, ask: Callable
) -> None:
    m, at = native_model, planted["at"]
    fv = mw.FeatureView(planted["sae"], m, PROMPTS, corpus=CORPUS, k=4, batch_size=3, context=3, after=1).wait(60)
    assert fv.status == "done", fv.error
    assert fv.hook == "hook_embed"
    rows = windows_of(m, CORPUS)
    assert any(len(r) < max(len(x) for x in rows) for r in rows)  # batches hold padding (pad id == BOS id)
    occurrences = [(d, p) for d, r in enumerate(rows) for p in range(1, len(r)) if int(r[p]) == at]
    n_text = sum(len(r) - 1 for r in rows)
    assert len(occurrences) > 4
    label = m.to_str_tokens(torch.tensor([at]))[0]

    # the detector of token `at`: its count, from the token ids alone
    assert int(fv._fires[0]) == len(occurrences) and float(fv.density[0]) == pytest.approx(len(occurrences) / n_text)
    examples = fv.examples(0)
    assert len(examples) == 4 and all((e.window, e.position) in occurrences for e in examples)
    assert all(
        e.value == pytest.approx(planted["margins"][0], abs=1e-5) and e.tokens[e.max_index] == label for e in examples
    )
    assert int(fv._histogram.counts[0].sum()) == len(occurrences)

    # BOS detector: fires on every BOS and every pad, all of which the scan leaves out
    assert int(fv._fires[1]) == 0 and float(fv.density[1]) == 0.0 and int(fv._histogram.counts[1].sum()) == 0
    assert all(e.position > 0 and e.value == 0.0 for e in fv.examples(1))
    acts = fv.feature_acts(0)
    tokens = m.to_tokens(PROMPTS[0])[0]
    assert float(acts[0, 1]) == pytest.approx(planted["margins"][1], abs=1e-5) and torch.all(
        acts[1:, 1] == 0
    )  # the prompt keeps its BOS
    assert ((acts[:, 0] > 0) == (tokens == at)).all()

    sent = capture(fv)
    content, buffers = reply_of(sent, ask(fv, "feature", {"feature": 1, "prompt_index": 0}))
    result = content["result"]
    assert content["ok"] and result["fires"] == 0 and result["density"] == 0.0 and result["max"] == 0.0
    np.testing.assert_allclose(decode_array(result["prompt_acts"], buffers), acts[:, 1].numpy(), atol=1e-6)

    # decoder rows along +-W_U[:, j]: token j is promoted most by feature 2 and suppressed most by feature 3
    j = planted["j"]
    label = m.to_str_tokens(torch.tensor([j]))[0]
    W_U = m.W_U.detach()
    torch.testing.assert_close(fv.logits(2), W_U[:, j] @ W_U)
    for f, key in ((2, "promoted"), (3, "suppressed")):
        content, _ = reply_of(sent, ask(fv, "feature", {"feature": f}))
        items = content["result"][key]
        assert items[0]["token"] == label, (key, items[:3])
        assert abs(items[0]["value"]) == pytest.approx(float(W_U[:, j].dot(W_U[:, j])), rel=1e-5)
        assert content["result"]["fires"] == 0


# ----- requests ---------------------------------------------------------------------------------


def test_prompt_request(fv: Any, native_model: Any, capture: Callable, ask: Callable) -> None:
    sent = capture(fv)
    for i, text in enumerate(PROMPTS):
        content, buffers = reply_of(sent, ask(fv, "prompt", {"prompt_index": i}))
        assert content["ok"], content
        result = content["result"]
        assert result["prompt_index"] == i and result["tokens"] == native_model.to_str_tokens(text)
        assert result["top_ids"]["dtype"] == "int32" and result["top_values"]["dtype"] == "float32"
        ids, values = decode_array(result["top_ids"], buffers), decode_array(result["top_values"], buffers)
        seq = len(result["tokens"])
        assert ids.shape == values.shape == (seq, 8)
        assert (np.diff(values, axis=1) <= 0).all()  # strongest first
        assert ((ids == -1) == (values == 0)).all() and (values >= 0).all()
        assert (ids == -1).any() and (ids >= 0).any()  # some tokens have fewer than 8 features on
        want = fv.feature_acts(i).topk(8, dim=-1)
        np.testing.assert_allclose(values, want.values.numpy(), atol=1e-6)
        fired = values > 0
        assert (ids[fired] == want.indices.numpy()[fired]).all()
        acts = fv.feature_acts(i).numpy()
        for s in range(seq):  # exactly the features that fire, up to 8 of them
            assert int(fired[s].sum()) == min(8, int((acts[s] > 0).sum()))


def test_prompt_request_with_fewer_features_than_8(native_model: Any, capture: Callable, ask: Callable) -> None:
    fv = mw.FeatureView(random_sae(64, 3, RESID), native_model, PROMPT, autostart=False)
    sent = capture(fv)
    content, buffers = reply_of(sent, ask(fv, "prompt", {"prompt_index": 0}))
    ids = decode_array(content["result"]["top_ids"], buffers)
    assert content["ok"] and ids.shape == (len(content["result"]["tokens"]), 3)


def test_feature_request(
    fv: Any, native_model: Any, sae: SparseAutoencoder, brute: dict[str, Any], capture: Callable, ask: Callable
) -> None:
    sent = capture(fv)
    flat = brute["flat"]
    W_U = native_model.W_U.detach()
    for f in (0, 4, D_SAE - 1):
        content, buffers = reply_of(sent, ask(fv, "feature", {"feature": f, "prompt_index": 1}))
        assert content["ok"], content
        r = content["result"]
        fires = int((flat[:, f] > 0).sum())
        assert r["feature"] == f and r["revision"] == fv.revision and r["fires"] == fires
        assert r["density"] == pytest.approx(fires / flat.shape[0])
        assert r["max"] == pytest.approx(float(flat[:, f].max()), abs=1e-5)
        assert r["prompt_acts"]["dtype"] == "float32"
        np.testing.assert_allclose(decode_array(r["prompt_acts"], buffers), fv.feature_acts(1)[:, f].numpy(), atol=1e-6)
        counts = decode_array(r["histogram"]["counts"], buffers)
        assert (
            counts.dtype == np.int32 and counts.tolist() == fv._histogram.counts[f].tolist() and counts.sum() == fires
        )
        assert (r["histogram"]["lo"], r["histogram"]["hi"]) == fv._histogram.edges(f)

        logits = sae.W_dec[f].detach() @ W_U
        torch.testing.assert_close(fv.logits(f), logits)
        up, down = logits.topk(10), (-logits).topk(10)
        assert [p["token"] for p in r["promoted"]] == native_model.to_str_tokens(up.indices)
        assert [p["token"] for p in r["suppressed"]] == native_model.to_str_tokens(down.indices)
        np.testing.assert_allclose([p["value"] for p in r["promoted"]], up.values.numpy(), rtol=1e-6)
        np.testing.assert_allclose([p["value"] for p in r["suppressed"]], -down.values.numpy(), rtol=1e-6)
        promoted, suppressed = [p["value"] for p in r["promoted"]], [p["value"] for p in r["suppressed"]]
        assert (
            promoted == sorted(promoted, reverse=True)
            and suppressed == sorted(suppressed)
            and suppressed[0] < 0 < promoted[0]
        )

        examples = fv.examples(f)
        assert [(e["tokens"], e["max_index"], e["window"], e["position"], e["source"]) for e in r["examples"]] == [
            (e.tokens, e.max_index, e.window, e.position, e.source) for e in examples
        ]
        assert r["example_values"]["dtype"] == "float32"
        np.testing.assert_allclose(decode_array(r["example_values"], buffers), [e.value for e in examples], rtol=1e-6)
        acts = decode_array(r["example_acts"], buffers)
        assert r["example_acts"]["dtype"] == "float16" and acts.shape == (
            len(examples),
            max((len(e.tokens) for e in examples), default=0),
        )
        for row, e in zip(acts, examples):
            np.testing.assert_allclose(row[: len(e.tokens)], e.activations.numpy(), rtol=2e-3, atol=2e-3)
            assert np.isnan(row[len(e.tokens) :]).all()

    content, buffers = reply_of(sent, ask(fv, "feature", {"feature": 2}))  # no prompt: no prompt_acts
    assert content["ok"] and decode_array(content["result"]["prompt_acts"], buffers).shape == (0,)


def test_bad_request_params_give_error_replies(fv: Any, capture: Callable, ask: Callable) -> None:
    sent = capture(fv)
    for method, params, message in [
        (
            "feature",
            {"feature": D_SAE},
            rf"feature must be in 0\.\.{D_SAE - 1} \(the SAE has d_sae={D_SAE}\), got {D_SAE}",
        ),
        ("feature", {"feature": -1}, rf"feature must be in 0\.\.{D_SAE - 1}"),
        ("feature", {}, "a feature is an integer id, got None"),
        ("feature", {"feature": "3"}, "a feature is an integer id, got '3'"),
        ("feature", {"feature": True}, "a feature is an integer id, got True"),
        ("feature", {"feature": 0, "prompt_index": 2}, r"prompt_index must index prompts \(0\.\.1\), got 2"),
        (
            "feature",
            {"feature": 0, "prompt_index": "0"},
            "request parameter 'prompt_index' must be an integer, got '0'",
        ),
        ("prompt", {"prompt_index": 2}, r"prompt_index must index prompts \(0\.\.1\), got 2"),
        ("prompt", {"prompt_index": -1}, r"prompt_index must index prompts \(0\.\.1\), got -1"),
        ("prompt", {}, "request parameter 'prompt_index' must be an integer, got None"),
        ("nonsense", {}, "unknown method 'nonsense'"),
    ]:
        assert re.search(message, error_of(sent, ask(fv, method, params))), (method, params)
    content, _ = reply_of(sent, ask(fv, "prompt", {"prompt_index": 0}))  # the widget still serves
    assert content["ok"]


def test_selected_and_prompt_index_are_validated(native_model: Any, sae: SparseAutoencoder) -> None:
    fv = mw.FeatureView(sae, native_model, PROMPTS, autostart=False)
    fv.selected = {"feature": 7}
    assert fv.selected == {"feature": 7}
    fv.selected = {}
    assert fv.selected == {"feature": None}
    for value, message in [
        ({"feature": D_SAE}, rf"feature must be in 0\.\.{D_SAE - 1} \(the SAE has d_sae={D_SAE}\), got {D_SAE}"),
        ({"feature": -2}, rf"feature must be in 0\.\.{D_SAE - 1}"),
        ({"feature": "7"}, "a feature is an integer id, got '7'"),
        ({"feature": True}, "a feature is an integer id, got True"),
        ({"feature": 1, "layer": 0}, r"selected takes the key 'feature'; got unknown \['layer'\]"),
    ]:
        with pytest.raises(traitlets.TraitError, match=message):
            fv.selected = value
    assert fv.selected == {"feature": None}
    with pytest.raises(traitlets.TraitError, match=r"prompt_index must index prompts \(0\.\.1\), got 2"):
        fv.prompt_index = 2
    fv.prompt_index = 1
    assert fv.prompt_index == 1


def test_prompts_added_from_the_view(
    native_model: Any, sae: SparseAutoencoder, capture: Callable, ask: Callable
) -> None:
    fv = mw.FeatureView(sae, native_model, PROMPTS, autostart=False)
    sent = capture(fv)
    new = "The lazy dog sat."
    # one message from the view, prompt_index listed first
    fv.set_state({"prompt_index": 2, "prompts": [*PROMPTS, new]})
    assert fv.prompts == [*PROMPTS, new] and fv.prompt_index == 2
    content, buffers = reply_of(sent, ask(fv, "prompt", {"prompt_index": 2}))
    assert content["ok"] and content["result"]["tokens"] == native_model.to_str_tokens(new)
    want = encode_rows(native_model, RESID, sae, [native_model.to_tokens(new)[0]])[0]
    np.testing.assert_allclose(
        decode_array(content["result"]["top_values"], buffers), want.topk(8, dim=-1).values.numpy(), atol=1e-5
    )
    content, buffers = reply_of(sent, ask(fv, "feature", {"feature": 0, "prompt_index": 2}))
    np.testing.assert_allclose(decode_array(content["result"]["prompt_acts"], buffers), want[:, 0].numpy(), atol=1e-5)

    # from Python, the same way
    fv.prompts = [*fv.prompts, "Hello world!"]
    fv.prompt_index = len(fv.prompts) - 1
    content, _ = reply_of(sent, ask(fv, "prompt", {"prompt_index": fv.prompt_index}))
    assert content["ok"] and content["result"]["tokens"] == native_model.to_str_tokens("Hello world!")


def test_a_too_long_prompt_gives_an_error_reply(
    native_model: Any, sae: SparseAutoencoder, capture: Callable, ask: Callable
) -> None:
    fv = mw.FeatureView(sae, native_model, PROMPTS, autostart=False)
    sent = capture(fv)
    long = " ".join(SENTENCES)
    n = native_model.to_tokens(long, truncate=False).shape[1]
    assert n > 64
    fv.set_state({"prompts": [*PROMPTS, long], "prompt_index": 2})
    message = rf"prompt is {n} tokens long but the model's context \(n_ctx\) is 64"
    assert re.search(message, error_of(sent, ask(fv, "prompt", {"prompt_index": 2})))
    assert re.search(message, error_of(sent, ask(fv, "feature", {"feature": 0, "prompt_index": 2})))
    with pytest.raises(ValueError, match=message):
        fv.feature_acts(2)
    content, _ = reply_of(sent, ask(fv, "prompt", {"prompt_index": 0}))  # the kernel side is unharmed
    assert content["ok"]


def test_a_blank_prompt_from_the_view_gives_an_error_reply(
    native_model: Any, sae: SparseAutoencoder, capture: Callable, ask: Callable
) -> None:
    fv = mw.FeatureView(sae, native_model, PROMPTS, autostart=False)
    sent = capture(fv)
    fv.set_state({"prompts": [*PROMPTS, "   "], "prompt_index": 2})
    assert "prompt is empty" in error_of(sent, ask(fv, "prompt", {"prompt_index": 2}))


# ----- logits for hooks other than the residual stream ------------------------------------------------


def test_mlp_post_promotes_through_w_out(mlp_model: Any, capture: Callable, ask: Callable) -> None:
    m = mlp_model
    hook = "blocks.1.mlp.hook_post"
    tokens = m.to_tokens(PROMPT)
    _, cache = m.run_with_cache(tokens, names_filter=[hook, "blocks.1.hook_mlp_out"])
    W_out, W_U = m.blocks[1].mlp.W_out.detach(), m.W_U.detach()
    assert W_out.shape == (128, 64)  # the path the view uses is the one the model runs:
    torch.testing.assert_close(
        cache[hook] @ W_out + m.blocks[1].mlp.b_out, cache["blocks.1.hook_mlp_out"], atol=1e-5, rtol=1e-5
    )

    sae = random_sae(128, 6, hook, seed=1)
    fv = mw.FeatureView(sae, m, PROMPT, k=3).wait(60)
    assert fv.status == "done", fv.error
    sent = capture(fv)
    for f in range(6):
        logits = sae.W_dec[f].detach() @ W_out @ W_U
        torch.testing.assert_close(fv.logits(f), logits, atol=1e-5, rtol=1e-5)
        content, _ = reply_of(sent, ask(fv, "feature", {"feature": f}))
        r = content["result"]
        assert [p["token"] for p in r["promoted"]] == m.to_str_tokens(logits.topk(10).indices)
        assert [p["token"] for p in r["suppressed"]] == m.to_str_tokens((-logits).topk(10).indices)
        np.testing.assert_allclose(
            [p["value"] for p in r["promoted"]], logits.topk(10).values.numpy(), rtol=1e-4, atol=1e-5
        )
    brute = encode_rows(m, hook, sae, [tokens[0]])[0]
    torch.testing.assert_close(fv.feature_acts(0), brute, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(
    ("model_name", "hook", "d_in"),
    [
        ("mlp_model", "blocks.0.mlp.hook_pre", 128),  # before the nonlinearity
        ("native_model", "blocks.0.attn.hook_z", 64),  # 64 units like the residual stream, but not it
        ("native_model", "blocks.0.ln1.hook_normalized", 64),
    ],
)
def test_no_linear_path_gives_empty_logit_lists(
    request: pytest.FixtureRequest, model_name: str, hook: str, d_in: int, capture: Callable, ask: Callable
) -> None:
    m = request.getfixturevalue(model_name)
    fv = mw.FeatureView(random_sae(d_in, 4, hook), m, PROMPT, k=2).wait(60)
    assert fv.status == "done", fv.error
    assert fv.logits(0) is None
    sent = capture(fv)
    content, _ = reply_of(sent, ask(fv, "feature", {"feature": 0, "prompt_index": 0}))
    r = content["result"]
    assert content["ok"] and r["promoted"] == [] and r["suppressed"] == []
    assert len(r["examples"]) == 2 and r["fires"] == int(fv._fires[0])  # the rest of the dashboard is there


def test_other_residual_hooks_unembed_directly(native_model: Any) -> None:
    W_U = native_model.W_U.detach()
    for hook in ("blocks.1.hook_resid_pre", "blocks.0.hook_attn_out", "hook_embed", "blocks.1.hook_resid_post"):
        sae = random_sae(64, 4, hook, seed=2)
        fv = mw.FeatureView(sae, native_model, PROMPT, autostart=False)
        torch.testing.assert_close(fv.logits(3), sae.W_dec[3].detach() @ W_U)
    with pytest.raises(IndexError, match=r"feature must be in 0\.\.3"):
        fv.logits(4)
    with pytest.raises(IndexError, match=r"feature must be in 0\.\.3"):
        fv.examples(4)
    with pytest.raises(TypeError, match="a feature is an integer id"):
        fv.examples(1.0)
