"""Grokking: train a one-layer transformer on ``(a + b) mod p`` live and watch it memorise, then generalise.

The setup is Nanda et al. 2023's (one layer, ReLU MLP, no LayerNorm, full-batch AdamW with strong weight decay
on a fraction of all pairs; :class:`mi_widgets.zoo.modadd.ModAddConfig`), trained a step at a time by
:class:`~mi_widgets.zoo.modadd.ModAddTrainer` on a worker thread. The view gets train/test loss and accuracy,
the Fourier spectrum of the embedding, the key frequencies as they appear, the paper's restricted and excluded
losses (:func:`mi_widgets.analysis.fourier.progress_measures`), the weight norm and the phases; a slider scrubs
back through the checks, whose weights are kept (up to ``n_checkpoints``) for :meth:`Grokking.to_model`.
"""

from __future__ import annotations

import bisect
import math
import threading
from typing import Any

import torch
import traitlets

from ..analysis import fourier
from ..analysis.fourier import advance_phase_ends, phases_from_ends
from ..capture.modular import check_memory
from ..transport import picture
from ..transport.protocol import Reply
from ..zoo import modadd
from .base import static_asset
from .training import TrainingWidget

LOG_METRICS = ("train_loss", "test_loss", "train_acc", "test_acc")
CHECK_METRICS = ("restricted_loss", "excluded_loss", "weight_norm", "key_fraction")
MAX_CURVE_POINTS = 1000
MAX_CHECKS = 200

# The live default, measured on a 2-core CPU (one torch thread, ~13 steps/s with or without the view:
# benchmarks/RESULTS.md, "Training with the view attached"): memorised by
# step ~60, test accuracy 99% at steps 770-1270 (seeds 0-2), about two minutes there. The paper's setup (p=113,
# 30% of pairs, lr 1e-3: `Grokking.paper()`, and `modadd-113` in the zoo) takes ~8000 steps, 20-40 minutes on
# that CPU. Smaller p with 30% of pairs groks late or not at all; 50% of pairs generalises without a delay.
LIVE = {"p": 67, "train_frac": 0.4, "lr": 3e-3, "weight_decay": 1.0}
PAPER = {"p": 113, "train_frac": 0.3, "lr": 1e-3, "weight_decay": 1.0}


def check_fits(config: modadd.ModAddConfig, device: torch.device) -> None:
    """Refuse a ``p`` whose full-batch training would not fit the device's free memory (half of it, at most)."""
    n = config.p * config.p
    width = config.d_mlp * 3 + config.p * 3 + config.n_heads * 12 + config.d_model * 4
    # float32 activations and their gradients over all pairs, roughly
    check_memory(
        4 * n * width,
        device,
        f"full-batch training on p={config.p} (all {n} pairs)",
        "choose a smaller p (the paper uses 113)",
    )


class Grokking(TrainingWidget):
    """Train the paper's modular-addition transformer live; the view shows it grok.

    ``run = mw.Grokking()`` then ``run.start()`` (or ``autostart=True``, or the view's Start). The defaults grok
    in about 1000 steps (p=67, 40% of pairs for training, lr 3e-3, weight decay 1; two minutes on a laptop CPU);
    ``mw.Grokking.paper(device="cuda")`` is the paper's setup (p=113, 30%, lr 1e-3, 20000 steps: it groks at
    ~8000), or pass any of them: ``mw.Grokking(p=113, train_frac=0.3, lr=1e-3)``. ``run.history`` and
    ``run.checks`` hold what was logged,
    ``run.phases`` the phases, ``run.key_frequencies`` the current ones; ``run.to_model(step)`` is a
    TransformerLens bridge with the weights of the kept check nearest ``step`` (for
    :class:`~mi_widgets.FourierView`): weights are kept at up to ``n_checkpoints`` checks, spread over the run,
    so a step chosen on the slider may map to a nearby kept one.
    ``device`` defaults to CUDA when there is one. Every ``log_every`` steps train and test loss and accuracy are
    logged; every ``check_every`` steps (default: about 200 checks per run) the embedding's spectrum, the key
    frequencies, the restricted and excluded losses (with the key frequencies of that moment) and the weight
    norm; :meth:`progress_measures` recomputes the losses from the kept weights with one set of frequencies, as
    the paper does with the final ones.

    If the loss becomes NaN or infinite, training stops with the weights (and the logs) of the last good step;
    the optimizer's moments are not rolled back, so lower ``lr`` before training again.
    """

    _esm = static_asset("grokking.js")
    _css = static_asset("grokking.css")
    _thread_name = "mi_widgets-grokking"
    _chunk = 50

    p = traitlets.Int(read_only=True).tag(sync=True)
    train_frac = traitlets.Float(read_only=True).tag(sync=True)
    device = traitlets.Unicode(read_only=True).tag(sync=True)
    key_frequencies = traitlets.List(traitlets.Int(), read_only=True).tag(sync=True)
    phase = traitlets.Unicode("", read_only=True).tag(sync=True)
    selected_step = traitlets.Int(-1).tag(sync=True)

    def __init__(
        self,
        p: int = LIVE["p"],
        train_frac: float = LIVE["train_frac"],
        *,
        weight_decay: float = LIVE["weight_decay"],
        lr: float = LIVE["lr"],
        d_model: int = 128,
        n_heads: int = 4,
        d_mlp: int = 512,
        steps: int = 3000,
        seed: int = 0,
        data_seed: int = 0,
        device: torch.device | str | None = None,
        log_every: int = 10,
        check_every: int | None = None,
        n_checkpoints: int = 64,
        frame_rate: float = 10.0,
        autostart: bool = False,
    ) -> None:
        if isinstance(p, bool) or not isinstance(p, int) or not fourier.is_prime(p) or p < 5:
            raise ValueError(f"p must be a prime number of at least 5 (the paper uses 113), got {p!r}")
        if isinstance(train_frac, bool) or not isinstance(train_frac, (int, float)) or not 0 < train_frac < 1:
            raise ValueError(
                f"train_frac must be a fraction strictly between 0 and 1 (the paper uses 0.3), got {train_frac!r}"
            )
        n_train = int(train_frac * p * p)
        if not 0 < n_train < p * p:
            raise ValueError(
                f"train_frac={train_frac} leaves {n_train} of {p * p} pairs for training: no train or test set"
            )
        for name, value, low in (("weight_decay", weight_decay, 0.0), ("lr", lr, None)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"{name} must be a finite number, got {value!r}")
            if (low is None and value <= 0) or (low is not None and value < low):
                raise ValueError(f"{name} must be {'positive' if low is None else 'non-negative'}, got {value!r}")
        for name, value in (
            ("d_model", d_model),
            ("n_heads", n_heads),
            ("d_mlp", d_mlp),
            ("steps", steps),
            ("log_every", log_every),
            ("n_checkpoints", n_checkpoints),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        for name, value in (("seed", seed), ("data_seed", data_seed)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
        if d_model % n_heads:
            raise ValueError(f"d_model ({d_model}) must be a multiple of n_heads ({n_heads})")
        if check_every is None:
            check_every = max(log_every, -(-steps // MAX_CHECKS // log_every) * log_every)
        if isinstance(check_every, bool) or not isinstance(check_every, int) or check_every < 1:
            raise ValueError(f"check_every must be a positive integer, got {check_every!r}")
        self.config = modadd.ModAddConfig(
            p=p,
            d_model=d_model,
            n_heads=n_heads,
            d_head=d_model // n_heads,
            d_mlp=d_mlp,
            train_frac=float(train_frac),
            lr=float(lr),
            weight_decay=float(weight_decay),
            seed=seed,
            data_seed=data_seed,
        )
        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self._device = torch.device(device)
        check_fits(self.config, self._device)
        self._steps, self._log_every, self._check_every = steps, log_every, check_every
        self._n_checkpoints = n_checkpoints
        self._reset_state()
        super().__init__(frame_rate=frame_rate)
        self.set_trait("p", p)
        self.set_trait("train_frac", float(train_frac))
        self.set_trait("device", str(self._device))
        if autostart:
            self.start()

    @classmethod
    def paper(cls, **options: Any) -> Grokking:
        """The paper's setup (p=113, 30% of pairs, lr 1e-3, weight decay 1, 20000 steps); ``options`` override."""
        return cls(**{**PAPER, "steps": 20_000, **options})

    # ----- Python API ------------------------------------------------------------------

    @property
    def history(self) -> dict[str, torch.Tensor]:
        """Logged every ``log_every`` steps: ``step``, ``train_loss``, ``test_loss``, ``train_acc``, ``test_acc``."""
        rows = list(self._rows)
        columns = list(zip(*rows)) if rows else [[] for _ in range(len(LOG_METRICS) + 1)]
        return {name: torch.tensor(col, dtype=torch.float64) for name, col in zip(("step", *LOG_METRICS), columns)}

    @property
    def checks(self) -> dict[str, Any]:
        """Every ``check_every`` steps: ``step``, the four progress measures, ``spectrum`` [checks, (p+1)//2] and
        ``key_frequencies`` (a list per check)."""
        checks = list(self._checks)
        out: dict[str, Any] = {"step": torch.tensor([c["step"] for c in checks], dtype=torch.int64)}
        for name in CHECK_METRICS:
            out[name] = torch.tensor([c[name] for c in checks], dtype=torch.float64)
        width = (self.config.p + 1) // 2
        out["spectrum"] = torch.stack([c["spectrum"] for c in checks]) if checks else torch.zeros(0, width)
        out["key_frequencies"] = [c["key_frequencies"] for c in checks]
        return out

    @property
    def phases(self) -> list[dict[str, Any]]:
        """The phases so far, ``[{"name", "start", "end"}]`` with ``end`` None while one lasts (how they are found:
        :func:`~mi_widgets.analysis.fourier.grokking_phases`)."""
        return self._phases()

    @property
    def params(self) -> dict[str, torch.Tensor]:
        """A copy of the current weights (keys of the bridge's state dict)."""
        with self._lock:
            return self._trainer.snapshot()

    @property
    def kept_steps(self) -> list[int]:
        """Steps whose weights are kept (the checks, thinned to at most ``n_checkpoints``)."""
        with self._lock:
            return sorted(self._kept)

    def params_at(self, step: int | None = None) -> dict[str, torch.Tensor]:
        """The weights at the kept check nearest ``step`` (the current weights for None or -1), on the device."""
        if step is None or step < 0:
            return self.params
        with self._lock:
            kept = dict(self._kept)
        if not kept:
            return self.params
        steps = sorted(kept)
        i = bisect.bisect_left(steps, step)
        near = min(steps[max(0, i - 1) : i + 1], key=lambda s: abs(s - step))
        return {k: v.to(self._device, copy=True) for k, v in kept[near].items()}

    def to_model(self, step: int | None = None) -> Any:
        """A TransformerLens ``TransformerBridge`` with the weights at ``step`` (see :meth:`params_at`; default:
        the selected step of the view's slider, else the current weights), in eval mode on the training device."""
        if step is None:
            step = self.selected_step
        return modadd.to_bridge(self.params_at(step), self.config)

    def progress_measures(self, freqs: list[int] | None = None) -> dict[str, torch.Tensor]:
        """Restricted/excluded loss, key fraction and weight norm at every kept check, all with ``freqs``
        (default: the current key frequencies), as the paper computes its curves with the final ones."""
        freqs = list(self.key_frequencies) if freqs is None else list(freqs)
        with self._lock:
            kept = dict(self._kept)
        steps = sorted(kept)
        rows = [modadd.progress_measures(kept[s], freqs, self.config) for s in steps]
        out = {"step": torch.tensor(steps, dtype=torch.int64)}
        for name in ("train_loss", "test_loss", *CHECK_METRICS):
            out[name] = torch.tensor([r[name] for r in rows], dtype=torch.float64)
        return out

    # ----- training ----------------------------------------------------------------------

    def _reset_state(self) -> None:
        self._lock = threading.Lock()  # the worker's steps and kept weights vs the caller's reads of them
        self._trainer = modadd.ModAddTrainer(self.config, self._device)
        self._rows: list[tuple[float, ...]] = []
        self._phase_ends: list[int] = []  # the step each phase ended at, found as rows are logged
        self._checks: list[dict[str, Any]] = []
        self._kept: dict[int, dict[str, torch.Tensor]] = {}
        self._tokens = fourier.all_pairs(self.config.p)[0].to(self._device)
        self._labels = fourier.all_pairs(self.config.p)[1].to(self._device)

    def _n_steps(self) -> int:
        return self._steps

    def _reset(self) -> None:
        self._reset_state()
        with self.hold_sync():
            self.set_trait("key_frequencies", [])
            self.set_trait("phase", "")

    def _train(self, n: int) -> float:
        trainer = self._trainer
        loss = torch.tensor(math.nan)
        for _ in range(n):
            step = trainer.steps
            if step % self._check_every == 0:
                self._check(step)
            logged = step % self._log_every == 0
            with self._lock:
                loss = trainer.step(evaluate=logged)
            if logged:
                self._log(step, trainer.metrics)
        last = trainer.steps
        if last == self._steps:  # the end of the run: log and check the final weights too
            self._log(last, trainer.evaluate())
            self._check(last)
        return float(loss)

    def _log(self, step: int, m: dict[str, float]) -> None:
        row = (float(step), *(m[k] for k in LOG_METRICS))
        self._rows.append(row)
        advance_phase_ends(self._phase_ends, row)
        name = self._phases()[-1]["name"]
        if name != self.phase:
            self.set_trait("phase", name)

    def _phases(self) -> list[dict[str, Any]]:
        rows = self._rows
        return phases_from_ends(int(rows[0][0]), list(self._phase_ends)) if rows else []

    @torch.no_grad()
    def _check(self, step: int) -> None:
        trainer, p = self._trainer, self.config.p
        params = trainer.params  # read on the worker, between steps
        a, b = self._tokens[:, 0], self._tokens[:, 1]
        logits, neurons = modadd.fast_forward(params, a, b, p, self.config.n_heads, return_neurons=True)
        frequency, fraction, _ = fourier.neuron_frequencies(neurons, p)
        keys = fourier.neuron_key_frequencies(frequency, fraction)
        mask = trainer.train_mask.to(self._device)
        measures = fourier.progress_measures(logits, self._labels, mask, keys, p)
        self._checks.append(
            {
                "step": step,
                "restricted_loss": measures["restricted_loss"],
                "excluded_loss": measures["excluded_loss"],
                "key_fraction": measures["key_fraction"],
                "weight_norm": modadd.weight_norm(params),
                "spectrum": fourier.fourier_norms(params["embed.weight"], p).cpu(),
                "key_frequencies": keys,
            }
        )
        self._keep(step, trainer.snapshot())
        if keys != list(self.key_frequencies):
            self.set_trait("key_frequencies", keys)

    def _keep(self, step: int, state: dict[str, torch.Tensor]) -> None:
        """Keep ``state``; past ``n_checkpoints`` drop every other kept check (never the first or the newest)."""
        with self._lock:
            self._kept[step] = {k: v.cpu() for k, v in state.items()}
            if len(self._kept) > self._n_checkpoints:
                steps = sorted(self._kept)
                for s in steps[1:-1:2]:
                    del self._kept[s]

    def _checkpoint(self) -> dict[str, Any] | None:
        state = self._trainer.snapshot()
        if not all(bool(torch.isfinite(t).all()) for t in state.values()):
            return None
        return {"params": state, "steps": self._trainer.steps}

    def _restore(self, state: dict[str, Any]) -> None:
        """Back to the last good weights; logs and checks from the steps after them are dropped."""
        steps = state["steps"]
        with self._lock:
            self._trainer.load(state["params"])
            self._trainer.steps = steps
            for s in [s for s in self._kept if s > steps]:
                del self._kept[s]
        self._rows = [r for r in self._rows if r[0] <= steps]
        self._checks = [c for c in self._checks if c["step"] <= steps]
        self._phase_ends = []
        for row in self._rows:
            advance_phase_ends(self._phase_ends, row)
        phases = self._phases()
        self.set_trait("phase", phases[-1]["name"] if phases else "")

    def _picture(self) -> Any:
        """Train and test loss (log scale) and accuracy so far, the phase and the key frequencies."""
        h = self.history
        steps = h["step"].tolist()
        keys = ", ".join(map(str, self.key_frequencies)) or "none yet"
        return picture.compose(
            f"Grokking: p = {self.config.p}, step {self._trainer.steps} of {self._steps}; phase: "
            f"{self.phase or 'not started'}; key frequencies: {keys}",
            [
                picture.Panel(
                    picture.line_chart(
                        [("train", steps, h["train_loss"].tolist()), ("test", steps, h["test_loss"].tolist())],
                        log_y=True,
                    ),
                    "loss",
                ),
                picture.Panel(
                    picture.line_chart(
                        [("train", steps, h["train_acc"].tolist()), ("test", steps, h["test_acc"].tolist())]
                    ),
                    "accuracy",
                ),
            ],
            self._picture_note(),
        )

    def _frame(self) -> Reply:
        rows = list(self._rows)
        stride = max(1, -(-len(rows) // MAX_CURVE_POINTS))
        picked = [rows[i] for i in range(len(rows) - 1, -1, -stride)][::-1]
        table = (
            torch.tensor(picked, dtype=torch.float64)
            if picked
            else torch.zeros((0, len(LOG_METRICS) + 1), dtype=torch.float64)
        )
        checks = list(self._checks)
        every = max(1, -(-len(checks) // MAX_CHECKS))  # at most MAX_CHECKS, the newest always among them
        checks = [checks[i] for i in range(len(checks) - 1, -1, -every)][::-1]
        width = (self.config.p + 1) // 2
        reply = Reply(
            {
                "step": self._trainer.steps,
                "total": self._steps,
                "p": self.config.p,
                "metrics": list(LOG_METRICS),
                "check_metrics": list(CHECK_METRICS),
                "key_frequencies": list(checks[-1]["key_frequencies"]) if checks else [],
                "phases": self._phases(),
            }
        )
        reply.result["steps"] = reply.add_array(table[:, 0].to(torch.int32), "int32")
        reply.result["values"] = reply.add_array(table[:, 1:].T.float().contiguous(), "float32")
        check_values = torch.tensor([[c[m] for m in CHECK_METRICS] for c in checks], dtype=torch.float32)
        reply.result["check_steps"] = reply.add_array(
            torch.tensor([c["step"] for c in checks], dtype=torch.int32), "int32"
        )
        reply.result["check_values"] = reply.add_array(
            check_values.T.contiguous() if checks else torch.zeros(len(CHECK_METRICS), 0), "float32"
        )
        spectrum = torch.stack([c["spectrum"] for c in checks]) if checks else torch.zeros(0, width)
        reply.result["spectrum"] = reply.add_array(spectrum.float().contiguous(), "float32")
        return reply
