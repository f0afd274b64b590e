"""SAETrainer and train_sae: train a sparse autoencoder on a model's activations, with live curves.

Activations are captured a few windows at a time (only the one hook; the forward pass stops
there), kept in a shuffle buffer on the device and fed to the SAE in batches, so memory holds a
buffer, never the corpus's activations. They are scaled to a mean squared norm of ``d_in`` while
training (one learning rate fits every model); :attr:`SAETrainer.sae` folds the scale back in, so
the SAE it returns reads raw activations.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any

import torch
import traitlets

from ..analysis.activations import check_per_token_hook
from ..analysis.sae import (
    Architecture,
    SparseAutoencoder,
    check_sae_shape,
    explained_variance,
    fold_input_scale,
    input_scale,
    normalize_decoder,
    sae_loss,
)
from ..capture.adapter import adapter_for
from ..capture.corpus import plan_corpus, probe_units, resolve_layer_hook
from ..capture.streams import ActivationStream, TensorStream  # also importable from here, as before
from ..transport import picture
from ..transport.protocol import Reply
from .base import static_asset
from .training import TrainingDiverged, TrainingWidget

METRICS = ("loss", "mse", "l0", "fve", "dead")
MAX_CURVE_POINTS = 1000


class SAETrainer(TrainingWidget):
    """Train a sparse autoencoder on a hook's activations; the view shows live loss, L0, FVE and dead features.

    ``SAETrainer(model, hook="blocks.0.hook_resid_post", tokens=texts, d_sae=512)`` reads the
    hook on ``tokens`` (texts, or token ids ``[batch, seq]``) captured in batches; or
    ``SAETrainer(activations=x, d_sae=...)`` trains on a tensor ``[n, d_in]``. ``architecture``
    is ``"topk"`` (``k`` features per token; default) or ``"relu"`` (``l1_coefficient``).
    ``start()`` trains on a worker thread, ``run()`` in the calling thread (what
    :func:`train_sae` does); ``trainer.sae`` is the SAE so far, for raw activations; ``history``
    holds the logged metrics.
    """

    _esm = static_asset("sae_training.js")
    _css = static_asset("sae_training.css")
    _thread_name = "mi_widgets-sae-training"
    _chunk = 5

    hook = traitlets.Unicode("", read_only=True).tag(sync=True)
    d_in = traitlets.Int(read_only=True).tag(sync=True)
    d_sae = traitlets.Int(read_only=True).tag(sync=True)
    architecture = traitlets.Unicode(read_only=True).tag(sync=True)

    def __init__(
        self,
        model: Any = None,
        hook: str | None = None,
        tokens: Sequence[str] | str | torch.Tensor | Sequence[torch.Tensor] | None = None,
        *,
        activations: torch.Tensor | None = None,
        d_sae: int,
        architecture: Architecture = "topk",
        k: int | None = None,
        l1_coefficient: float = 1.0,
        lr: float = 2e-3,
        steps: int = 1000,
        batch_size: int = 1024,
        layer: int | None = None,
        windows_per_batch: int = 8,
        buffer_size: int = 32_768,
        dead_after: int = 100_000,
        seed: int = 0,
        device: torch.device | str | None = None,
        frame_rate: float = 20.0,
        autostart: bool = False,
    ) -> None:
        if architecture == "topk" and k is None:
            k = min(16, d_sae) if isinstance(d_sae, int) and d_sae >= 1 else k
        for name, value in (
            ("steps", steps),
            ("batch_size", batch_size),
            ("windows_per_batch", windows_per_batch),
            ("buffer_size", buffer_size),
            ("dead_after", dead_after),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        for name, value in (("lr", lr), ("l1_coefficient", l1_coefficient)):
            if (
                isinstance(value, bool)
                or not isinstance(value, (int, float))
                or not math.isfinite(value)
                or value < 0
                or (name == "lr" and value == 0)
            ):
                raise ValueError(
                    f"{name} must be a {'positive' if name == 'lr' else 'non-negative'} finite number, got {value!r}"
                )
        generator = torch.Generator().manual_seed(seed)
        if activations is not None:
            if model is not None or hook is not None or tokens is not None:
                raise ValueError("pass either activations=, or a model with hook= and tokens=, not both")
            if not isinstance(activations, torch.Tensor) or activations.ndim != 2 or activations.shape[0] < 1:
                shape = list(activations.shape) if isinstance(activations, torch.Tensor) else type(activations).__name__
                raise ValueError(f"activations must be a tensor [n_vectors, d_in], got {shape}")
            if not bool(torch.isfinite(activations).all()):
                raise ValueError("activations contain NaN or inf values")
            self._device = torch.device(device) if device is not None else activations.device
            d_in, hook_name = int(activations.shape[1]), ""
            self._stream: Any = TensorStream(activations, generator, self._device)
        else:
            if model is None or hook is None or tokens is None:
                raise ValueError(
                    "train an SAE on a model's activations with model, hook= and tokens= (or pass activations=)"
                )
            adapter = adapter_for(model)
            hook_name = check_per_token_hook(resolve_layer_hook(adapter, hook, layer))
            rows, _ = plan_corpus(adapter, tokens)
            d_in = probe_units(adapter, hook_name, rows[0])
            self._device = torch.device(device) if device is not None else adapter.device
            self._stream = ActivationStream(
                adapter,
                hook_name,
                rows,
                windows_per_batch=windows_per_batch,
                buffer_size=buffer_size,
                generator=generator,
                device=self._device,
            )
        check_sae_shape(d_in, d_sae, architecture, k)
        self._config = dict(d_in=d_in, d_sae=d_sae, architecture=architecture, k=k, hook_name=hook_name or None)
        self._steps, self._batch_size, self._lr = steps, batch_size, float(lr)
        self._l1, self._dead_after, self._seed = float(l1_coefficient), dead_after, seed
        self._scale: float | None = None
        self._reset_state()
        super().__init__(frame_rate=frame_rate)
        self.set_trait("hook", hook_name)
        self.set_trait("d_in", d_in)
        self.set_trait("d_sae", d_sae)
        self.set_trait("architecture", architecture)
        if autostart:
            self.start()

    # ----- Python API ------------------------------------------------------------------

    @property
    def sae(self) -> SparseAutoencoder:
        """The SAE as trained so far, reading raw (unscaled) activations; a copy, safe to keep."""
        return fold_input_scale(self._sae, self._scale or 1.0)

    @property
    def history(self) -> dict[str, torch.Tensor]:
        """Logged metrics of the current run: ``step``, ``loss``, ``mse``, ``l0``, ``fve``, ``dead`` (CPU tensors)."""
        columns = list(zip(*self._history)) if self._history else [[] for _ in range(len(METRICS) + 1)]
        return {name: torch.tensor(col, dtype=torch.float64) for name, col in zip(("step", *METRICS), columns)}

    @property
    def tokens_seen(self) -> int:
        return self._tokens_seen

    # ----- training ----------------------------------------------------------------------

    def _reset_state(self) -> None:
        generator = torch.Generator(device="cpu").manual_seed(self._seed)
        self._sae = SparseAutoencoder(**self._config, generator=generator).to(self._device)  # type: ignore[arg-type]
        self._optimizer = torch.optim.Adam(self._sae.parameters(), lr=self._lr)
        self._last_fired = torch.zeros(self._config["d_sae"], dtype=torch.long, device=self._device)
        self._tokens_seen = 0
        self._history: list[tuple[float, ...]] = []
        self._initialised = False

    def _n_steps(self) -> int:
        return self._steps

    def _reset(self) -> None:
        self._reset_state()

    def _first_batch(self, x: torch.Tensor) -> None:
        """Fix the input scale and start the decoder bias at the data mean (from the first batch)."""
        if self._scale is None:
            self._scale = input_scale(x)
        with torch.no_grad():
            self._sae.b_dec.copy_((x * self._scale).mean(0))
        self._initialised = True

    def _train(self, n: int) -> float:
        sae, optimizer = self._sae, self._optimizer
        loss = mse = f = x = x_hat = None
        for _ in range(n):
            raw = self._stream.take(self._batch_size)
            if not self._initialised:
                self._first_batch(raw)
            x = raw * self._scale
            loss, mse, f, x_hat = sae_loss(sae, x, self._l1)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if sae.architecture == "topk":
                normalize_decoder(sae)
            self._tokens_seen += x.shape[0]
            fired = (f.detach() > 0).any(0)
            self._last_fired[fired] = self._tokens_seen
        assert loss is not None and f is not None and x is not None and x_hat is not None and mse is not None
        dead = int(((self._tokens_seen - self._last_fired) > self._dead_after).sum())
        with torch.no_grad():
            row = (
                float(self._step + n),
                float(loss),
                float(mse),
                float((f > 0).float().sum(-1).mean()),
                float(explained_variance(x, x_hat.detach())),
                float(dead),
            )
        self._history.append(row)
        return row[1]

    def _checkpoint(self) -> dict[str, torch.Tensor] | None:
        state = {name: p.detach().clone() for name, p in self._sae.named_parameters()}
        if not all(bool(torch.isfinite(t).all()) for t in state.values()):
            return None
        return state

    def _restore(self, state: dict[str, torch.Tensor]) -> None:
        with torch.no_grad():
            for name, p in self._sae.named_parameters():
                p.copy_(state[name])

    def _picture(self) -> Any:
        """The loss curves so far: reconstruction (MSE, log scale) and L0."""
        h = self.history
        steps = h["step"].tolist()
        return picture.compose(
            f"SAETrainer: {self._step} of {self._steps} steps",
            [
                picture.Panel(picture.line_chart([("mse", steps, h["mse"].tolist())], log_y=True), "reconstruction"),
                picture.Panel(picture.line_chart([("l0", steps, h["l0"].tolist())]), "active latents per token"),
            ],
            self._picture_note(),
        )

    def _frame(self) -> Reply:
        history = self._history
        stride = max(1, -(-len(history) // MAX_CURVE_POINTS))
        picked = [history[i] for i in range(len(history) - 1, -1, -stride)][::-1]
        table = (
            torch.tensor(picked, dtype=torch.float64)
            if picked
            else torch.zeros((0, len(METRICS) + 1), dtype=torch.float64)
        )
        reply = Reply({"step": self._step, "total": self._steps, "tokens": self._tokens_seen, "metrics": list(METRICS)})
        reply.result["steps"] = reply.add_array(table[:, 0].to(torch.int32), "int32")
        reply.result["values"] = reply.add_array(table[:, 1:].T.float(), "float32")
        return reply


def train_sae(
    model: Any = None,
    hook: str | None = None,
    tokens: Sequence[str] | str | torch.Tensor | Sequence[torch.Tensor] | None = None,
    *,
    display: bool = True,
    **options: Any,
) -> SparseAutoencoder:
    """Train a sparse autoencoder and return it; in a notebook the cell shows live curves meanwhile.

    ``sae = mw.train_sae(model, hook="blocks.0.hook_resid_post", tokens=texts, d_sae=512)``.
    Options are :class:`SAETrainer`'s. Training runs in the cell: interrupting the kernel stops it
    early and returns the SAE trained so far. If the loss becomes NaN, training stops, a warning
    says so, and the SAE from the last good step is returned.
    """
    trainer = SAETrainer(model, hook, tokens, autostart=False, **options)
    if display:
        _display(trainer)
    trainer.run()
    if trainer.status == "error":
        if isinstance(trainer.exception, TrainingDiverged):
            warnings.warn(trainer.error, RuntimeWarning, stacklevel=2)
        else:
            raise RuntimeError(f"SAE training failed: {trainer.error}") from trainer.exception
    return trainer.sae


def _display(widget: Any) -> None:
    """Show ``widget`` in the running notebook cell (nothing outside IPython)."""
    try:
        from IPython import get_ipython
        from IPython.display import display
    except ImportError:
        return
    if get_ipython() is not None:
        display(widget)
