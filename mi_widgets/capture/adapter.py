"""Model adapter: one duck-typed face over TransformerLens 4.x and 2.x models.

Widgets never touch a model directly. The adapter validates input, tokenizes,
runs the model with only the hooks a view needs under ``torch.no_grad()`` and
leaves results on the model's device, so the same code serves a CPU laptop and
a GPU in Colab.
"""

from __future__ import annotations

import difflib
import threading
import weakref
from typing import Any, Callable, Iterable, Sequence

import torch

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

# One forward at a time per model: TransformerLens hooks are module state, so two
# views running the same model from two threads would see each other's hooks.
_model_locks: "weakref.WeakKeyDictionary[Any, threading.RLock]" = weakref.WeakKeyDictionary()
_locks_guard = threading.Lock()


class _StopForward(Exception):
    """Raised from the last hook a run needs, to skip the rest of the forward pass."""


def model_lock(model: Any) -> threading.RLock:
    with _locks_guard:
        lock = _model_locks.get(model)
        if lock is None:
            lock = _model_locks[model] = threading.RLock()
        return lock


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
        if not 0 <= int(layer) < self.n_layers:
            raise IndexError(f"layer must be in 0..{self.n_layers - 1}, got {layer}")
        if not 0 <= int(head) < self.n_heads:
            raise IndexError(f"head must be in 0..{self.n_heads - 1}, got {head}")

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
        raise ValueError(f"unknown hook {spec!r}: give a full hook name like 'blocks.0.mlp.hook_post' or a shorthand; {hint}")

    def unembed(self, resid: torch.Tensor) -> torch.Tensor:
        """Logits from residual-stream vectors ``[..., d_model]`` through the model's own final norm and unembedding."""
        ln_final = getattr(self.model, "ln_final", None)
        unembed = getattr(self.model, "unembed", None)
        if not callable(unembed):
            raise TypeError("this model has no unembed module, so residual vectors cannot be read as logits")
        with torch.no_grad():
            x = ln_final(resid) if callable(ln_final) else resid
            return unembed(x)

    def to_tokens(self, prompt: str | torch.Tensor | Sequence[int]) -> torch.Tensor:
        """Tokens ``[1, seq]`` on the model's device, from a prompt string or token ids."""
        if isinstance(prompt, str):
            if not prompt.strip():
                raise ValueError("prompt is empty: expected some text to run the model on")
            if not self.has_tokenizer:
                raise ValueError(
                    "this model has no tokenizer, so it cannot read a text prompt: pass token ids "
                    "(a 1-D tensor or list of ints) instead, or attach a tokenizer to the model"
                )
            tokens = self.model.to_tokens(prompt, truncate=False)  # TL truncates to n_ctx by default
        else:
            tokens = torch.as_tensor(prompt)
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
                raise ValueError(f"token ids must be in 0..{int(d_vocab) - 1}, got {int(tokens.min())}..{int(tokens.max())}")
            tokens = tokens[None]
        seq = int(tokens.shape[-1])
        if seq > self.n_ctx:
            raise ValueError(
                f"prompt is {seq} tokens long but the model's context (n_ctx) is {self.n_ctx}: shorten it"
            )
        return tokens.to(self.device)

    def token_labels(self, tokens: torch.Tensor) -> list[str]:
        """Readable token strings; ``<id>`` labels when the model has no tokenizer."""
        ids = tokens.reshape(-1)
        if self.has_tokenizer:
            try:
                return [str(s) for s in self.model.to_str_tokens(ids)]
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
        cancellation) and the hooks are removed either way. The hooks act only on this
        thread's forward pass: a background scan's hooks ignore the forward passes the
        user runs meanwhile on the same model from a notebook cell.
        """
        resolved = [self.resolve_hook(name) for name in names]
        if len(set(resolved)) != len(resolved):
            raise ValueError(f"hook names must be distinct, got {list(names)}")
        seen: set[int] = set()
        owner = threading.get_ident()

        def call(tensor: torch.Tensor, hook: Any, index: int) -> None:
            if threading.get_ident() != owner:  # another thread's forward pass on the shared model
                return
            fn(index, tensor)
            seen.add(index)
            if len(seen) == len(resolved):
                raise _StopForward()

        hooks = [(name, _bind(call, index)) for index, name in enumerate(resolved)]
        with model_lock(self.model), torch.no_grad():
            try:
                self.model.run_with_hooks(tokens, return_type=None, fwd_hooks=hooks)
            except _StopForward:
                pass
        missing = [resolved[i] for i in range(len(resolved)) if i not in seen]
        if missing:
            raise RuntimeError(
                f"the model ran but these hooks did not fire: {missing}; expected TransformerLens hook points "
                "(e.g. 'blocks.0.attn.hook_pattern')"
            )

    def capture(self, tokens: torch.Tensor, names: Sequence[str]) -> dict[str, torch.Tensor]:
        """Activations of ``names`` (full hook names) for ``tokens``, on the model's device.

        For reductions over many batches prefer :meth:`each_activation`, which keeps nothing.
        """
        out: dict[str, torch.Tensor] = {}
        self.each_activation(tokens, names, lambda i, t: out.__setitem__(names[i], t.detach().clone()))
        return out


def _bind(fn: Callable[..., None], index: int) -> Callable[[torch.Tensor, Any], None]:
    """A hook function that remembers what it was registered for (``hook.name`` may be an alias)."""

    def hook_fn(tensor: torch.Tensor, hook: Any) -> None:
        fn(tensor, hook, index)

    return hook_fn
