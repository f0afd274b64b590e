"""The nnsight backend: :class:`NNsightAdapter`, the face of :class:`~.adapter.ModelAdapter` over an nnsight model.

An ``nnsight.LanguageModel`` (or ``TransformersModel``) wraps a Hugging Face causal LM. The views ask
for TransformerLens hook names (``blocks.1.hook_resid_post``, ``blocks.0.attn.hook_pattern``); this
adapter maps each onto a module of the HF architecture (:data:`LAYOUTS`) and reads or replaces it in
one ``model.trace(tokens, remote=...)``:

============================  ========================================  ===============
TransformerLens hook          where (GPT-2 / Llama-style)               patchable
============================  ========================================  ===============
``hook_embed``                ``wte`` / ``embed_tokens`` output          yes
``hook_pos_embed``            ``wpe`` output (GPT-2 only)                yes
``blocks.L.hook_resid_pre``   block L's input                            yes
``blocks.L.attn.hook_z``      the attention output projection's input,  yes
                              as ``[batch, pos, n_heads, d_head]``
``blocks.L.attn.hook_pattern``  the attention module's weights output    no
                              (eager attention only)
``blocks.L.hook_attn_out``    the attention module's output              yes
``blocks.L.hook_resid_mid``   the second norm's input                   no (read only)
``blocks.L.mlp.hook_pre``     ``c_fc`` / ``gate_proj`` output            yes
``blocks.L.mlp.hook_post``    the MLP output projection's input          yes
``blocks.L.hook_mlp_out``     the MLP's output                           yes
``blocks.L.hook_resid_post``  block L's output                           yes
``ln_final.hook_normalized``  the final norm's output                    yes
============================  ========================================  ===============

The other architectures (:data:`LAYOUTS`): GPT-NeoX and Phi run attention and the MLP in parallel (both read the
block's input), so ``hook_resid_mid`` is refused by name there (NeoX: with ``use_parallel_residual=True``).
Gemma 2's embedding module scales by ``sqrt(d_model)`` itself (``hook_embed`` is the first residual stream);
its ``hook_attn_out``/``hook_mlp_out`` are the post-attention/post-MLP norms' outputs (what the block adds),
``hook_resid_mid`` the pre-feedforward norm's input, and the lens applies the final logit soft cap. OPT has no MLP
module: ``fc1``/``fc2`` see ``[batch * pos, d]``, viewed (and patched) as ``[batch, pos, d]``; ``hook_embed`` is
``project_in``'s output where the model has one and the readout goes through ``project_out``; post-LN OPT
(``do_layer_norm_before=False``, OPT-350m) is refused. Phi-3's ``mlp.hook_pre`` is the gate half of
``gate_up_proj``'s output.

Attention patterns are what the model computes: HF's *eager* attention returns its weights; ``sdpa``
and ``flash_attention_*`` never form them, so a view that needs patterns refuses such a model and says
to load it with ``attn_implementation="eager"``.

Local runs go through the model's analysis twin (:mod:`.twin`: a copy of the HF module tree that shares
its weights, in eval mode, without the user's hooks or nnsight state) wrapped in a fresh
``LanguageModel``, under the twin's lock and ``torch.no_grad()``; the functions a view passes run
inside the trace, on the model's device, and the trace stops after the last hook it needs. With
``remote=True`` the same traces go to ``model.trace(..., remote=True)`` on the user's model (a hosted
engine runs them): they save the activations there and call the view's functions on what comes back.
Patched runs are refused remotely (their functions would run on the engine). The remote path is not
tested here (it needs a hosted engine).

Views that read TransformerLens weight layouts (``W_O``, ``W_U``, composition scores) are refused
with a :class:`BackendUnsupported` error naming the backend: CompositionView, LogitAttribution,
FourierView.
"""

from __future__ import annotations

import difflib
import threading
import warnings
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import torch

from .adapter import AdapterBase
from .inputs import check_text, check_weights_loaded, prompt_ids, visible_texts
from .twin import _fingerprint, make_twin

BACKEND = "nnsight"
EAGER = "eager"


class BackendUnsupported(ValueError):
    """A view or a hook that the nnsight backend cannot serve (it says what to use instead)."""


@dataclass(frozen=True)
class Layout:
    """Where a HF architecture keeps what the TransformerLens hooks name (module paths from the HF model's root)."""

    name: str  # the architecture, as refusals name it
    layers: str
    attn: str  # relative to a layer: output item 0 is hook_attn_out (unless attn_out), item 1 hook_pattern
    attn_out_proj: str  # relative to a layer: its input is hook_z
    mid_norm: str | None  # relative to a layer: its input is hook_resid_mid (None: attention and MLP in parallel)
    mlp: str  # relative to a layer: its output is hook_mlp_out
    mlp_in: str  # relative to a layer: its output is hook_pre
    mlp_out_proj: str  # relative to a layer: its input is hook_post
    final_norm: str
    embed: str
    pos_embed: str | None
    lm_head: str
    attn_out: str | None = None  # relative to a layer: a module whose output is hook_attn_out (Gemma 2's post-norm)
    parallel: str | bool = False  # True, or the config flag that says attention and MLP both read the block input
    flat_mlp: bool = False  # the MLP's tensors (and resid_mid) are [batch * pos, d] (OPT)
    gated_in: bool = False  # mlp_in's output is [gate, up] side by side: hook_pre is the gate half (Phi-3)
    project_in: str | None = None  # a module (when present) mapping embeddings to d_model: hook_embed is its output
    project_out: str | None = None  # a module (when present) between the final norm and lm_head


_GPT2 = Layout(
    name="GPT-2",
    layers="transformer.h",
    attn="attn",
    attn_out_proj="attn.c_proj",
    mid_norm="ln_2",
    mlp="mlp",
    mlp_in="mlp.c_fc",
    mlp_out_proj="mlp.c_proj",
    final_norm="transformer.ln_f",
    embed="transformer.wte",
    pos_embed="transformer.wpe",
    lm_head="lm_head",
)
_LLAMA = dict(
    layers="model.layers",
    attn="self_attn",
    attn_out_proj="self_attn.o_proj",
    mid_norm="post_attention_layernorm",
    mlp="mlp",
    mlp_in="mlp.gate_proj",
    mlp_out_proj="mlp.down_proj",
    final_norm="model.norm",
    embed="model.embed_tokens",
    pos_embed=None,
    lm_head="lm_head",
)
_NEOX = Layout(
    name="GPT-NeoX",
    layers="gpt_neox.layers",
    attn="attention",
    attn_out_proj="attention.dense",
    mid_norm="post_attention_layernorm",
    mlp="mlp",
    mlp_in="mlp.dense_h_to_4h",
    mlp_out_proj="mlp.dense_4h_to_h",
    final_norm="gpt_neox.final_layer_norm",
    embed="gpt_neox.embed_in",
    pos_embed=None,
    lm_head="lm_head",
    parallel="use_parallel_residual",
)
# Gemma 2: the embedding module scales by sqrt(d_model) itself (its output is the first residual stream);
# hook_attn_out and hook_mlp_out are the post-attention and post-MLP norms' outputs (what the residual adds, as
# in TransformerLens); the final logit soft cap is applied by ``logits_transform``.
_GEMMA2 = Layout(
    **dict(_LLAMA, mid_norm="pre_feedforward_layernorm", mlp="post_feedforward_layernorm"),
    name="Gemma 2",
    attn_out="post_attention_layernorm",
)
# OPT (pre-LN; post-LN OPT-350m is refused): no MLP module, the layer flattens positions around fc1/fc2.
_OPT = Layout(
    name="OPT",
    layers="model.decoder.layers",
    attn="self_attn",
    attn_out_proj="self_attn.out_proj",
    mid_norm="final_layer_norm",
    mlp="fc2",
    mlp_in="fc1",
    mlp_out_proj="fc2",
    final_norm="model.decoder.final_layer_norm",
    embed="model.decoder.embed_tokens",
    pos_embed="model.decoder.embed_positions",
    lm_head="lm_head",
    flat_mlp=True,
    project_in="model.decoder.project_in",
    project_out="model.decoder.project_out",
)
_PHI = Layout(
    name="Phi",
    layers="model.layers",
    attn="self_attn",
    attn_out_proj="self_attn.dense",
    mid_norm=None,
    mlp="mlp",
    mlp_in="mlp.fc1",
    mlp_out_proj="mlp.fc2",
    final_norm="model.final_layernorm",
    embed="model.embed_tokens",
    pos_embed=None,
    lm_head="lm_head",
    parallel=True,
)
_PHI3 = Layout(**dict(_LLAMA, mlp_in="mlp.gate_up_proj"), name="Phi-3", gated_in=True)
# HF ``config.model_type`` -> layout. Llama-style: pre-norm blocks, residual = x + attn(norm(x)), then
# x + mlp(norm(x)), embeddings unscaled, logits = lm_head(norm(x)).
LAYOUTS: dict[str, Layout] = {
    "gpt2": _GPT2,
    "llama": Layout(**_LLAMA, name="Llama"),
    "mistral": Layout(**_LLAMA, name="Mistral"),
    "qwen2": Layout(**_LLAMA, name="Qwen2"),
    "gpt_neox": _NEOX,
    "gemma2": _GEMMA2,
    "opt": _OPT,
    "phi": _PHI,
    "phi3": _PHI3,
}


@dataclass(frozen=True)
class _Point:
    """One TransformerLens hook: the module path, ``input``/``output``, the tuple item, how to view it."""

    name: str
    order: tuple[int, int]
    path: str
    attr: str  # "input" or "output"
    item: int | None  # index into a tuple output, None for the whole value (or item 0 of a tuple)
    heads: bool = False  # view as [batch, pos, n_heads, d_head]
    patchable: bool = True
    flat: bool = False  # the module sees [batch * pos, d]: viewed as [batch, pos, d]
    half: bool = False  # the first half of the last axis (a gated MLP's gate beside its up projection)


def is_nnsight_model(model: Any) -> bool:
    """Whether ``model`` is an nnsight model (``LanguageModel``, ``TransformersModel``, ``NNsight``), without importing nnsight."""
    return any(cls.__module__.split(".")[0] == "nnsight" for cls in type(model).__mro__) and callable(
        getattr(model, "trace", None)
    )


class NNsightAdapter(AdapterBase):
    """The :class:`~.adapter.ModelAdapter` interface over an nnsight model of a Hugging Face causal LM.

    ``remote=True`` sends every trace to ``model.trace(..., remote=True)`` (a hosted engine such as
    NDIF): pass the adapter itself to a view, ``mw.AttentionView(NNsightAdapter(lm, remote=True), prompt)``.
    """

    backend = BACKEND

    def __init__(self, model: Any, *, remote: bool = False) -> None:
        if not is_nnsight_model(model):
            raise TypeError(f"expected an nnsight model (e.g. nnsight.LanguageModel), got {_qualname(model)}")
        hf = _hf_module(model)
        config = getattr(hf, "config", None)
        kind = getattr(config, "model_type", None)
        if kind not in LAYOUTS:
            raise BackendUnsupported(
                f"the nnsight backend maps TransformerLens hook names onto Hugging Face architectures "
                f"{', '.join(sorted(LAYOUTS))}; this model's config.model_type is {kind!r}. Load it as a "
                "TransformerLens TransformerBridge (TransformerBridge.boot_transformers(name)) instead"
            )
        self.model = model
        self.hf = hf
        self.config = config
        self.layout = LAYOUTS[kind]
        if kind == "opt" and not getattr(config, "do_layer_norm_before", True):
            raise BackendUnsupported(
                "the nnsight backend maps OPT with pre-LN blocks only; this OPT has do_layer_norm_before=False "
                "(OPT-350m's post-LN blocks: each block's output has been through a norm, there is no final norm "
                "and project_out reads the stream), so TransformerLens's residual-stream hooks and the logit lens "
                "would not be what the model computes. Use a pre-LN OPT (125m, 1.3b, ...)"
            )
        # what this model lacks or defines differently: hook name -> why it is refused
        self._refused: dict[str, str] = {}
        parallel = self.layout.parallel
        self.parallel = bool(getattr(config, parallel, False) if isinstance(parallel, str) else parallel)
        self.remote = bool(remote)
        if not self.remote:  # a remote model's weights may stay on the meta device here
            check_weights_loaded(hf)
        self._tokenizer = getattr(model, "tokenizer", None)
        n_heads = int(_first(config, "num_attention_heads", "n_head"))
        d_model = int(_first(config, "hidden_size", "n_embd"))
        head_dim = getattr(config, "head_dim", None) or d_model // n_heads
        self.cfg = SimpleNamespace(
            n_layers=len(self._module(self.layout.layers)),
            n_heads=n_heads,
            n_key_value_heads=int(getattr(config, "num_key_value_heads", None) or n_heads),
            d_head=int(head_dim),
            d_model=d_model,
            n_ctx=int(_first(config, "max_position_embeddings", "n_positions")),
            d_vocab=int(config.vocab_size),
            attn_only=False,
            default_prepend_bos=True,
            positional_embedding_type="standard" if self.layout.pos_embed else "rotary",
            model_type=kind,
        )
        self._points = self._hook_points()
        if self.parallel:
            for l in range(self.n_layers):
                self._refused[f"blocks.{l}.hook_resid_mid"] = (
                    f"{self.layout.name} blocks run attention and the MLP in parallel (both read the block's input: "
                    f"{'use_parallel_residual=True' if isinstance(parallel, str) else 'a parallel block'}), so there "
                    "is no residual stream between them: read hook_resid_pre, hook_attn_out, hook_mlp_out or "
                    "hook_resid_post instead"
                )

    # ----- shape of the model ----------------------------------------------------------------------

    @property
    def device(self) -> torch.device:
        try:
            device = next(self.hf.parameters()).device
        except StopIteration:
            return torch.device("cpu")
        return torch.device("cpu") if device.type == "meta" else device  # a remote model's local shell

    @property
    def dtype(self) -> torch.dtype:
        try:
            return next(self.hf.parameters()).dtype
        except StopIteration:
            return torch.float32

    @property
    def has_mlp(self) -> bool:
        return True

    @property
    def has_pos_embed(self) -> bool:
        return self.layout.pos_embed is not None

    @property
    def attn_implementation(self) -> str:
        """The HF attention implementation the model runs (``eager``, ``sdpa``, ``flash_attention_2``, ...)."""
        return str(getattr(self.config, "_attn_implementation", None) or EAGER)

    # ----- tokens ------------------------------------------------------------------------------

    @property
    def has_tokenizer(self) -> bool:
        return self._tokenizer is not None

    @property
    def bos_id(self) -> int | None:
        bos = getattr(self._tokenizer, "bos_token_id", None)
        return int(bos) if bos is not None else None

    def text_ids(self, text: str) -> torch.Tensor:
        """Token ids ``[seq]`` of ``text`` without a BOS (as it would follow a prompt), on the CPU."""
        ids = self._tokenizer(text, add_special_tokens=False)["input_ids"]
        return torch.tensor(ids, dtype=torch.long)

    def to_tokens(self, prompt: str | torch.Tensor | Sequence[int]) -> torch.Tensor:
        """Tokens ``[1, seq]`` on the model's device, checked like :meth:`ModelAdapter.to_tokens`.

        Text gets the tokenizer's BOS in front when it has one (as TransformerLens's ``to_tokens``
        does), so positions and views line up with the TransformerLens backend.
        """
        if isinstance(prompt, str):
            if not prompt.strip():
                raise ValueError("prompt is empty: expected some text to run the model on")
            check_text(prompt)
            if not self.has_tokenizer:
                raise ValueError(
                    "this model has no tokenizer, so it cannot read a text prompt: pass token ids "
                    "(a 1-D tensor or list of ints) instead, or give the nnsight model a tokenizer"
                )
            ids = self.text_ids(prompt)
            if self.bos_id is not None:
                ids = torch.cat([torch.tensor([self.bos_id]), ids])
            tokens = ids[None]
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
            d_vocab = self.cfg.d_vocab
            if int(tokens.min()) < 0 or int(tokens.max()) >= d_vocab:
                raise ValueError(f"token ids must be in 0..{d_vocab - 1}, got {int(tokens.min())}..{int(tokens.max())}")
            tokens = tokens.to(torch.long)[None]
        seq = int(tokens.shape[-1])
        if seq > self.n_ctx:
            raise ValueError(f"prompt is {seq} tokens long but the model's context (n_ctx) is {self.n_ctx}: shorten it")
        return tokens.to(self.device)

    def token_labels(self, tokens: torch.Tensor) -> list[str]:
        """Each token decoded on its own (``<id>`` without a tokenizer), safe to send."""
        ids = [int(i) for i in tokens.reshape(-1).tolist()]
        if self.has_tokenizer:
            try:
                return visible_texts([self._tokenizer.decode([i]) for i in ids])
            except Exception:
                pass
        return [f"<{i}>" for i in ids]

    # ----- hook names ----------------------------------------------------------------------------

    def hook_names(self) -> list[str]:
        return sorted(self._points)

    def resolve_hook(self, name: str) -> str:
        """``name`` if this backend maps it onto the model (patterns: only with eager attention); else a clear error."""
        if name in self._refused:
            raise BackendUnsupported(
                f"{name} is not defined for this model on the nnsight backend: {self._refused[name]}"
            )
        if name in self._points:
            if name.endswith("attn.hook_pattern"):
                self._check_patterns()
            return name
        names = self.hook_names()
        close = difflib.get_close_matches(name, names, n=5, cutoff=0.6)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        per_layer = sorted({n.split(".", 2)[2] for n in names if n.startswith("blocks.0.")})
        raise ValueError(
            f"unknown hook name {name!r} for this model on the nnsight backend{hint} (it maps blocks.L. + "
            f"{', '.join(per_layer)} for L in 0..{self.n_layers - 1}, and "
            f"{', '.join(n for n in names if not n.startswith('blocks.'))})"
        )

    def resolve_patch_hook(self, name: str) -> str:
        """:meth:`resolve_hook` for a hook whose activation a patch replaces: refuses the read-only ones by name."""
        point = self._points[self.resolve_hook(name)]
        if not point.patchable:
            raise BackendUnsupported(
                f"{name} can be read but not patched on the nnsight backend: the HF module computes it where no "
                "module input or output carries it on into the model (patch head_out, resid_pre, "
                "attn_out or mlp_out instead)"
            )
        return name

    def _check_patterns(self) -> None:
        impl = self.attn_implementation
        if impl != EAGER:
            raise BackendUnsupported(
                f"attention patterns on the nnsight backend are the weights the model's attention returns, and "
                f"this model runs attn_implementation={impl!r}, which never forms them (only 'eager' does): load "
                'it with attn_implementation="eager", e.g. LanguageModel(name, attn_implementation="eager")'
            )

    def _hook_points(self) -> dict[str, _Point]:
        lay, n = self.layout, self.n_layers
        embed = lay.project_in if lay.project_in and self._has(lay.project_in) else lay.embed
        points = [_Point("hook_embed", (0, 0), embed, "output", None)]
        if lay.pos_embed:
            points.append(_Point("hook_pos_embed", (0, 1), lay.pos_embed, "output", None))
        flat = lay.flat_mlp
        for l in range(n):
            block = f"{lay.layers}.{l}"
            at = l + 1
            attn_out = (
                _Point(f"blocks.{l}.hook_attn_out", (at, 3), f"{block}.{lay.attn_out}", "output", None)
                if lay.attn_out
                else _Point(f"blocks.{l}.hook_attn_out", (at, 3), f"{block}.{lay.attn}", "output", 0)
            )
            points += [
                _Point(f"blocks.{l}.hook_resid_pre", (at, 0), block, "input", None),
                _Point(f"blocks.{l}.attn.hook_z", (at, 1), f"{block}.{lay.attn_out_proj}", "input", None, heads=True),
                _Point(f"blocks.{l}.attn.hook_pattern", (at, 2), f"{block}.{lay.attn}", "output", 1, patchable=False),
                attn_out,
                _Point(
                    f"blocks.{l}.mlp.hook_pre",
                    (at, 5),
                    f"{block}.{lay.mlp_in}",
                    "output",
                    None,
                    flat=flat,
                    half=lay.gated_in,
                ),
                _Point(f"blocks.{l}.mlp.hook_post", (at, 6), f"{block}.{lay.mlp_out_proj}", "input", None, flat=flat),
                _Point(f"blocks.{l}.hook_mlp_out", (at, 7), f"{block}.{lay.mlp}", "output", None, flat=flat),
                _Point(f"blocks.{l}.hook_resid_post", (at, 8), block, "output", None),
            ]
            if lay.mid_norm and not self.parallel:
                points.append(
                    _Point(f"blocks.{l}.hook_resid_mid", (at, 4), f"{block}.{lay.mid_norm}", "input", None,
                           patchable=False, flat=flat)
                )  # fmt: skip
        points.append(_Point("ln_final.hook_normalized", (n + 1, 0), lay.final_norm, "output", None))
        return {p.name: p for p in points}

    def _has(self, path: str) -> bool:
        """Whether the HF model has a module at ``path`` (OPT's ``project_in``/``project_out`` may be None)."""
        try:
            return isinstance(self._module(path), torch.nn.Module)
        except (AttributeError, IndexError):
            return False

    # ----- forward passes --------------------------------------------------------------------

    def runner(self) -> tuple[Any, threading.RLock]:
        """The nnsight model the traces run on and the lock they hold: the twin locally, the user's model remotely."""
        if self.remote:
            return self.model, _remote_lock(self.model)
        return _nnsight_twin(self.model, self.hf, self._tokenizer)

    def each_activation(
        self, tokens: torch.Tensor, names: Sequence[str], fn: Callable[[int, torch.Tensor], None]
    ) -> None:
        """Run the model and call ``fn(i, activation)`` with the activation of ``names[i]`` (stops after the last)."""
        self._trace(tokens, names, _reader(fn), stop=True, logits=False, grad=False)

    def run_to_logits(
        self, tokens: torch.Tensor, names: Sequence[str], fn: Callable[[int, torch.Tensor], None]
    ) -> torch.Tensor:
        logits = self._trace(tokens, names, _reader(fn), stop=False, logits=True, grad=False)
        assert logits is not None
        return logits

    def run_patched(
        self,
        tokens: torch.Tensor,
        hooks: Mapping[str, Callable[[torch.Tensor], torch.Tensor | None]],
        *,
        stop_at: str | None = None,
        grad: bool = False,
    ) -> torch.Tensor | None:
        """One trace in which each hook's function may return a replacement activation (see ``ModelAdapter``)."""
        if self.remote:
            raise BackendUnsupported(
                "patching on a remote engine is not supported: the patch functions and what they record would run "
                "on the engine, not in this kernel. Run Patching on a locally loaded model"
            )
        names = list(hooks)
        fns = [hooks[name] for name in names]
        if stop_at is not None and stop_at not in hooks:
            raise ValueError(f"stop_at must be one of the hooks, got {stop_at!r}")
        if stop_at is not None:  # the run ends after stop_at: hooks after it would never fire
            last = self._points[self.resolve_hook(stop_at)].order
            late = [n for n in names if self._points[self.resolve_hook(n)].order > last]
            if late:
                raise ValueError(f"hooks {late} come after stop_at {stop_at!r} and would never run")
        return self._trace(
            tokens,
            names,
            lambda i, t: fns[i](t),
            stop=stop_at is not None,
            logits=stop_at is None,
            grad=grad,
            patch=True,
        )

    def _trace(
        self,
        tokens: torch.Tensor,
        names: Sequence[str],
        visit: Callable[[int, torch.Tensor], torch.Tensor | None],
        *,
        stop: bool,
        logits: bool,
        grad: bool,
        patch: bool = False,
    ) -> torch.Tensor | None:
        """One ``model.trace(tokens, remote=self.remote)`` visiting the hooks of ``names`` in the order the model runs them.

        ``visit(i, activation)`` may return a replacement (patching); the trace stops after the last
        hook when ``stop``, else it runs on and returns the logits when ``logits``.
        """
        points = [self._points[self.resolve_hook(name)] for name in names]
        if len({p.name for p in points}) != len(points):
            raise ValueError(f"hook names must be distinct, got {list(names)}")
        if patch:
            for name in names:
                self.resolve_patch_hook(name)
        order = sorted(range(len(points)), key=lambda i: points[i].order)
        groups: list[tuple[str, str, list[int]]] = []
        for i in order:
            p = points[i]
            if groups and groups[-1][:2] == (p.path, p.attr):
                groups[-1][2].append(i)
            else:
                groups.append((p.path, p.attr, [i]))
        model, lock = self.runner()
        shape = (int(tokens.shape[0]), int(tokens.shape[-1]))
        seen: set[int] = set()
        saved: list[tuple[int, Any]] = []
        later = self.remote and not patch  # a hosted engine cannot call back into this kernel: read after the trace
        out = None
        with lock, torch.set_grad_enabled(grad), warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            with model.trace(tokens, remote=self.remote) as tracer:
                for g, (path, attr, indices) in enumerate(groups):
                    envoy = _envoy(model, path)
                    value = getattr(envoy, attr)
                    changed = False
                    for i in indices:
                        current = self._view(points[i], value, shape)
                        if later:
                            saved.append((i, current.save()))
                            continue
                        new = visit(i, current)
                        seen.add(i)
                        if new is not None:
                            value, changed = self._put(points[i], value, new), True
                    if changed:
                        setattr(envoy, attr, value)
                    if stop and g == len(groups) - 1:
                        tracer.stop()
                if logits:
                    out = model.output.logits.save()
        for i, value in saved:
            visit(i, value)
            seen.add(i)
        missing = [points[i].name for i in range(len(points)) if i not in seen]
        if missing:
            raise RuntimeError(f"the model ran but these hooks were not reached: {missing}")
        if logits and (not isinstance(out, torch.Tensor) or out.ndim != 3):
            raise TypeError(f"expected the model to return logits [batch, seq, d_vocab], got {type(out).__name__}")
        return out

    def _view(self, point: _Point, value: Any, shape: tuple[int, int]) -> torch.Tensor:
        if isinstance(value, tuple):
            value = value[point.item or 0]
        elif point.item:
            raise RuntimeError(f"expected {point.path}'s output to be a tuple with item {point.item}")
        if value is None and point.name.endswith("hook_pattern"):
            raise BackendUnsupported(
                f'{point.path} returned no attention weights: load the model with attn_implementation="eager"'
            )
        if point.flat:
            value = value.reshape(*shape, value.shape[-1])
        if point.half:
            value = value[..., : value.shape[-1] // 2]
        if point.heads:
            value = value.reshape(*value.shape[:-1], self.n_heads, -1)
        return value

    def _put(self, point: _Point, value: Any, new: torch.Tensor) -> Any:
        if point.heads:
            new = new.reshape(*new.shape[:-2], -1)
        old = value[point.item or 0] if isinstance(value, tuple) else value
        if point.half:
            new = torch.cat([new.reshape(*old.shape[:-1], -1), old[..., new.shape[-1] :]], dim=-1)
        if point.flat:
            new = new.reshape(old.shape)
        if isinstance(value, tuple):
            at = point.item or 0
            return (*value[:at], new, *value[at + 1 :])
        return new

    # ----- the readout ------------------------------------------------------------------------

    def final_norm(self, resid: torch.Tensor) -> torch.Tensor:
        """The model's own final norm of ``resid [..., d_model]``."""
        with torch.no_grad():
            return self._readout_module(self.layout.final_norm)(resid)

    def unembed_before_transform(self, resid: torch.Tensor) -> torch.Tensor:
        """``lm_head(final_norm(resid))``, through OPT's ``project_out`` between them where the model has one."""
        with torch.no_grad():
            x = self.final_norm(resid)
            out = self.layout.project_out
            if out and self._has(out):
                x = self._readout_module(out)(x)
            return self._readout_module(self.layout.lm_head)(x)

    def unembed(self, resid: torch.Tensor) -> torch.Tensor:
        """Logits from residual vectors through the model's final norm, ``lm_head`` and logit soft cap, if any."""
        return self.logits_transform(self.unembed_before_transform(resid))

    def logits_transform(self, logits: torch.Tensor) -> torch.Tensor:
        cap = self.logit_softcap
        return logits if cap is None else cap * torch.tanh(logits / cap)

    @property
    def logit_softcap(self) -> float | None:
        cap = getattr(self.config, "final_logit_softcapping", None)
        return float(cap) if isinstance(cap, (int, float)) and cap > 0 else None

    def check_readout(self, what: str) -> None:
        """The listed layouts read out as ``lm_head([project_out](final_norm(last residual)))`` (then Gemma 2's soft
        cap); the lens checks it on every run."""

    def _readout_module(self, path: str) -> Any:
        module = self._module(path)
        weight = getattr(module, "weight", None)
        if isinstance(weight, torch.Tensor) and weight.is_meta:
            raise BackendUnsupported(
                f"reading residual streams as logits needs the model's {path} weights here, and they are on the "
                "meta device (a remote model not loaded locally): load the weights locally too, or use a view "
                "that does not read logits (AttentionView, ActivationView, HeadScan)"
            )
        return module

    def _module(self, path: str) -> Any:
        module = self.hf
        for part in path.split("."):
            module = module[int(part)] if part.isdigit() else getattr(module, part)
        return module

    # ----- weights: not on this backend ---------------------------------------------------------

    has_composition_scores = False

    def _weights(self, what: str) -> BackendUnsupported:
        return BackendUnsupported(
            f"{what} reads TransformerLens weight layouts, which the nnsight backend does not provide; load the "
            "model as a TransformerLens TransformerBridge (TransformerBridge.boot_transformers(name)) for it"
        )

    def embed_weights(self) -> torch.Tensor:
        raise self._weights("reading W_E")

    def unembed_weights(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        raise self._weights("direct logit attribution (W_U)")

    def attn_out_weights(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        raise self._weights("direct logit attribution (W_O)")

    def mlp_out_weight(self, layer: int) -> torch.Tensor | None:
        return None

    def final_norm_weights(self) -> Any:
        raise self._weights("direct logit attribution")

    def post_attn_norms(self) -> list[Any]:
        raise self._weights("direct logit attribution")

    def direct_logit_map(self, hook: str, d_in: int) -> Callable[[torch.Tensor], torch.Tensor] | None:
        return None

    def composition_scores(self, mode: str = "K") -> torch.Tensor:
        raise self._weights("composition scores")

    def require_transformer_lens(self, view: str) -> None:
        """Refuse ``view`` by name: it needs a TransformerLens model."""
        raise self._weights(view)


# ----- helpers -----------------------------------------------------------------------------------


def _reader(fn: Callable[[int, torch.Tensor], None]) -> Callable[[int, torch.Tensor], None]:
    def visit(i: int, t: torch.Tensor) -> None:
        fn(i, t)

    return visit


def _qualname(obj: Any) -> str:
    return f"{type(obj).__module__}.{type(obj).__qualname__}"


def _first(config: Any, *names: str) -> Any:
    for name in names:
        value = getattr(config, name, None)
        if value is not None:
            return value
    raise BackendUnsupported(f"cannot read {' or '.join(names)} from this model's config")


def _hf_module(model: Any) -> torch.nn.Module:
    """The torch module an nnsight model wraps."""
    for name in ("_module", "_model"):
        try:
            module = object.__getattribute__(model, name)
        except AttributeError:
            continue
        if isinstance(module, torch.nn.Module):
            return module
    raise TypeError(f"cannot find the torch module this {_qualname(model)} wraps")


def _envoy(model: Any, path: str) -> Any:
    envoy = model
    for part in path.split("."):
        envoy = envoy[int(part)] if part.isdigit() else getattr(envoy, part)
    return envoy


_twins: weakref.WeakKeyDictionary[Any, tuple[Any, Any, threading.RLock]] = weakref.WeakKeyDictionary()
_remote_locks: weakref.WeakKeyDictionary[Any, threading.RLock] = weakref.WeakKeyDictionary()
_guard = threading.Lock()


def _remote_lock(model: Any) -> threading.RLock:
    with _guard:
        lock = _remote_locks.get(model)
        if lock is None:
            lock = _remote_locks[model] = threading.RLock()
        return lock


def _nnsight_twin(model: Any, hf: torch.nn.Module, tokenizer: Any) -> tuple[Any, threading.RLock]:
    """A fresh nnsight model over the HF model's analysis twin (eval mode, shared weights), and its lock.

    The twin drops nnsight's per-module state (``__nnsight*`` entries and its ``forward`` controller),
    so the user's traces on their model and ours never share an interleaver. Remade when the model's
    tensors change (``.to(...)``, a swapped module).
    """
    fingerprint = _fingerprint(hf)
    with _guard:
        entry = _twins.get(hf)
        if entry is not None and entry[0] == fingerprint:
            return entry[1], entry[2]
        lock = entry[2] if entry is not None else threading.RLock()
        twin = make_twin(hf, drop=lambda name: name.startswith("__nnsight"))
        wrapper_cls = _wrapper_class(model)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            wrapped = wrapper_cls(twin, tokenizer=tokenizer) if tokenizer is not None else wrapper_cls(twin)
        _twins[hf] = (fingerprint, wrapped, lock)
        return wrapped, lock


def _wrapper_class(model: Any) -> Any:
    """nnsight's ``LanguageModel`` for the twin (it tokenizes and builds attention masks as the user's model does)."""
    from nnsight import LanguageModel

    return LanguageModel
