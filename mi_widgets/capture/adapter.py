"""Model adapter: one duck-typed face over TransformerLens 4.x and 2.x models.

Widgets never touch a model directly. The adapter validates input, tokenizes,
runs the model with only the hooks a view needs under ``torch.no_grad()`` and
leaves results on the model's device, so the same code serves a CPU laptop and
a GPU in Colab. Every forward pass runs on the model's analysis twin
(:mod:`.twin`): same weights, eval mode, no hooks but ours, so views and
background scans never see the user's hooks or dropout and the user's calls
never see ours.
"""

from __future__ import annotations

import difflib
import re
import threading
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import torch

from ..analysis.attribution import FinalNorm
from ..analysis.composition import COMPOSITION_MODES, composition_scores
from .inputs import check_text, check_weights_loaded, index_in, prompt_ids, visible_texts
from .twin import analysis_twin, forget_last_patterns

PATTERN_HOOK = "blocks.{layer}.attn.hook_pattern"
EMBED_HOOK = "hook_embed"
POS_EMBED_HOOK = "hook_pos_embed"

# Modules some bridges mount between the last residual stream and the logits, which ln_final -> unembed
# would skip (the same list TransformerLens 4.3's own logit lens refuses): OPT-350m's project_out,
# BERT-style heads, DeepSeek-V4's hc_head, BD3LM's sigma_map, AST's classifier norm.
READOUT_TRANSFORM_COMPONENTS = ("project_out", "mlm_head", "prediction_head", "hc_head", "sigma_map", "classifier_ln")

# Hooks whose vectors live in the residual stream (so W_U reads them directly), and the MLP's hidden layer.
_RESID_HOOK = re.compile(r"(hook_resid_(pre|mid|post)|hook_attn_out|hook_mlp_out|hook_embed|hook_pos_embed)$")
_MLP_POST = re.compile(r"^blocks\.(\d+)\.mlp\.hook_post$")

# Per-layer shorthands users type ("mlp.post"), each meaning that hook point in every layer.
HOOK_SHORTHANDS: dict[str, str] = {
    "mlp.post": "blocks.{layer}.mlp.hook_post",
    "mlp.pre": "blocks.{layer}.mlp.hook_pre",
    "mlp_out": "blocks.{layer}.hook_mlp_out",
    "attn_out": "blocks.{layer}.hook_attn_out",
    "resid_pre": "blocks.{layer}.hook_resid_pre",
    "resid_mid": "blocks.{layer}.hook_resid_mid",
    "resid_post": "blocks.{layer}.hook_resid_post",
    "z": "blocks.{layer}.attn.hook_z",
    "pattern": PATTERN_HOOK,
}


class _StopForward(Exception):
    """Raised from the last hook a run needs, to skip the rest of the forward pass."""


class AdapterBase:
    """What every adapter (TransformerLens here, nnsight in ``nnsight_adapter.py``) derives the same way: the
    model's shape from its TransformerLens-style ``cfg``, hook shorthands from ``hook_names``/``resolve_hook``, and
    patterns and captures from ``each_activation``."""

    cfg: Any

    def hook_names(self) -> list[str]:
        raise NotImplementedError

    def resolve_hook(self, name: str) -> str:
        raise NotImplementedError

    @property
    def n_layers(self) -> int:
        return int(self.cfg.n_layers)

    @property
    def n_heads(self) -> int:
        return int(self.cfg.n_heads)

    @property
    def n_ctx(self) -> int:
        return int(self.cfg.n_ctx)

    def check_layer_head(self, layer: int, head: int) -> None:
        """An IndexError (or TypeError for a non-integer such as 1.7) unless ``layer``/``head`` index this model."""
        index_in("layer", layer, self.n_layers)
        index_in("head", head, self.n_heads)

    def each_activation(
        self, tokens: torch.Tensor, names: Sequence[str], fn: Callable[[int, torch.Tensor], None]
    ) -> None:
        raise NotImplementedError

    def attention_patterns(
        self,
        tokens: torch.Tensor,
        layers: Iterable[int] | None = None,
        on_layer: Callable[[int], None] | None = None,
    ) -> list[torch.Tensor]:
        """Attention patterns ``[n_heads, query, key]`` per layer, for batch item 0.

        ``on_layer(layer)`` runs as each layer's pattern arrives (progress,
        cancellation: an exception it raises aborts the run and removes the hooks).
        """
        found: dict[int, torch.Tensor] = {}

        def keep(layer: int, pattern: torch.Tensor) -> None:
            found[layer] = pattern[0].detach()
            if on_layer is not None:
                on_layer(layer)

        wanted = self.each_pattern(tokens, keep, layers)
        return [found[l] for l in wanted]

    def each_pattern(
        self,
        tokens: torch.Tensor,
        fn: Callable[[int, torch.Tensor], None],
        layers: Iterable[int] | None = None,
    ) -> list[int]:
        """Run the model and call ``fn(layer, pattern [batch, heads, query, key])`` inside each pattern hook.

        See :meth:`each_activation`. Returns the layers visited, in order.
        """
        wanted = sorted(set(range(self.n_layers) if layers is None else layers))
        for layer in wanted:
            self.check_layer_head(layer, 0)
        names = [PATTERN_HOOK.format(layer=l) for l in wanted]
        self.each_activation(tokens, names, lambda index, pattern: fn(wanted[index], pattern))
        return wanted

    def capture(self, tokens: torch.Tensor, names: Sequence[str]) -> dict[str, torch.Tensor]:
        """Activations of ``names`` (full hook names) for ``tokens``, on the model's device.

        For reductions over many batches prefer :meth:`each_activation`, which keeps nothing.
        """
        out: dict[str, torch.Tensor] = {}
        self.each_activation(tokens, names, lambda i, t: out.__setitem__(names[i], t.detach().clone()))
        return out

    def layer_hooks(self, spec: str) -> list[str]:
        """Hook names for ``spec``: a full name (``"blocks.1.mlp.hook_post"``) or a per-layer shorthand
        (``"mlp.post"``, ``"resid_post"``, ``"attn_out"``, ... see ``HOOK_SHORTHANDS``; ``_`` and ``.``
        are interchangeable), which means that hook in every layer, in layer order.
        """
        if not isinstance(spec, str) or not spec:
            raise TypeError(f"expected a hook name or shorthand as a string, got {spec!r}")
        if spec.startswith("blocks.") or spec in self.hook_names():
            return [self.resolve_hook(spec)]
        key = spec.removeprefix("hook_")
        for candidate in (key, key.replace("_", "."), key.replace(".", "_")):
            if candidate in HOOK_SHORTHANDS:
                template = HOOK_SHORTHANDS[candidate]
                return [self.resolve_hook(template.format(layer=layer)) for layer in range(self.n_layers)]
        close = difflib.get_close_matches(key, list(HOOK_SHORTHANDS), n=3, cutoff=0.5)
        hint = f"did you mean {', '.join(close)}?" if close else f"shorthands are {', '.join(HOOK_SHORTHANDS)}"
        raise ValueError(
            f"unknown hook {spec!r}: give a full hook name like 'blocks.0.mlp.hook_post' or a shorthand; {hint}"
        )


class ModelAdapter(AdapterBase):
    """Uniform access to a TransformerLens model (``TransformerBridge`` or ``HookedTransformer``)."""

    def __init__(self, model: Any) -> None:
        cfg = getattr(model, "cfg", None)
        missing = [a for a in ("n_layers", "n_heads", "n_ctx") if not hasattr(cfg, a)]
        if cfg is None or missing or not callable(getattr(model, "run_with_hooks", None)):
            raise TypeError(
                "expected a TransformerLens model (4.x TransformerBridge or 2.x HookedTransformer) "
                "with .cfg (n_layers, n_heads, n_ctx) and .run_with_hooks, or an nnsight LanguageModel, got "
                f"{type(model).__module__}.{type(model).__qualname__}"
            )
        check_weights_loaded(model)  # a meta-device model would fail deep inside torch at the first forward
        self.model = model
        self.cfg = cfg

    @property
    def device(self) -> torch.device:
        try:
            return next(self.model.parameters()).device
        except (AttributeError, StopIteration, TypeError):
            return torch.device(getattr(self.cfg, "device", None) or "cpu")

    @property
    def has_tokenizer(self) -> bool:
        return getattr(self.model, "tokenizer", None) is not None

    @property
    def bos_id(self) -> int | None:
        """The tokenizer's BOS id, or None (no tokenizer, or one without BOS)."""
        bos = getattr(getattr(self.model, "tokenizer", None), "bos_token_id", None)
        return int(bos) if bos is not None else None

    def hook_names(self) -> list[str]:
        hook_dict = getattr(self.model, "hook_dict", None)
        return sorted(hook_dict) if isinstance(hook_dict, dict) else []

    def resolve_hook(self, name: str) -> str:
        """Check that ``name`` is a hook point of this model (legacy 2.x aliases included)."""
        names = self.hook_names()
        if not names or name in names:
            return name
        close = difflib.get_close_matches(name, names, n=5, cutoff=0.6)
        hint = f"; did you mean {', '.join(close)}?" if close else f"; it has {len(names)} hooks, e.g. {names[:3]}"
        raise ValueError(f"unknown hook name {name!r} for this model{hint}")

    def resolve_patch_hook(self, name: str) -> str:
        """:meth:`resolve_hook` for a hook whose activation a patch replaces: refuses, by name, one whose edits
        the model discards.

        TransformerLens 4.x bridges whose attention the HF module computes whole (OPT) fire ``hook_pattern``
        and ``hook_attn_scores`` after the fact: reading them is exact, but an edit there changes nothing
        (TransformerLens only warns), so a patch would silently show no effect. One tiny run with the hook's
        layer-0 activation zeroed tells (per hook kind, kept on the adapter).
        """
        name = self.resolve_hook(name)
        kind = re.sub(r"^blocks\.\d+\.", "blocks.0.", name)
        known = self.__dict__.setdefault("_edits_take_effect", {})
        if kind not in known:
            known[kind] = self._edit_takes_effect(kind)
        if not known[kind]:
            raise ValueError(
                f"{name} can be read but not patched on this {type(self.model).__qualname__}: its attention is "
                "computed inside the HF module, which reports this activation after using it, so an edit there does "
                "not change the output (patch head_out, q, k, v, resid_pre, attn_out or mlp_out instead)"
            )
        return name

    def _edit_takes_effect(self, name: str) -> bool:
        """Whether zeroing the activation at ``name`` on a two-token run changes the logits at all."""
        tokens = torch.arange(2, device=self.device)[None]  # two different tokens: a pattern has something to weigh
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # TransformerLens's "the edit is discarded"
            if "_unedited" not in self.__dict__:  # one plain run serves every hook's check
                self._unedited = self.run_patched(tokens, {})
            edited = self.run_patched(tokens, {name: torch.zeros_like})
        return not torch.equal(self._unedited, edited)

    def runner(self) -> tuple[Any, threading.RLock]:
        """The model's analysis twin and the lock every forward pass on it holds (see :mod:`.twin`)."""
        return analysis_twin(self.model)

    def final_norm(self, resid: torch.Tensor) -> torch.Tensor:
        """The model's own final norm of ``resid [..., d_model]`` (identity without one)."""
        twin, lock = self.runner()
        with lock, torch.no_grad():
            return _final_norm(twin, resid)

    def unembed(self, resid: torch.Tensor) -> torch.Tensor:
        """Logits from residual-stream vectors ``[..., d_model]`` through the model's own final norm and unembedding.

        Then the model's own step after the unembedding (:meth:`logits_transform`: Gemma 2's soft
        cap, a logit scale), so the last residual stream gives exactly the logits the model returns.
        """
        twin, lock = self.runner()  # once: the twin's check walks every parameter
        with lock, torch.no_grad():
            logits = _unembed_linear(twin, _final_norm(twin, resid))
        return self.logits_transform(logits)

    def to_tokens(self, prompt: str | torch.Tensor | Sequence[int]) -> torch.Tensor:
        """Tokens ``[1, seq]`` on the model's device, from a prompt string or token ids.

        The one place prompts are checked, so every widget reports a bad one the same way (what was
        expected, what came) instead of an error from deep inside torch or the tokenizer.
        """
        if isinstance(prompt, str):
            if not prompt.strip():
                raise ValueError("prompt is empty: expected some text to run the model on")
            check_text(prompt)
            if not self.has_tokenizer:
                raise ValueError(
                    "this model has no tokenizer, so it cannot read a text prompt: pass token ids "
                    "(a 1-D tensor or list of ints) instead, or attach a tokenizer to the model"
                )
            tokens = self.model.to_tokens(prompt, truncate=False)  # TL truncates to n_ctx by default
        else:
            tokens = prompt_ids(prompt)
            if tokens.numel() == 0:
                raise ValueError("token ids are empty: expected at least one token")
            if tokens.dtype.is_floating_point or tokens.dtype == torch.bool:
                raise TypeError(f"token ids must be integers, got dtype {tokens.dtype}")
            if tokens.ndim == 2 and tokens.shape[0] == 1:
                tokens = tokens[0]
            if tokens.ndim != 1:
                raise ValueError(f"expected token ids of shape [seq] or [1, seq], got shape {list(tokens.shape)}")
            d_vocab = getattr(self.cfg, "d_vocab", None)
            if d_vocab is not None and (int(tokens.min()) < 0 or int(tokens.max()) >= int(d_vocab)):
                raise ValueError(
                    f"token ids must be in 0..{int(d_vocab) - 1}, got {int(tokens.min())}..{int(tokens.max())}"
                )
            tokens = tokens.to(torch.long)[None]  # int32 / uint8 ids would fail in the embedding
        seq = int(tokens.shape[-1])
        if seq > self.n_ctx:
            raise ValueError(f"prompt is {seq} tokens long but the model's context (n_ctx) is {self.n_ctx}: shorten it")
        return tokens.to(self.device)

    def text_ids(self, text: str) -> torch.Tensor:
        """Token ids ``[seq]`` of ``text`` without a BOS (as it would follow a prompt)."""
        return self.model.to_tokens(text, prepend_bos=False, truncate=False)[0]

    def token_labels(self, tokens: torch.Tensor) -> list[str]:
        """Readable token strings, safe to send to the view (see :func:`.inputs.visible_text`);
        ``<id>`` labels when the model has no tokenizer."""
        ids = tokens.reshape(-1)
        if self.has_tokenizer:
            try:
                return visible_texts(self.model.to_str_tokens(ids))
            except Exception:  # a tokenizer that cannot decode some id still gets labels
                pass
        return [f"<{int(i)}>" for i in ids.tolist()]

    def each_activation(
        self, tokens: torch.Tensor, names: Sequence[str], fn: Callable[[int, torch.Tensor], None]
    ) -> None:
        """Run the model and call ``fn(i, activation)`` inside the hook of ``names[i]``.

        Only these hooks are registered, under ``torch.no_grad()``, and the forward
        pass stops once every one has fired, so ``fn`` can reduce on the device and
        nothing else is kept. An exception from ``fn`` aborts the run (progress,
        cancellation) and the hooks are removed either way. The run is on the model's
        analysis twin, under its lock: the user's own hooks and forward passes on the
        model (from a cell, while a scan runs) and these never meet.
        """
        self._run(tokens, names, fn, stop_early=True)

    # ----- the readout: what the model does after its last residual stream ----------------------

    def unembed_before_transform(self, resid: torch.Tensor) -> torch.Tensor:
        """``unembed(ln_final(resid))`` without the model's post-unembedding step: the logits a linear attribution splits."""
        twin, lock = self.runner()
        with lock, torch.no_grad():
            return _unembed_linear(twin, _final_norm(twin, resid))

    def logits_transform(self, logits: torch.Tensor) -> torch.Tensor:
        """The model's own step after the unembedding, applied to ``logits [..., d_vocab]``; identity for most models.

        TransformerLens 4.x declares it on the bridge's architecture adapter
        (``apply_output_logits_transform``: Gemma 2's ``cap * tanh(x / cap)``, Cohere's or Granite's
        logit scale), as its own logit lens applies it; the bridge's ``unembed`` module does not.
        TransformerLens 2.x applies ``cfg.output_logits_soft_cap`` in ``forward``.
        """
        # A pure function of the architecture (no module state), so it needs neither the twin nor its lock.
        transform = getattr(getattr(self.model, "adapter", None), "apply_output_logits_transform", None)
        with torch.no_grad():
            if callable(transform):
                return transform(logits)
            cap = self.logit_softcap
            return logits if cap is None else cap * torch.tanh(logits / cap)

    @property
    def logit_softcap(self) -> float | None:
        """The soft cap ``c`` of the output logits (``c * tanh(x / c)``, Gemma 2), or None when the model has none."""
        for name in ("output_logits_soft_cap", "final_logit_softcapping"):
            cap = getattr(self.cfg, name, None)
            if isinstance(cap, (int, float)) and not isinstance(cap, bool) and cap > 0:
                return float(cap)
        return None

    def run_to_logits(
        self, tokens: torch.Tensor, names: Sequence[str], fn: Callable[[int, torch.Tensor], None]
    ) -> torch.Tensor:
        """Like :meth:`each_activation`, but the forward pass runs to the end and returns its logits ``[batch, seq, d_vocab]``.

        For checks against what the model really outputs on this very run (no second forward pass).
        """
        logits = self._run(tokens, names, fn, stop_early=False)
        if not isinstance(logits, torch.Tensor) or logits.ndim != 3:
            raise TypeError(
                f"expected the model to return logits [batch, seq, d_vocab], got "
                f"{type(logits).__name__} {list(getattr(logits, 'shape', []))}"
            )
        return logits

    def run_patched(
        self,
        tokens: torch.Tensor,
        hooks: Mapping[str, Callable[[torch.Tensor], torch.Tensor | None]],
        *,
        stop_at: str | None = None,
        grad: bool = False,
    ) -> torch.Tensor | None:
        """One forward pass on the twin in which each hook's function may replace its activation.

        A function returns the new activation (same shape) or None to leave it. With ``stop_at`` (one
        of the hooks) the run ends right after that hook and returns None; otherwise it returns the
        logits. ``grad=True`` runs with autograd on, for gradients with respect to activations (take
        them with ``torch.autograd.grad``: nothing accumulates in the model's ``.grad``).
        """
        resolved = {self.resolve_hook(name): fn for name, fn in hooks.items()}
        if stop_at is not None and self.resolve_hook(stop_at) not in resolved:
            raise ValueError(f"stop_at must be one of the hooks, got {stop_at!r}")
        stop = None if stop_at is None else self.resolve_hook(stop_at)
        seen: set[str] = set()

        def bind(name: str, fn: Callable[[torch.Tensor], torch.Tensor | None]) -> Callable[..., Any]:
            def hook_fn(tensor: torch.Tensor, hook: Any) -> torch.Tensor | None:
                out = fn(tensor)
                seen.add(name)
                if name == stop:
                    raise _StopForward()
                return out

            return hook_fn

        twin, lock = self.runner()
        out = None
        with lock, torch.set_grad_enabled(grad):
            try:
                out = twin.run_with_hooks(
                    tokens,
                    return_type=None if stop is not None else "logits",
                    fwd_hooks=[(name, bind(name, fn)) for name, fn in resolved.items()],
                )
            except _StopForward:
                pass
            finally:
                forget_last_patterns(twin)
        missing = [name for name in resolved if name not in seen]
        if missing:
            raise RuntimeError(f"the model ran but these hooks did not fire: {missing}")
        return out if stop is None else None

    # ----- weights: read from the model as it is, never changed --------------------------------
    # Everything that reads a weight lives here (analysis gets tensors): detached, in the model's dtype,
    # on the model's device, from TransformerLens 4.x bridges and 2.x HookedTransformers alike.

    @property
    def dtype(self) -> torch.dtype:
        """The dtype of the model's parameters (float32 when it has none to read)."""
        try:
            return next(self.model.parameters()).dtype
        except (AttributeError, StopIteration, TypeError):
            return torch.float32

    @property
    def has_mlp(self) -> bool:
        """False for attention-only models (``cfg.attn_only``)."""
        return not bool(getattr(self.cfg, "attn_only", False))

    @property
    def has_pos_embed(self) -> bool:
        """Token and positional embeddings apart only for learned absolute positions added to the residual stream.

        Rotary models (and TransformerLens 4.x bridges alias ``hook_pos_embed`` to the rotary
        embedding there) have no positional term: all that enters block 0 is one ``embed`` term.
        """
        names = set(self.hook_names())
        kind = getattr(self.cfg, "positional_embedding_type", "standard")
        return {EMBED_HOOK, POS_EMBED_HOOK} <= names and kind == "standard"

    def embed_weights(self) -> torch.Tensor:
        """``W_E [d_vocab, d_model]``, the token embedding; a ValueError if unreadable."""
        w_e = _param(self.model, "W_E")
        if w_e is None or w_e.ndim != 2:
            raise ValueError(
                f"cannot read the token embedding W_E [d_vocab, d_model] of this {type(self.model).__qualname__}"
            )
        return w_e

    def unembed_weights(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``W_U [d_model, d_vocab]`` and ``b_U [d_vocab]`` (None if the model has none); a ValueError if unreadable."""
        model = self.model
        w_u = _param(model, "W_U")
        if w_u is None or w_u.ndim != 2:
            raise ValueError(f"cannot read the unembedding W_U [d_model, d_vocab] of this {type(model).__qualname__}")
        return w_u, _param(model, "b_U")

    def attn_out_weights(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``W_O [layers, heads, d_head, d_model]`` and ``b_O [layers, d_model]`` (None if absent); a ValueError if
        ``W_O`` cannot be read (from the model, or stacked from its blocks)."""
        model = self.model
        w_o = _param(model, "W_O")
        if w_o is None:  # stack per block
            try:
                w_o = torch.stack([block.attn.W_O for block in model.blocks])
            except (AttributeError, TypeError, RuntimeError):
                w_o = None
        if w_o is None or w_o.ndim != 4:
            raise ValueError(
                f"cannot read the attention output weights W_O [layers, heads, d_head, d_model] of this "
                f"{type(model).__qualname__}; direct logit attribution needs them"
            )
        b_o = _param(model, "b_O")
        if b_o is None:
            try:
                b_o = torch.stack([block.attn.b_O for block in model.blocks])
            except (AttributeError, TypeError, RuntimeError):
                b_o = None
        return w_o, b_o

    def mlp_out_weight(self, layer: int) -> torch.Tensor | None:
        """Layer ``layer``'s MLP output weight ``W_out [d_mlp, d_model]``, or None where it cannot be read."""
        blocks = _blocks(self.model)
        if not 0 <= layer < len(blocks):
            return None
        w_out = getattr(getattr(blocks[layer], "mlp", None), "W_out", None)
        return w_out.detach() if isinstance(w_out, torch.Tensor) else None

    def final_norm_weights(self) -> FinalNorm:
        """The final norm's type, weight, bias and eps, from ``cfg.normalization_type`` and ``model.ln_final``.

        The weight is the effective one (Gemma's ``1 + w``); ``*Pre`` norms have theirs folded into the
        unembedding (weight and bias None). A ValueError for a norm type or module it cannot read.
        """
        model, cfg = self.model, self.cfg
        kind = getattr(cfg, "normalization_type", "LN")
        eps = float(getattr(cfg, "eps", 1e-5))
        if kind is None:
            return FinalNorm(None, None, None, eps)
        if kind not in ("LN", "LNPre", "RMS", "RMSPre"):
            raise ValueError(
                f"cannot attribute through a final norm of type {kind!r}: expected cfg.normalization_type "
                "LN, LNPre, RMS, RMSPre or None"
            )
        ln = getattr(model, "ln_final", None)
        if ln is None:
            raise ValueError(f"cfg.normalization_type is {kind!r} but the model has no ln_final module to read")
        weight = bias = None
        if not kind.endswith("Pre"):  # *Pre norms have their weights folded into the unembedding
            weight = _norm_weight(ln)
            bias = _param(ln, "b", "bias")
            if weight is None:
                raise ValueError(f"cannot read the final norm's weight (ln_final.w) of this {type(model).__qualname__}")
        return FinalNorm("LN" if kind.startswith("LN") else "RMS", weight, bias, eps)

    def post_attn_norms(self) -> list[FinalNorm | None]:
        """Per layer, the norm applied to the attention output before it joins the residual stream (Gemma 2's
        ``ln1_post``), or None where the block has none."""
        cfg = self.cfg
        default = str(getattr(cfg, "normalization_type", None) or "RMS")
        eps = float(getattr(cfg, "eps", 1e-5))
        norms: list[FinalNorm | None] = []
        for block in _blocks(self.model):
            ln = _submodule(block, "ln1_post")
            if ln is None or isinstance(ln, torch.nn.Identity):  # TL 2.x's post-"norm" of a model without norms
                norms.append(None)
                continue
            kind, eps_here = _norm_kind(ln, default), float(getattr(ln, "eps", eps))
            norms.append(FinalNorm(kind, _norm_weight(ln), _param(ln, "b", "bias"), eps_here))
        return norms

    def direct_logit_map(self, hook: str, d_in: int) -> Callable[[torch.Tensor], torch.Tensor] | None:
        """The linear map from a direction ``[d_in]`` written at ``hook`` to the logits it adds directly.

        ``d @ W_U`` for a hook in the residual stream (``hook_resid_*``, ``hook_attn_out``,
        ``hook_mlp_out``, the embeddings) of width ``d_model``, ``d @ W_out @ W_U`` for
        ``blocks.L.mlp.hook_post``; None when the direction reaches the logits otherwise (or the
        weights cannot be read). The map holds the model's own weights and computes on their device.
        """
        try:
            w_u, _ = self.unembed_weights()
        except ValueError:
            return None
        if _RESID_HOOK.search(hook) and d_in == w_u.shape[0]:
            return lambda d: d.to(w_u) @ w_u
        match = _MLP_POST.match(hook)
        w_out = self.mlp_out_weight(int(match.group(1))) if match else None
        if w_out is not None and w_out.shape == (d_in, w_u.shape[0]):
            return lambda d: d.to(w_out) @ w_out @ w_u
        return None

    @property
    def has_composition_scores(self) -> bool:
        """Whether composition scores can be computed: the model has stacked ``W_Q``, ``W_K``, ``W_V``, ``W_O``
        (TL 4.x and 2.x do); :meth:`composition_weights` reads them."""
        return all(hasattr(self.model, name) for name in ("W_Q", "W_K", "W_V", "W_O"))

    def composition_scores(self, mode: str = "K") -> torch.Tensor:
        """Q-, K- or V-composition scores ``[layers, heads, layers, heads]`` (writer, reader) from the weights.

        TransformerLens's definitions (``all_composition_scores``), computed by
        :func:`~mi_widgets.analysis.composition.composition_scores` from :meth:`composition_weights`: the
        weights as the residual stream meets them, norms folded in. TransformerLens 4.x bridges (unprocessed)
        would leave the norm weights out, which 2.x folds in when it loads a model. On the model's device.
        """
        if mode not in COMPOSITION_MODES:
            raise ValueError(f"mode must be one of {', '.join(COMPOSITION_MODES)}, got {mode!r}")
        if not self.has_composition_scores:
            raise TypeError(
                "expected a TransformerLens model with stacked W_Q, W_K, W_V, W_O (TransformerBridge or "
                f"HookedTransformer), got {type(self.model).__qualname__}"
            )
        with torch.no_grad():
            return composition_scores(*self.composition_weights(), mode)

    def composition_weights(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """``W_Q``, ``W_K``, ``W_V`` ``[layers, heads, d_model, d_head]`` and ``W_O`` ``[layers, heads, d_head, d_model]``
        as the residual stream meets them, detached, float32 or wider.

        Key/value heads are repeated for the query heads that share them (grouped-query attention: query head
        ``h`` reads ``h // (n_heads // n_kv_heads)``, as HF's ``repeat_kv``). Each block's input norm ``ln1`` is
        folded into its ``W_Q``/``W_K``/``W_V`` (its weight, Gemma's ``1 + w``; a LayerNorm's centring, which
        also covers 2.x's folded ``LNPre``), a post-attention norm (Gemma 2's ``ln1_post``) into ``W_O``, and
        with LayerNorms ``W_O``'s output centred (what 2.x's ``center_writing_weights`` does); the per-token
        scale of a norm does not change a score. So a 4.x bridge scores as 2.x scores the same model loaded
        with ``from_pretrained`` (folded and centred). Rotary models: the rotation of queries and keys is not
        in the weights, so Q- and K-composition are those of queries and keys at the same position.
        """
        n_heads = self.n_heads
        stacked = [_stacked(self.model, name) for name in ("W_Q", "W_K", "W_V", "W_O")]
        if any(w is None or w.ndim != 4 for w in stacked):
            raise ValueError(
                f"cannot read W_Q, W_K, W_V, W_O [layers, heads, ...] of this {type(self.model).__qualname__}"
            )
        w_q, w_k, w_v, w_o = (w.to(torch.promote_types(w.dtype, torch.float32)) for w in stacked)  # type: ignore[union-attr]
        w_k, w_v = (
            w.repeat_interleave(n_heads // w.shape[1], dim=1) if w.shape[1] != n_heads else w for w in (w_k, w_v)
        )
        default = str(getattr(self.cfg, "normalization_type", None) or "")
        reads = []
        for layer, block in enumerate(_blocks(self.model)):
            ln = _submodule(block, "ln1")
            if ln is None or isinstance(ln, torch.nn.Identity) or not default:
                reads.append((w_q[layer], w_k[layer], w_v[layer]))
                continue
            weight, centre = _norm_weight(ln), _norm_kind(ln, default) == "LN"

            def fold(w: torch.Tensor, weight: torch.Tensor | None = weight, centre: bool = centre) -> torch.Tensor:
                w = w if weight is None else w * weight.to(w)[:, None]  # [heads, d_model, d_head]
                return w - w.mean(-2, keepdim=True) if centre else w

            reads.append((fold(w_q[layer]), fold(w_k[layer]), fold(w_v[layer])))
        if reads:
            w_q, w_k, w_v = (torch.stack(ws) for ws in zip(*reads, strict=True))
        writes = []
        for layer, post in enumerate(self.post_attn_norms()):
            w = w_o[layer]
            if post is not None:
                w = w if post.weight is None else w * post.weight.to(w)
                w = w - w.mean(-1, keepdim=True) if post.kind == "LN" else w
            writes.append(w)
        if writes:
            w_o = torch.stack(writes)
        if default.startswith("LN"):  # every reader centres the residual stream: only W_O's centred part is read
            w_o = w_o - w_o.mean(-1, keepdim=True)
        return w_q, w_k, w_v, w_o

    def check_readout(self, what: str) -> None:
        """Refuse, by name, a model whose logits are not ``transform(unembed(ln_final(last hook_resid_post)))``.

        ``what`` names the analysis in the message ("the logit lens", "direct logit attribution").
        """
        model = self.model
        modules = getattr(model, "_modules", None) or {}
        mounted = [name for name in READOUT_TRANSFORM_COMPONENTS if name in modules]
        if mounted:
            raise ValueError(
                f"{what} reads the residual stream through the model's ln_final and unembed, but this "
                f"{type(model).__qualname__} has {', '.join(mounted)} on the way from its last residual stream to "
                "its logits, which that path would skip: this architecture's readout is not supported"
            )
        for layer, block in enumerate(getattr(model, "blocks", None) or []):
            if getattr(block, "hook_out_is_single_residual_stream", True) is False:
                raise ValueError(
                    f"{what} needs one residual stream [batch, position, d_model] per block, but blocks.{layer} "
                    f"({type(block).__name__}) carries several that the model combines before ln_final: "
                    "this architecture's residual stream is not supported"
                )

    def _run(
        self, tokens: torch.Tensor, names: Sequence[str], fn: Callable[[int, torch.Tensor], None], *, stop_early: bool
    ) -> Any:
        """One forward pass on the twin with ``fn`` in the hooks of ``names``; stopped after the last hook, or to the logits."""
        resolved = [self.resolve_hook(name) for name in names]
        if len(set(resolved)) != len(resolved):
            raise ValueError(f"hook names must be distinct, got {list(names)}")
        seen: set[int] = set()

        def call(tensor: torch.Tensor, hook: Any, index: int) -> None:
            fn(index, tensor)
            seen.add(index)
            if stop_early and len(seen) == len(resolved):
                raise _StopForward()

        hooks = [(name, _bind(call, index)) for index, name in enumerate(resolved)]
        twin, lock = self.runner()
        out = None
        with lock, torch.no_grad():
            try:
                out = twin.run_with_hooks(tokens, return_type=None if stop_early else "logits", fwd_hooks=hooks)
            except _StopForward:
                pass
            finally:
                forget_last_patterns(twin)
        missing = [resolved[i] for i in range(len(resolved)) if i not in seen]
        if missing:
            raise RuntimeError(
                f"the model ran but these hooks did not fire: {missing}; expected TransformerLens hook points "
                "(e.g. 'blocks.0.attn.hook_pattern')"
            )
        return out


def adapter_for(model: Any) -> Any:
    """The adapter for ``model``'s backend: :class:`ModelAdapter` for TransformerLens 4.x / 2.x models,
    :class:`~.nnsight_adapter.NNsightAdapter` for nnsight models; an adapter passed in is returned as is
    (``NNsightAdapter(lm, remote=True)``)."""
    from .nnsight_adapter import NNsightAdapter, is_nnsight_model

    if isinstance(model, (ModelAdapter, NNsightAdapter)):
        return model
    if is_nnsight_model(model):
        return NNsightAdapter(model)
    return ModelAdapter(model)


def require_transformer_lens(adapter: Any, view: str) -> None:
    """Refuse ``view`` by name on a backend that cannot serve it (it reads TransformerLens weights or modules)."""
    refuse = getattr(adapter, "require_transformer_lens", None)
    if callable(refuse):
        refuse(view)


def _bind(fn: Callable[..., None], index: int) -> Callable[[torch.Tensor, Any], None]:
    """A hook function that remembers what it was registered for (``hook.name`` may be an alias)."""

    def hook_fn(tensor: torch.Tensor, hook: Any) -> None:
        fn(tensor, hook, index)

    return hook_fn


# ----- reading weights and modules ---------------------------------------------------------------


def _param(module: Any, *names: str) -> torch.Tensor | None:
    """The first of ``names`` that is a tensor attribute of ``module``, detached; None if none is."""
    for name in names:
        try:
            value = getattr(module, name, None)
        except Exception:  # some bridges raise from properties they cannot compute
            value = None
        if isinstance(value, torch.Tensor):
            return value.detach()
    return None


def _stacked(model: Any, name: str) -> torch.Tensor | None:
    """The model's ``name`` (``W_Q`` ...) over layers, detached: read whole, or stacked from its blocks' ``attn``."""
    w = _param(model, name)
    if w is None:
        try:
            w = torch.stack([getattr(block.attn, name) for block in _blocks(model)]).detach()
        except (AttributeError, TypeError, RuntimeError):
            return None
    return w


def _norm_weight(ln: Any) -> torch.Tensor | None:
    """A norm's effective weight: Gemma's RMSNorm stores ``w`` and multiplies by ``1 + w``.

    TransformerLens 4.x bridges say so with ``uses_weight_offset`` (from ``cfg.rmsnorm_uses_offset``);
    2.x adds the 1 when it loads the weights.
    """
    weight = _param(ln, "w", "weight")
    if weight is not None and getattr(ln, "uses_weight_offset", False) is True:
        weight = weight + 1.0
    return weight


def _norm_kind(ln: Any, default: str) -> str:
    """``"RMS"`` or ``"LN"`` for a norm module (4.x bridges say ``uses_rms_norm``; 2.x classes are named so)."""
    rms = getattr(ln, "uses_rms_norm", None)
    if isinstance(rms, bool):
        return "RMS" if rms else "LN"
    name = type(ln).__name__
    if name.startswith("RMSNorm"):
        return "RMS"
    if name.startswith("LayerNorm"):
        return "LN"
    return "LN" if default.startswith("LN") else "RMS"


def _blocks(model: Any) -> list[Any]:
    try:
        return list(getattr(model, "blocks", None) or [])
    except TypeError:
        return []


def _submodule(module: Any, name: str) -> Any:
    """``module.name`` if it is a torch module (bridges may raise, or delegate to the HF layer, for absent names)."""
    try:
        value = getattr(module, name, None)
    except Exception:
        return None
    return value if isinstance(value, torch.nn.Module) else None


def _final_norm(twin: Any, resid: torch.Tensor) -> torch.Tensor:
    """The twin's final norm of ``resid`` (identity without one); the caller holds the twin's lock."""
    ln_final = getattr(twin, "ln_final", None)
    return ln_final(resid) if callable(ln_final) else resid


def _unembed_linear(twin: Any, x: torch.Tensor) -> torch.Tensor:
    """The twin's unembedding of normed ``x`` (no post-unembedding step); the caller holds the twin's lock."""
    unembed = getattr(twin, "unembed", None)
    if not callable(unembed):
        raise TypeError("this model has no unembed module, so residual vectors cannot be read as logits")
    return unembed(x)
