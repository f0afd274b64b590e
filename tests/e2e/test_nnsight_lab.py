"""AttentionView on an nnsight model in a real JupyterLab: it renders, a click on a head reaches Python, and the
patterns are the HF model's own ``output_attentions``.

The kernel builds everything offline: a small byte-level BPE tokenizer and a random 2-layer GPT-2 with eager
attention, wrapped in ``nnsight.LanguageModel``.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .lab import OUTPUT, NotebookPage, cell_point, notebook_in_lab

pytestmark = pytest.mark.e2e

PROMPT = "The cat sat on the mat. The cat sat on the"
VIEW = "[data-testid=attention-view]"

SETUP = """\
import os, warnings
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"
warnings.simplefilter("ignore")
import torch, transformers, nnsight
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
import mi_widgets as mw

special = "<|endoftext|>"
bpe = Tokenizer(models.BPE())
bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
bpe.decoder = decoders.ByteLevel()
bpe.train_from_iterator(["The cat sat on the mat."] * 3, trainers.BpeTrainer(
    vocab_size=300, special_tokens=[special], initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False))
tok = transformers.PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token=special, eos_token=special,
                                           unk_token=special, pad_token=special)
torch.manual_seed(0)
config = transformers.GPT2Config(n_layer=2, n_head=4, n_embd=64, n_positions=64, vocab_size=len(tok),
                                 bos_token_id=0, eos_token_id=0)
config._attn_implementation = "eager"
hf = transformers.GPT2LMHeadModel(config).eval()
lm = nnsight.LanguageModel(hf, tokenizer=tok)
"""


@pytest.fixture(scope="module")
def notebook(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NotebookPage]:
    cells = [SETUP, f"view = mw.AttentionView(lm, {PROMPT!r}, layer=1, head=0)\nview"]
    with notebook_in_lab(tmp_path_factory.mktemp("lab"), "nnsight.ipynb", cells, height=1000) as nb:
        nb.page.wait_for_selector(f"{VIEW}[data-painted='{_revision(nb)}:1:0']", timeout=90_000)
        yield nb
        nb.page.screenshot(path=str(OUTPUT / "nnsight_attention_final.png"))


def _revision(nb: NotebookPage) -> int:
    return int(nb.python_value("view.revision"))


def test_renders_the_models_own_patterns(notebook: NotebookPage) -> None:
    tokens = notebook.python_value("view.tokens")
    strip = notebook.page.locator(f"{VIEW} [data-testid=token-strip] [data-testid=token]")
    assert strip.count() == len(tokens) and tokens[0] == "<|endoftext|>"
    assert notebook.python_value("type(view._adapter).__name__") == "NNsightAdapter"
    expected = (
        "float((view.patterns - torch.stack([a[0] for a in "
        "hf(mw.capture.adapter_for(lm).to_tokens(view.prompt), output_attentions=True).attentions])).abs().max())"
    )
    assert notebook.python_value(expected) < 1e-6
    view = notebook.page.locator(VIEW)
    view.scroll_into_view_if_needed()
    view.screenshot(path=str(OUTPUT / "nnsight_attention.png"))


def test_click_head_syncs_selection(notebook: NotebookPage) -> None:
    x, y = cell_point(notebook.page, f"{VIEW} [data-testid=head-grid]", row=0, col=2)
    notebook.page.mouse.click(x, y)
    notebook.page.wait_for_selector(f"{VIEW}[data-painted='{_revision(notebook)}:0:2']", timeout=10_000)
    selected = notebook.python_eventually("view.selected['head']", 2)
    assert selected == 2
    assert notebook.python_value("view.selected")["layer"] == 0
