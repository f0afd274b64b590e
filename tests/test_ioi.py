"""IOI prompts (mi_widgets.datasets.ioi) and the bundled ioi-4l model: the data is right, the model does the
task on held-out frames and names, and the circuit heads its config reports really behave as reported."""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

import pytest
import torch

from mi_widgets import zoo
from mi_widgets.datasets import ioi

NAME = "ioi-4l"


@pytest.fixture(scope="module")
def model() -> Any:
    return zoo.load(NAME)


@pytest.fixture(scope="module")
def meta() -> dict[str, Any]:
    return json.loads((zoo.model_dir(NAME) / "config.json").read_text())["training"]


@pytest.fixture(scope="module")
def heldout(model: Any) -> ioi.IOIData:
    return ioi.ioi_prompts(model, n=128, seed=11, split="heldout")


def name_ids(model: Any, words: tuple[str, ...]) -> set[int]:
    return {model.tokenizer.encode(" " + w, add_special_tokens=False)[0] for w in words}


def test_deterministic(model: Any) -> None:
    a, b = ioi.ioi_prompts(model, n=16, seed=5), ioi.ioi_prompts(model, n=16, seed=5)
    assert a.prompts == b.prompts and a.corrupted_prompts == b.corrupted_prompts
    assert torch.equal(a.clean, b.clean) and torch.equal(a.corrupted, b.corrupted)
    assert ioi.ioi_prompts(model, n=16, seed=6).prompts != a.prompts


def test_shapes_positions_and_answers(model: Any) -> None:
    data = ioi.ioi_prompts(model, n=32, seed=0)
    n, seq = data.clean.shape
    assert len(data) == n == 32 and data.corrupted.shape == (n, seq)
    assert data.clean.dtype == torch.long and data.clean.device == next(model.parameters()).device
    rows = torch.arange(n)
    assert torch.equal(data.clean[rows, data.positions["IO"]], data.answers)
    assert torch.equal(data.clean[rows, data.positions["S1"]], data.wrong)
    assert torch.equal(data.clean[rows, data.positions["S2"]], data.wrong)
    assert (data.positions["end"] == seq - 1).all()
    assert (data.clean[:, 0] == model.tokenizer.bos_token_id).all()
    for i in range(n):
        assert model.tokenizer.decode(data.answers[i]) == " " + data.io_names[i]
        assert data.prompts[i].endswith(" to")


def test_abba_baba_half_each(model: Any) -> None:
    data = ioi.ioi_prompts(model, n=20, seed=3)
    assert data.order.count("ABBA") == data.order.count("BABA") == 10
    for i, order in enumerate(data.order):
        assert data.templates[i].startswith(order)
        io, s1 = int(data.positions["IO"][i]), int(data.positions["S1"][i])
        assert (io < s1) == (order == "ABBA")


def test_abc_corruption(model: Any) -> None:
    data = ioi.ioi_prompts(model, n=32, seed=1)
    rows = torch.arange(len(data))
    slots = [data.corrupted[rows, data.positions[k]] for k in ("IO", "S1", "S2")]
    names = name_ids(model, ioi.NAMES)
    for i in range(len(data)):
        three = {int(s[i]) for s in slots}
        assert len(three) == 3 and three <= names
        assert int(data.answers[i]) not in three and int(data.wrong[i]) not in three
    # Same frame, place and object: only the three name slots differ.
    differ = (data.clean != data.corrupted).nonzero()[:, 1]
    name_pos = torch.cat([data.positions[k] for k in ("IO", "S1", "S2")])
    assert set(differ.tolist()) <= set(name_pos.tolist())


def test_heldout_split_uses_only_heldout_words(model: Any, heldout: ioi.IOIData) -> None:
    assert set(heldout.io_names) | set(heldout.s_names) <= set(ioi.HELDOUT_NAMES)
    assert {t.split("-")[1] for t in heldout.templates} <= set(ioi.HELDOUT_FRAMES)
    rows = torch.arange(len(heldout))
    held = name_ids(model, ioi.HELDOUT_NAMES)
    for k in ("IO", "S1", "S2"):
        assert set(heldout.corrupted[rows, heldout.positions[k]].tolist()) <= held
    train = ioi.ioi_prompts(model, n=32, seed=0, split="train")
    assert set(train.io_names) | set(train.s_names) <= set(ioi.TRAIN_NAMES)
    assert not set(ioi.TRAIN_NAMES) & set(ioi.HELDOUT_NAMES)
    assert not set(ioi.TRAIN_FRAMES) & set(ioi.HELDOUT_FRAMES)


def test_no_tokenizer_is_a_clear_error(model: Any) -> None:
    with pytest.raises(ValueError, match="tokenizer"):
        ioi.ioi_prompts(SimpleNamespace(tokenizer=None, cfg=model.cfg))
    with pytest.raises(ValueError, match="split"):
        ioi.ioi_prompts(model, split="test")  # type: ignore[arg-type]


def test_multi_token_names_are_a_clear_error() -> None:
    other = zoo.load("induction-2l")  # its 512-token vocabulary splits every name
    with pytest.raises(ValueError) as err:
        ioi.ioi_prompts(other)
    assert "Mary" in str(err.value) and "induction-2l" in str(err.value)
    ours = zoo.load(NAME)
    with pytest.raises(ValueError, match="Zyxqwv"):
        ioi.ioi_prompts(ours, names=["Mary", "Zyxqwv", "Qwzxyv"])
    assert len(ioi.ioi_prompts(ours, n=4, names=["Mary", "John", "Tom", "Zyxqwv"])) == 4  # the split one is dropped


@torch.no_grad()
def test_model_does_the_task_on_heldout(model: Any, heldout: ioi.IOIData) -> None:
    ld = heldout.logit_diff(model(heldout.clean))
    assert float((ld > 0).float().mean()) > 0.9
    assert float(ld.mean()) > 2.0
    abc = heldout.logit_diff(model(heldout.corrupted))
    assert abs(float(abc.mean())) < float(ld.mean()) / 4  # ABC prompts hold no answer: no preference on average


def _heads(meta: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return meta["circuit"]["heads"].get(kind, [])


def _lh(head: str) -> tuple[int, int]:
    layer, h = head[1:].split("H")
    return int(layer), int(h)


@torch.no_grad()
def test_reported_end_heads_behave(model: Any, meta: dict[str, Any], heldout: ioi.IOIData) -> None:
    """The reported END heads (name movers: attend IO; S-suppression: attend S and write -S) attend where
    reported on fresh held-out prompts, write IO - S directly, and TransformerLens patching of their output
    matters; the most important of them is the most important head of all."""
    from transformer_lens import patching

    reported = [(r, "IO") for r in _heads(meta, "name_movers")] + [(r, "S") for r in _heads(meta, "s_suppression")]
    assert reported, f"{NAME} reports no head that moves a name at END"
    logits, cache = model.run_with_cache(heldout.clean)
    rows, pos = torch.arange(len(heldout)), heldout.positions
    ld_clean = heldout.logit_diff(logits).mean()
    ld_corr = heldout.logit_diff(model(heldout.corrupted)).mean()

    def metric(out: torch.Tensor) -> torch.Tensor:
        return (heldout.logit_diff(out).mean() - ld_corr) / (ld_clean - ld_corr)

    effect = patching.get_act_patch_attn_head_out_all_pos(model, heldout.corrupted, cache, metric)
    for row, target in reported:
        layer, h = _lh(row["head"])
        pattern = cache["pattern", layer][:, h]
        to_io = float(pattern[rows, pos["end"], pos["IO"]].mean())
        to_s = float((pattern[rows, pos["end"], pos["S1"]] + pattern[rows, pos["end"], pos["S2"]]).mean())
        if target == "IO":
            assert to_io > 0.35 and to_io > 2 * to_s, (row["head"], to_io, to_s)
        else:
            assert to_s > 0.35 and to_s > 2 * to_io, (row["head"], to_io, to_s)
        assert float(effect[layer, h]) > 0.5 * row["patch_all_pos"] > 0.05, (row["head"], float(effect[layer, h]))
    top = max((r for r, _ in reported), key=lambda r: r["patch_all_pos"])
    assert float(effect[_lh(top["head"])]) > 0.2
    assert float(effect[_lh(top["head"])]) == float(effect.max())


def _path(model: Any, receivers: list[tuple[int, int, str]], senders: list[tuple[int, int]]) -> torch.Tensor:
    from mi_widgets import PathPatching

    data = ioi.ioi_prompts(model, n=64, seed=12, split="heldout")
    path = PathPatching(model, data, receivers=receivers, senders=senders, autostart=False)
    path.start()
    path.wait()
    res = 1 - path.results["path"]
    path.close()
    return res


def test_reported_s_suppression_inputs_behave(model: Any, meta: dict[str, Any]) -> None:
    """Path patching (mi_widgets.PathPatching) from the reported input heads into the S-suppression heads'
    values: each carries a real share of the logit difference on fresh held-out prompts, and none acts through
    their queries (they find S2 as the last name, not through earlier heads)."""
    supp = [_lh(r["head"]) for r in _heads(meta, "s_suppression")]
    feeders = [r for r in _heads(meta, "s_suppression_inputs") if r["path_to_s_suppression_v"] > 0.1]
    assert supp and feeders, f"{NAME} reports S-suppression heads and the heads that feed their values"
    senders = [_lh(r["head"]) for r in feeders]
    res = _path(model, [(layer, h, "v") for layer, h in supp], senders)
    for row in feeders:
        assert float(res[_lh(row["head"])]) > 0.5 * row["path_to_s_suppression_v"], (row["head"], res)
    via_q = _path(model, [(layer, h, "q") for layer, h in supp], senders)
    assert float(via_q.nan_to_num().abs().max()) < 0.05, via_q


@torch.no_grad()
def test_no_duplicate_token_induction_or_name_mover_heads(
    model: Any, meta: dict[str, Any], heldout: ioi.IOIData
) -> None:
    """What the README says the model did not learn, checked: no head attends S2 -> S1 (duplicate token) or
    S2+1 -> S1+1 (induction), and no head attends from END to IO more than to S2."""
    assert not _heads(meta, "name_movers") and not _heads(meta, "duplicate_token") and not _heads(meta, "induction")
    _, cache = model.run_with_cache(heldout.clean, names_filter=lambda n: n.endswith("hook_pattern"))
    rows, pos = torch.arange(len(heldout)), heldout.positions
    for layer in range(model.cfg.n_layers):
        pattern = cache["pattern", layer]
        assert float(pattern[rows, :, pos["S2"], pos["S1"]].mean(0).max()) < 0.2, layer
        assert float(pattern[rows, :, pos["S2"] + 1, pos["S1"] + 1].mean(0).max()) < 0.3, layer
        to_io = pattern[rows, :, pos["end"], pos["IO"]].mean(0)
        assert float(to_io.max()) < 0.45, (layer, to_io)
