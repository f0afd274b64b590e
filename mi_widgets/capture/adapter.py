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
import threading
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch

from .inputs import check_text, check_weights_loaded, index_in, prompt_ids, visible_texts
from .twin import analysis_twin

PATTERN_HOOK = "blocks.{layer}.attn.hook_pattern"

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


class ModelAdapter:
    """Uniform access to a TransformerLens model (``TransformerBridge`` or ``HookedTransformer``)."""

    def __init__(self, model: Any) -> None:
        cfg = getattr(model, "cfg", None)
        missing = [a for a in ("n_layers", "n_heads", "n_ctx") if not hasattr(cfg, a)]
        if cfg is None or missing or not callable(getattr(model, "run_with_hooks", None)):
            raise TypeError(
                "expected a TransformerLens model (4.x TransformerBridge or 2.x HookedTransformer) "
                f"with .cfg (n_layers, n_heads, n_ctx) and .run_with_hooks, got {type(model).__module__}."
                f"{type(model).__qualname__}"
            )
        check_weights_loaded(model)  # a meta-device model would fail deep inside torch at the first forward
        self.model = model
        self.cfg = cfg

    @property
    def n_layers(self) -> int:
        return int(self.cfg.n_layers)

    @property
    def n_heads(self) -> int:
        return int(self.cfg.n_heads)

    @property
    def n_ctx(self) -> int:
        return int(self.cfg.n_ctx)

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

    def check_layer_head(self, layer: int, head: int) -> None:
        """An IndexError (or TypeError for a non-integer such as 1.7) unless ``layer``/``head`` index this model."""
        index_in("layer", layer, self.n_layers)
        index_in("head", head, self.n_heads)

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

    def runner(self) -> tuple[Any, threading.RLock]:
        """The model's analysis twin and the lock every forward pass on it holds (see :mod:`.twin`)."""
        return analysis_twin(self.model)

    def final_norm(self, resid: torch.Tensor) -> torch.Tensor:
        """The model's own final norm of ``resid [..., d_model]`` (identity without one)."""
        twin, lock = self.runner()
        ln_final = getattr(twin, "ln_final", None)
        with lock, torch.no_grad():
            return ln_final(resid) if callable(ln_final) else resid

    def unembed(self, resid: torch.Tensor) -> torch.Tensor:
        """Logits from residual-stream vectors ``[..., d_model]`` through the model's own final norm and unembedding.

        Then the model's own step after the unembedding (:meth:`logits_transform`: Gemma 2's soft
        cap, a logit scale), so the last residual stream gives exactly the logits the model returns.
        """
        _, lock = self.runner()
        with lock, torch.no_grad():
            return self.logits_transform(self.unembed_before_transform(resid))

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

    def capture(self, tokens: torch.Tensor, names: Sequence[str]) -> dict[str, torch.Tensor]:
        """Activations of ``names`` (full hook names) for ``tokens``, on the model's device.

        For reductions over many batches prefer :meth:`each_activation`, which keeps nothing.
        """
        out: dict[str, torch.Tensor] = {}
        self.each_activation(tokens, names, lambda i, t: out.__setitem__(names[i], t.detach().clone()))
        return out

    # ----- the readout: what the model does after its last residual stream ----------------------

    def unembed_before_transform(self, resid: torch.Tensor) -> torch.Tensor:
        """``unembed(ln_final(resid))`` without the model's post-unembedding step: the logits a linear attribution splits."""
        twin, lock = self.runner()
        ln_final = getattr(twin, "ln_final", None)
        unembed = getattr(twin, "unembed", None)
        if not callable(unembed):
            raise TypeError("this model has no unembed module, so residual vectors cannot be read as logits")
        with lock, torch.no_grad():
            x = ln_final(resid) if callable(ln_final) else resid
            return unembed(x)

    def logits_transform(self, logits: torch.Tensor) -> torch.Tensor:
        """The model's own step after the unembedding, applied to ``logits [..., d_vocab]``; identity for most models.

        TransformerLens 4.x declares it on the bridge's architecture adapter
        (``apply_output_logits_transform``: Gemma 2's ``cap * tanh(x / cap)``, Cohere's or Granite's
        logit scale), as its own logit lens applies it; the bridge's ``unembed`` module does not.
        TransformerLens 2.x applies ``cfg.output_logits_soft_cap`` in ``forward``.
        """
        twin, lock = self.runner()
        transform = getattr(getattr(twin, "adapter", None), "apply_output_logits_transform", None)
        with lock, torch.no_grad():
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
        missing = [resolved[i] for i in range(len(resolved)) if i not in seen]
        if missing:
            raise RuntimeError(
                f"the model ran but these hooks did not fire: {missing}; expected TransformerLens hook points "
                "(e.g. 'blocks.0.attn.hook_pattern')"
            )
        return out


def _bind(fn: Callable[..., None], index: int) -> Callable[[torch.Tensor, Any], None]:
    """A hook function that remembers what it was registered for (``hook.name`` may be an alias)."""

    def hook_fn(tensor: torch.Tensor, hook: Any) -> None:
        fn(tensor, hook, index)

    return hook_fn
