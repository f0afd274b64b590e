"""The analysis twin: a hook-free, eval-mode copy of a model's module tree that shares its weights.

Every forward pass a view or a background scan makes runs on the twin, never on the user's model:

- TransformerLens hooks are module state, so a user's ``run_with_cache`` / ``run_with_hooks`` /
  ``add_hook`` on the model would fire inside a scan's forward passes on another thread (and the
  scan's hooks inside the user's), mixing batches and caches. The twin has hook points of its own.
- Analysis must not see dropout: the twin is always in eval mode, and the user's model keeps
  whatever mode it is in (nothing is switched and switched back).

The copy is ``copy.deepcopy`` with every tensor reachable from the model (parameters, buffers,
cached masks), the config and the tokenizer seeded into the memo, so tensors and config are the same objects (no memory, in-place weight updates and
config changes are seen) and only the module objects, empty hook containers and small Python state are
new (~50 ms for a gpt2-small-shaped bridge). The twin is remade when the model's parameters or
buffers are no longer the same tensors or devices (``model.to(...)``, a swapped module).
"""

from __future__ import annotations

import copy
import gc
import threading
import types
import warnings
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

_HOOK_DICTS = (
    "_forward_hooks",
    "_forward_hooks_with_kwargs",
    "_forward_hooks_always_called",
    "_forward_pre_hooks",
    "_forward_pre_hooks_with_kwargs",
    "_backward_hooks",
    "_backward_pre_hooks",
)


@dataclass
class _Twin:
    fingerprint: tuple[Any, ...]
    module: Any
    lock: threading.RLock


_twins: weakref.WeakKeyDictionary[Any, _Twin] = weakref.WeakKeyDictionary()
_guard = threading.Lock()


def _fingerprint(model: Any) -> tuple[Any, ...]:
    """Which tensors the model is made of: the twin is valid while these are the same objects on the same devices."""
    tensors = [*model.named_parameters(), *model.named_buffers()]
    return tuple((name, id(t), t.device) for name, t in tensors)


_ATOMIC = (type, types.ModuleType, types.FunctionType, types.BuiltinFunctionType, str, bytes, int, float)


def _shared_objects(model: Any) -> dict[int, Any]:
    """Every tensor reachable from the model (parameters, buffers, cached masks, tensors a forward left
    behind), plus its config and tokenizer: a deepcopy memo that makes the copy share them."""
    shared: dict[int, Any] = {}
    for name in ("cfg", "tokenizer"):
        value = getattr(model, name, None)
        if value is not None:
            shared[id(value)] = value
    seen: set[int] = set(shared)
    stack: list[Any] = [model]
    while stack:
        obj = stack.pop()
        if id(obj) in seen or isinstance(obj, _ATOMIC):
            continue
        seen.add(id(obj))
        if isinstance(obj, torch.Tensor):
            shared[id(obj)] = obj
            continue
        stack.extend(gc.get_referents(obj))
    return shared


def make_twin(model: Any, drop: Callable[[str], bool] | None = None) -> Any:
    """A copy of ``model`` that shares every tensor, the config and the tokenizer; no hooks; eval mode.

    ``drop(name)``: instance attributes of modules left out of the copy (not copied either), e.g. the
    per-module state a wrapping library (nnsight) keeps there.
    """
    memo = _shared_objects(model)
    for module in model.modules():
        # The user's hooks are never copied (a hook may hold a lock or a cache that cannot or should not
        # be copied): the twin gets empty hook containers instead.
        for attr in _HOOK_DICTS:
            hooks = getattr(module, attr, None)
            if isinstance(hooks, dict):
                memo[id(hooks)] = type(hooks)()
        for attr in ("fwd_hooks", "bwd_hooks"):  # TransformerLens HookPoint handles
            hooks = getattr(module, attr, None)
            if isinstance(hooks, list):
                memo[id(hooks)] = []
        # A method patched onto the user's instance (a wrapper, a mock) is shared, not copied, and
        # dropped from the twin below.
        for name, value in vars(module).items():
            if _patched_method(module, name, value) or (drop is not None and drop(name)):
                memo[id(value)] = value
    try:
        with warnings.catch_warnings():  # TL 4.x: the shared config stays bound to the user's bridge, as it should
            warnings.filterwarnings("ignore", message=".*already bound to another live TransformerBridge")
            twin = copy.deepcopy(model, memo)
    except Exception as exc:
        raise TypeError(
            f"mi_widgets runs views on a hook-free copy of the model that shares its weights, and this "
            f"{type(model).__qualname__} cannot be copied that way ({type(exc).__name__}: {exc})"
        ) from exc
    for module in twin.modules():
        for name, value in list(vars(module).items()):
            # It would call back into the user's model: the twin uses its class's own method instead.
            if _patched_method(module, name, value) or (drop is not None and drop(name)):
                del module.__dict__[name]
    twin.eval()
    return twin


def _patched_method(module: Any, name: str, value: Any) -> bool:
    """Whether ``module.name`` is a callable set on the instance over a method of its class."""
    return callable(value) and not isinstance(value, torch.nn.Module) and callable(getattr(type(module), name, None))


def forget_last_patterns(twin: Any) -> None:
    """Drop the attention patterns a TransformerLens 4.x bridge keeps after each forward pass (``_pattern`` on its
    joint-QKV attention bridges, ``[batch, heads, seq, seq]`` per layer, read by nothing): on the twin they would
    hold memory until its next run (2 GiB for 4 layers x 8 heads at 4,096 tokens; on a GPU, GPU memory)."""
    for module in twin.modules():
        if getattr(module, "_pattern", None) is not None:
            module._pattern = None


def analysis_twin(model: Any) -> tuple[Any, threading.RLock]:
    """The current twin of ``model`` and the lock that serialises forward passes on it.

    Only this package's forward passes take the lock (views and scans of the same model take
    turns); the user's own calls on ``model`` never wait for it.
    """
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"expected a torch.nn.Module model, got {type(model).__qualname__}")
    fingerprint = _fingerprint(model)
    with _guard:
        entry = _twins.get(model)
        if entry is None or entry.fingerprint != fingerprint:
            lock = entry.lock if entry is not None else threading.RLock()
            entry = _twins[model] = _Twin(fingerprint, make_twin(model), lock)
        return entry.module, entry.lock
