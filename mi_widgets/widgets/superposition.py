"""SuperpositionToy: the toy model of superposition, trained in the kernel, animated in the cell.

One model per sparsity value trains side by side (batched, one optimiser) on a worker thread;
the view draws each instance's feature directions (for two hidden dimensions), ``W^T W``, the
per-feature norms and dimensionalities and the loss curves as frames arrive. Moving a slider in
the view sets ``sparsity`` or ``importance_decay``, which restarts training with the new setting.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import traitlets

from ..analysis.superposition import (
    ToyModel,
    check_toy_settings,
    feature_dimensionality,
    feature_importance,
    sample_features,
    toy_loss,
)
from ..transport import picture
from ..transport.protocol import Reply
from .base import static_asset
from .training import TrainingWidget

MAX_CURVE_POINTS = 500
MAX_GRAM_CELLS = 500_000  # instances x n_features^2: W^T W per frame stays ~2 MB, under the message limit


class SuperpositionToy(TrainingWidget):
    """Toy models of superposition (Elhage et al. 2022): ``n_features`` squeezed into ``n_hidden`` dimensions.

    ``SuperpositionToy(n_features=5, n_hidden=2, sparsity=[0.0, 0.7, 0.9])`` trains one model per
    sparsity value (the probability that a feature is zero) with feature ``i`` weighted by
    ``importance_decay ** i``: dense features get dedicated directions, sparse ones superpose
    (at 0.9 the five features form a pentagon). Training starts at once on a worker thread.

    ``toy.W`` is the current weights ``[instances, n_hidden, n_features]`` (a copy on the CPU),
    ``toy.b`` the biases, ``toy.losses`` the loss curve; ``start()``/``stop()``/``wait()``/``restart()``.
    Setting ``toy.sparsity`` or ``toy.importance_decay`` (or moving a slider) restarts training.
    ``device="cuda"`` trains on the GPU.
    """

    _esm = static_asset("superposition.js")
    _css = static_asset("superposition.css")
    _thread_name = "mi_widgets-superposition"
    _chunk = 10

    n_features = traitlets.Int(read_only=True).tag(sync=True)
    n_hidden = traitlets.Int(read_only=True).tag(sync=True)
    n_instances = traitlets.Int(read_only=True).tag(sync=True)
    sparsity = traitlets.List(traitlets.Float()).tag(sync=True)
    importance_decay = traitlets.Float(0.9).tag(sync=True)

    def __init__(
        self,
        n_features: int = 5,
        n_hidden: int = 2,
        sparsity: float | Sequence[float] = (0.0, 0.7, 0.9),
        importance_decay: float = 0.9,
        *,
        steps: int = 3000,
        batch_size: int = 1024,
        lr: float = 1e-2,
        seed: int = 0,
        device: torch.device | str | None = None,
        frame_rate: float = 30.0,
        autostart: bool = True,
    ) -> None:
        values = check_toy_settings(n_features, n_hidden, sparsity, importance_decay)
        if len(values) * n_features**2 > MAX_GRAM_CELLS:
            raise ValueError(
                f"{len(values)} instances of {n_features} features are too many to stream W^T W to the view "
                f"(at most {MAX_GRAM_CELLS:,} cells, got {len(values) * n_features**2:,}); train "
                "mi_widgets.analysis.ToyModel directly for models this size"
            )
        for name, value in (("steps", steps), ("batch_size", batch_size), ("seed", seed)):
            if isinstance(value, bool) or not isinstance(value, int) or value < (0 if name == "seed" else 1):
                raise ValueError(
                    f"{name} must be a{' non-negative' if name == 'seed' else ' positive'} integer, got {value!r}"
                )
        if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not lr > 0:
            raise ValueError(f"lr must be a positive learning rate, got {lr!r}")
        self._device = torch.device(device) if device is not None else torch.device("cpu")
        self._shape = (n_features, n_hidden)
        self._steps, self._batch_size, self._lr, self._seed = steps, batch_size, float(lr), seed
        self._build(values, float(importance_decay))
        super().__init__(frame_rate=frame_rate)
        self.set_trait("n_features", n_features)
        self.set_trait("n_hidden", n_hidden)
        self.set_trait("n_instances", len(values))
        with self.hold_trait_notifications():
            self.sparsity = values
            self.importance_decay = float(importance_decay)
        self.observe(self._on_setting, names=["sparsity", "importance_decay"])
        if autostart:
            self.start()

    # ----- Python API ------------------------------------------------------------------

    @property
    def W(self) -> torch.Tensor:
        """Current weights ``[instances, n_hidden, n_features]`` (a CPU copy; features are columns)."""
        return self._model.W.detach().cpu().clone()

    @property
    def b(self) -> torch.Tensor:
        """Current biases ``[instances, n_features]`` (a CPU copy)."""
        return self._model.b.detach().cpu().clone()

    @property
    def losses(self) -> torch.Tensor:
        """Loss per logged step ``[logged steps, instances]`` of the current run (CPU)."""
        return torch.stack(self._losses).cpu() if self._losses else torch.zeros((0, self.n_instances))

    @property
    def dimensionality(self) -> torch.Tensor:
        """Per-feature dimensionality ``[instances, n_features]`` (1 dedicated, 1/2 antipodal, 2/5 pentagon, 0 absent)."""
        return feature_dimensionality(self._model.W.detach()).cpu()

    def _picture(self) -> Any:
        """``W^T W`` of each model (features x features, blue < 0 < red on [-1, 1], as in the paper)."""
        W = self.W
        panels = [
            picture.Panel(
                picture.heatmap(W[i].T @ W[i], -1.0, 1.0, diverging=True, cell=max(4, 120 // self.n_features)),
                f"sparsity {s:g}",
            )
            for i, s in enumerate(self.sparsity)
        ]
        return picture.compose(
            f"SuperpositionToy: {self.n_features} features in {self.n_hidden} dimensions, W^T W per sparsity",
            panels,
            self._picture_note(),
        )

    # ----- settings ----------------------------------------------------------------------

    @traitlets.validate("sparsity")
    def _check_sparsity(self, proposal: dict[str, Any]) -> list[float]:
        try:
            values = check_toy_settings(1, 1, proposal["value"], 1.0)
        except ValueError as exc:  # a TraitError rolls back a bad value that came from the view
            raise traitlets.TraitError(str(exc)) from exc
        if self.n_instances and len(values) != self.n_instances:
            raise traitlets.TraitError(
                f"sparsity needs one value per instance ({self.n_instances}), got {len(values)}; "
                "make a new SuperpositionToy to change the number of instances"
            )
        return values

    @traitlets.validate("importance_decay")
    def _check_decay(self, proposal: dict[str, Any]) -> float:
        try:
            check_toy_settings(1, 1, [0.0], proposal["value"])
        except ValueError as exc:
            raise traitlets.TraitError(str(exc)) from exc
        return float(proposal["value"])

    def _on_setting(self, change: dict[str, Any]) -> None:
        self.restart()

    # ----- training ----------------------------------------------------------------------

    def _build(self, sparsity: list[float], decay: float) -> None:
        generator = torch.Generator(device=self._device).manual_seed(self._seed)
        self._generator = generator
        self._settings = (list(sparsity), decay)
        n_features, n_hidden = self._shape
        self._model = ToyModel(len(sparsity), n_features, n_hidden, generator=generator, device=self._device)
        self._sparsity_t = torch.tensor(sparsity, dtype=torch.float32, device=self._device)
        self._importance = feature_importance(n_features, decay, self._device)
        self._optimizer = torch.optim.Adam(self._model.parameters(), lr=self._lr)
        self._losses, self._loss_steps = [], []

    def _n_steps(self) -> int:
        return self._steps

    def _reset(self) -> None:
        self._build(list(self.sparsity), float(self.importance_decay))

    def _train(self, n: int) -> float:
        model, optimizer = self._model, self._optimizer
        loss = torch.zeros(())
        for _ in range(n):
            x = sample_features(self._batch_size, self._sparsity_t, model.W.shape[-1], self._generator)
            loss = toy_loss(model, x, self._importance)
            optimizer.zero_grad(set_to_none=True)
            loss.sum().backward()
            optimizer.step()
        per_instance = loss.detach()
        self._losses.append(per_instance)
        self._loss_steps.append(self._step + n)
        return float(per_instance.sum())

    def _checkpoint(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        W, b = self._model.W.detach(), self._model.b.detach()
        if not (torch.isfinite(W).all() and torch.isfinite(b).all()):
            return None
        return W.clone(), b.clone()

    def _restore(self, state: tuple[torch.Tensor, torch.Tensor]) -> None:
        with torch.no_grad():
            self._model.W.copy_(state[0])
            self._model.b.copy_(state[1])

    def _frame(self) -> Reply:
        W = self._model.W.detach().float()
        sparsity, decay = self._settings
        losses = self._losses
        stride = max(1, -(-len(losses) // MAX_CURVE_POINTS))
        picked = list(range(len(losses) - 1, -1, -stride))[::-1]  # always keep the latest point
        curve = torch.stack([losses[i] for i in picked], 1) if picked else torch.zeros((W.shape[0], 0))
        reply = Reply({"step": self._step, "total": self._steps, "sparsity": list(sparsity), "importance_decay": decay})
        r = reply.result
        r["W"] = reply.add_array(W, "float32")
        r["b"] = reply.add_array(self._model.b.detach(), "float32")
        r["importance"] = reply.add_array(self._importance, "float32")
        r["gram"] = reply.add_array(torch.einsum("ima,imb->iab", W, W), "float32")
        r["norms"] = reply.add_array(W.norm(dim=1), "float32")
        r["dimensionality"] = reply.add_array(feature_dimensionality(W), "float32")
        r["loss_steps"] = reply.add_array(
            torch.tensor([self._loss_steps[i] for i in picked], dtype=torch.int32), "int32"
        )
        r["loss"] = reply.add_array(curve, "float32")
        return reply
