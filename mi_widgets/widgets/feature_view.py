"""FeatureView: which SAE features fire on which tokens, and a dashboard for one feature.

For the prompts, the view asks for each token's strongest features. For the corpus, a streamed
scan (:class:`~.streaming.StreamingWidget`) reads the hook batch by batch, encodes it with the SAE
on the SAE's device and keeps, for every feature, a running top-k of contexts
(:class:`~mi_widgets.analysis.top_examples.RunningTopK`), a running histogram of its positive
activations (:class:`~mi_widgets.analysis.histogram.RunningHistogram`) and a firing count: memory
O(d_sae x (k + bins)) however long the corpus. One feature's dashboard adds the tokens its
decoder direction promotes and suppresses through the unembedding.

Works with mi_widgets' own :class:`~mi_widgets.analysis.sae.SparseAutoencoder` and SAELens ``SAE``.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import torch
import traitlets

from ..analysis.activations import check_per_token_hook
from ..analysis.histogram import RunningHistogram
from ..analysis.sae import as_sae
from ..analysis.top_examples import RunningTopK
from ..capture.adapter import adapter_for
from ..capture.corpus import Example, TopContexts, plan_corpus, probe_units, text_batch
from ..capture.inputs import as_index, check_text, describe
from ..transport import picture
from ..transport.protocol import Context, Reply
from .base import add_examples, endpoint, int_param, static_asset
from .streaming import StreamingWidget

TOP_PER_TOKEN = 8
N_LOGITS = 10
ENCODE_CHUNK = 4096  # tokens encoded at once: bounds the [tokens, d_sae] feature tensor


class FeatureView(StreamingWidget):
    """SAE features on ``prompts`` (top features per token) and one feature's dashboard over ``corpus``.

    ``FeatureView(sae, model, prompts, corpus=texts)``: ``sae`` is a
    :class:`~mi_widgets.analysis.sae.SparseAutoencoder` or a SAELens ``SAE``; its hook comes from
    the SAE (``sae.hook_name``, or SAELens' ``cfg.metadata.hook_name``) unless ``hook=`` is given.
    ``corpus`` (texts or token ids; default: the prompts) is scanned in the background for each
    feature's top ``k`` contexts, activation histogram and firing density.

    ``fv.selected = {"feature": 123}`` shows that feature (clicking one in the view sets it);
    ``fv.prompt_index`` is the index into ``prompts`` of the prompt the view shows;
    ``fv.feature_acts(prompt)`` is ``[seq, d_sae]``; ``fv.examples(f)`` the top contexts found so far.
    """

    _esm = static_asset("feature_view.js")
    _css = static_asset("feature_view.css")
    _thread_name = "mi_widgets-feature-view"

    hook = traitlets.Unicode(read_only=True).tag(sync=True)
    d_sae = traitlets.Int(read_only=True).tag(sync=True)
    k = traitlets.Int(read_only=True).tag(sync=True)
    n_windows = traitlets.Int(0, read_only=True).tag(sync=True)
    n_tokens = traitlets.Int(0, read_only=True).tag(sync=True)
    prompts = traitlets.List(traitlets.Unicode()).tag(sync=True)
    prompt_index = traitlets.Int(0).tag(sync=True)
    selected = traitlets.Dict().tag(sync=True)

    def __init__(
        self,
        sae: Any,
        model: Any,
        prompts: str | Sequence[str],
        corpus: Sequence[str] | str | torch.Tensor | Sequence[torch.Tensor] | None = None,
        *,
        hook: str | None = None,
        k: int = 10,
        batch_size: int = 8,
        bins: int = 32,
        context: int = 20,
        after: int = 4,
        autostart: bool = True,
    ) -> None:
        adapter = adapter_for(model)
        if not adapter.has_tokenizer:
            raise ValueError("FeatureView shows prompts as text, but this model has no tokenizer")
        for name, value in (("k", k), ("batch_size", batch_size), ("context", context), ("after", after)):
            if (
                isinstance(value, bool)
                or not isinstance(value, int)
                or value < (0 if name in ("context", "after") else 1)
            ):
                raise ValueError(
                    f"{name} must be a{' non-negative' if name in ('context', 'after') else ' positive'} integer, got {value!r}"
                )
        info = as_sae(sae)
        name = hook or info.hook_name
        if not name:
            raise ValueError(
                "this SAE does not say which hook it reads (no hook_name): pass hook='blocks.0.hook_resid_post' or similar"
            )
        self._adapter, self._info = adapter, info
        self._hook = check_per_token_hook(adapter.resolve_hook(name))
        prompt_list = _prompt_texts(prompts)
        self._rows, self._sources = plan_corpus(adapter, corpus if corpus is not None else prompt_list)
        units = probe_units(adapter, self._hook, self._rows[0])
        if units != info.d_in:
            raise ValueError(
                f"the SAE reads vectors of width d_in={info.d_in}, but {self._hook} holds {units} units per token: "
                "pick the hook the SAE was trained on"
            )
        self._batch_size, self._context, self._after = batch_size, context, after
        self._k, self._bins = k, bins
        self._logits_basis = adapter.direct_logit_map(self._hook, info.d_in)
        self._prompt_cache: dict[str, tuple[list[str], torch.Tensor]] = {}
        self._lock = threading.Lock()
        # The running statistics change batch by batch on the scan thread; a reply reads them under this
        # lock, so its counts, histogram and edges all belong to the same batch.
        self._stats = threading.Lock()
        self._contexts = TopContexts(adapter, self._hook, self._rows, self._sources, context, after)
        self._reset()
        super().__init__()
        self.set_trait("hook", self._hook)
        self.set_trait("d_sae", info.d_sae)
        self.set_trait("k", k)
        self.set_trait("n_windows", len(self._rows))
        self.set_trait("n_tokens", sum(int(r.shape[0]) for r in self._rows))
        self.prompts = prompt_list
        self.selected = {"feature": None}
        if autostart:
            self.start()

    # ----- Python API ------------------------------------------------------------------

    def feature_acts(self, prompt: int | str = 0) -> torch.Tensor:
        """Feature activations ``[seq, d_sae]`` on a prompt (an index into ``prompts``, or a text)."""
        if isinstance(prompt, str):
            return self._encode_prompt(prompt)[1]
        prompts = self.prompts
        index = as_index("prompt", prompt, TypeError, "an index into prompts (an integer) or a text")
        if not 0 <= index < len(prompts):  # not Python's negative indexing: the view's indices, as elsewhere
            raise IndexError(f"prompt must index prompts (0..{len(prompts) - 1}), got {index}")
        return self._encode_prompt(prompts[index])[1]

    def examples(self, feature: int) -> list[Example]:
        """Feature ``feature``'s top contexts in the corpus found so far, best first."""
        return self._examples(self._check_feature(feature))

    @property
    def density(self) -> torch.Tensor:
        """``[d_sae]``: fraction of the scanned corpus tokens on which each feature fires."""
        return (self._fires.float() / max(1, self._scanned)).cpu()

    def _picture(self) -> Any:
        """The shown prompt coloured by the selected feature (else its most active one) and that feature's top
        contexts found so far."""
        labels, feats = self._encode_prompt(self.prompts[self.prompt_index])
        feature = self.selected.get("feature")
        if feature is None:
            feature = int(feats.max(0).values.argmax())
        acts = feats[:, feature].float().cpu()
        examples = self.examples(feature)[:4]
        top = max([float(acts.max())] + [float(e.activations.max()) for e in examples] + [1e-9])
        panels = [picture.Panel(picture.token_strip(labels, acts, 0.0, top, width=640), f"prompt {self.prompt_index}")]
        for i, e in enumerate(examples):
            strip = picture.token_strip(e.tokens, e.activations, 0.0, top, width=640, max_tokens=64)
            panels.append(picture.Panel(strip, f"top context {i + 1}: {e.value:.3g}"))
        title = (
            f"FeatureView: feature {feature} of {self.d_sae} at {self.hook}, density {float(self.density[feature]):.2%}"
        )
        return picture.compose(title, panels, self._picture_note())

    @traitlets.validate("selected")
    def _check_selected(self, proposal: dict[str, Any]) -> dict[str, Any]:
        value = dict(proposal["value"])
        unknown = set(value) - {"feature"}
        if unknown:
            raise traitlets.TraitError(f"selected takes the key 'feature'; got unknown {sorted(unknown)}")
        feature = value.get("feature")
        if feature is None:
            return {"feature": None}
        try:
            return {"feature": self._check_feature(feature)}
        except (TypeError, IndexError) as exc:
            raise traitlets.TraitError(str(exc)) from None

    @traitlets.validate("prompt_index")
    def _check_prompt_index(self, proposal: dict[str, Any]) -> int:
        # True is not 1
        index = as_index("prompt_index", proposal["value"], traitlets.TraitError, "an index into prompts")
        if not 0 <= index < max(1, len(self.prompts)):
            raise traitlets.TraitError(f"prompt_index must index prompts (0..{len(self.prompts) - 1}), got {index}")
        return index

    @traitlets.validate("prompts")
    def _check_prompts(self, proposal: dict[str, Any]) -> list[str]:
        """Prompts typed in the view arrive here: text the tokenizer (and the kernel's JSON) cannot take is refused."""
        value = list(proposal["value"])
        for i, text in enumerate(value):
            try:
                check_text(text, f"prompts[{i}]")
            except ValueError as exc:
                raise traitlets.TraitError(str(exc)) from None
        return value

    def _check_feature(self, feature: Any) -> int:
        try:
            feature = as_index("feature", feature)  # numpy ints too; 1.7 is refused, not truncated
        except TypeError:
            raise TypeError(f"a feature is an integer id, got {feature!r}") from None
        if not 0 <= feature < self._info.d_sae:
            raise IndexError(
                f"feature must be in 0..{self._info.d_sae - 1} (the SAE has d_sae={self._info.d_sae}), got {feature}"
            )
        return feature

    # ----- encoding ----------------------------------------------------------------------

    def _features(self, activation: torch.Tensor) -> torch.Tensor:
        """Hook activation ``[batch, seq, ...]`` -> SAE features ``[batch, seq, d_sae]`` (float32, SAE's device)."""
        flat = activation.reshape(activation.shape[0], activation.shape[1], -1)
        with torch.no_grad():
            return self._info.encode(flat.to(self._info.device)).float()

    def _encode_prompt(self, text: str) -> tuple[list[str], torch.Tensor]:
        with self._lock:
            hit = self._prompt_cache.get(text)
        if hit is not None:
            return hit
        tokens = self._adapter.to_tokens(text)
        got: list[torch.Tensor] = []
        self._adapter.each_activation(tokens, [self._hook], lambda _, a: got.append(self._features(a)[0].cpu()))
        entry = (self._adapter.token_labels(tokens[0]), got[0])
        with self._lock:
            if len(self._prompt_cache) > 16:
                self._prompt_cache.clear()
            self._prompt_cache[text] = entry
        return entry

    # ----- the corpus scan ---------------------------------------------------------------

    def _n_steps(self) -> int:
        return -(-len(self._rows) // self._batch_size)

    def _reset(self) -> None:
        device, d_sae = self._info.device, self._info.d_sae
        self._topk = RunningTopK(d_sae, self._k, device)
        self._histogram = RunningHistogram(d_sae, self._bins, device)
        self._fires = torch.zeros(d_sae, dtype=torch.long, device=device)
        self._scanned = 0
        self._contexts.clear()

    def _scan_step(self, index: int) -> None:
        start = index * self._batch_size
        rows = self._rows[start : start + self._batch_size]
        tokens, mask = text_batch(self._adapter, rows)
        device = self._info.device
        windows = torch.arange(start, start + len(rows), device=device)
        mask = mask.to(device)

        def reduce(_: int, activation: torch.Tensor) -> None:
            feats = self._features(activation)
            with self._stats:
                self._topk.update(feats, windows, mask)
                live = feats[mask]
                for chunk in live.split(ENCODE_CHUNK):
                    self._histogram.update(chunk)
                    self._fires += (chunk > 0).sum(0)
                self._scanned += int(mask.sum())

        self._adapter.each_activation(tokens.to(self._adapter.device), [self._hook], reduce)

    # ----- one feature ---------------------------------------------------------------------

    def _examples(self, feature: int) -> list[Example]:
        return self._contexts.examples(
            self._topk, feature, lambda a: self._features(a)[..., feature], positive_only=True
        )

    def logits(self, feature: int) -> torch.Tensor | None:
        """``[d_vocab]``: how feature ``feature``'s decoder direction moves each logit (None if the hook cannot be unembedded)."""
        if self._logits_basis is None:
            return None
        direction = self._info.W_dec[self._check_feature(feature)].float()
        return self._logits_basis(direction).cpu()

    # ----- request handlers --------------------------------------------------------------

    def _prompt_text(self, params: dict[str, Any]) -> tuple[int, str]:
        """The request's ``prompt_index`` and the text of that prompt."""
        index = int_param(params, "prompt_index")
        prompts = self.prompts
        if not 0 <= index < len(prompts):
            raise ValueError(f"prompt_index must index prompts (0..{len(prompts) - 1}), got {index}")
        return index, prompts[index]

    @endpoint("prompt", background=True)
    def _serve_prompt(self, params: dict[str, Any], buffers: list[memoryview], ctx: Context) -> Reply:
        index, text = self._prompt_text(params)
        labels, feats = self._encode_prompt(text)
        k = min(TOP_PER_TOKEN, feats.shape[-1])
        values, ids = feats.topk(k, dim=-1)
        ids = torch.where(values > 0, ids, torch.full_like(ids, -1))
        reply = Reply({"prompt_index": index, "tokens": labels})
        reply.result["top_ids"] = reply.add_array(ids.int(), "int32")
        reply.result["top_values"] = reply.add_array(torch.where(values > 0, values, 0.0), "float32")
        return reply

    @endpoint("feature", background=True)
    def _serve_feature(self, params: dict[str, Any], buffers: list[memoryview], ctx: Context) -> Reply:
        feature = self._check_feature(params.get("feature"))
        prompt_acts = None
        if params.get("prompt_index") is not None:
            prompt_acts = self._encode_prompt(self._prompt_text(params)[1])[1][:, feature]
        with self._stats:  # one batch's statistics (the examples below may include a later batch)
            fires, scanned = int(self._fires[feature]), self._scanned
            top = float(self._topk.snapshot()[0][feature, 0])
            lo, hi = self._histogram.edges(feature)
            counts = self._histogram.counts[feature].int().cpu()
        examples = self._examples(feature)
        ctx.raise_if_cancelled()
        promoted, suppressed = self._top_logits(feature)
        reply = Reply(
            {
                "feature": feature,
                "fires": fires,
                "density": fires / scanned if scanned else 0.0,
                "max": top if top > float("-inf") else None,
                "promoted": promoted,
                "suppressed": suppressed,
            }
        )
        r = reply.result
        r["prompt_acts"] = reply.add_array(prompt_acts if prompt_acts is not None else torch.zeros(0), "float32")
        r["histogram"] = {"counts": reply.add_array(counts, "int32"), "lo": lo, "hi": hi}
        add_examples(reply, examples)
        return reply

    def _top_logits(self, feature: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """Promoted and suppressed tokens (both empty when the hook does not reach the logits linearly)."""
        logits = self.logits(feature)
        if logits is None:
            return [], []
        n = min(N_LOGITS, logits.shape[0])
        up, down = logits.topk(n), (-logits).topk(n)
        labels = self._adapter.token_labels(torch.cat([up.indices, down.indices]))
        promoted = [{"token": t, "value": float(v)} for t, v in zip(labels[:n], up.values)]
        suppressed = [{"token": t, "value": float(-v)} for t, v in zip(labels[n:], down.values)]
        return promoted, suppressed


def _prompt_texts(prompts: Any) -> list[str]:
    """``prompts`` as a list of non-blank, encodable texts, or a ValueError that names the bad item."""
    expected = "prompts must be a non-blank string or a list of non-blank strings"
    if isinstance(prompts, str):
        items: list[Any] = [prompts]
    elif isinstance(prompts, (list, tuple)):
        items = list(prompts)
    else:
        raise ValueError(f"{expected}, got {describe(prompts)}")
    if not items:
        raise ValueError(f"{expected}, got an empty {type(prompts).__name__}")
    for i, text in enumerate(items):
        name = "prompts" if isinstance(prompts, str) else f"prompts[{i}]"
        if not isinstance(text, str):
            raise ValueError(f"{expected} (FeatureView shows prompts as text): {name} is {describe(text)}")
        if not text.strip():
            raise ValueError(f"{expected}: {name} is blank ({text!r})")
        check_text(text, name)
    return items
