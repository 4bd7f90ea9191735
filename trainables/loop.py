"""The one epoch loop of every task: accelerator, optimizer and schedule, resume, best-epoch checkpoint, report.

A task's trainer subclasses :class:`EpochLoop` and supplies its batches (:meth:`~EpochLoop.train_loader`), its
step (:meth:`~EpochLoop.train_step`), its evaluation and its export; the loop does the rest the same way for
all of them, so a fix here (device placement, gradient accumulation, the schedule's length) fixes every task.

Best epoch, not last: every epoch is scored on valid; the weights of the best epoch by the study's metric are
kept, the reported checkpoint's ``model/`` is always the best so far, and when the trial runs to its end (all
epochs, or ``patience`` epochs without improvement) test is scored once, on the best weights, and its
predictions land in the final checkpoint. A trial stopped by the scheduler (ASHA) never reaches the end and
reports no test metrics.
"""

from __future__ import annotations

import copy
import shutil
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from torch import nn

from trainables.base import Reporter
from trainables.batching import placed, steps_per_epoch
from trainables.checkpoints import checkpoint_problem, seal_checkpoint
from trainables.faults import check_finite, inject
from trainables.io import atomic_write_json

__all__ = ["EpochLoop", "make_accelerator", "adamw", "is_better", "load_training_state"]


def make_accelerator(grad_accum: int = 1, precision: str = "auto") -> Accelerator:
    """DDP/Ray Train from the environment; autocast by ``precision`` (``resources.precision``): ``auto`` is bf16
    on GPUs that support it and fp32 elsewhere, ``bf16`` asks for it on the CPU too (weights and optimizer
    stay fp32), ``fp32`` never autocasts."""
    cuda = torch.cuda.is_available()
    if precision == "bf16" and cuda and not torch.cuda.is_bf16_supported():
        raise RuntimeError("resources.precision bf16: this GPU does not support bf16; use auto or fp32")
    bf16 = precision == "bf16" or (precision == "auto" and cuda and torch.cuda.is_bf16_supported())
    kwargs = {"cpu": not cuda, "mixed_precision": "bf16" if bf16 else "no", "gradient_accumulation_steps": int(grad_accum)}
    try:
        return Accelerator(**kwargs)
    except ValueError as err:
        # Accelerate keeps one process-wide state: a reused Ray actor (or a test process) that ran a trial at
        # another precision must drop it first. Its distributed part (PartialState) is kept.
        if "already been initialized" not in str(err):
            raise
        AcceleratorState._reset_state()
        return Accelerator(**kwargs)


def adamw(params: Any, **kwargs: Any) -> torch.optim.AdamW:
    """AdamW with torch's fused kernel where every parameter allows it (floating point, on a CPU or CUDA
    device): one kernel per step instead of a loop of small ops per tensor; HF ``Trainer``'s default too."""
    params = list(params)
    tensors = [p for group in params for p in (group["params"] if isinstance(group, dict) else [group])]
    fused = bool(tensors) and all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in tensors)
    return torch.optim.AdamW(params, fused=fused or None, **kwargs)


def is_better(value: float, best: float | None, direction: str) -> bool:
    """Whether ``value`` is at least as good as ``best`` (``None``: nothing yet) in ``direction`` (``min``/``max``).

    A tie goes to the later epoch: coarse metrics (top-1 on a small subset) tie often, and the later
    weights have trained longer.
    """
    if best is None:
        return value == value  # NaN never counts as best
    return value >= best if direction == "max" else value <= best


def load_training_state(reporter: Reporter) -> dict[str, Any]:
    """The reporter's ``state.pt`` when the trial resumes, else ``{}`` (loaded on the CPU)."""
    resume = reporter.resume_dir()
    if resume is None:
        return {}
    problem = checkpoint_problem(resume)  # the reporter already fell back to the newest valid one
    if problem is not None:
        raise RuntimeError(f"cannot resume: {problem}")
    state = torch.load(resume / "state.pt", map_location="cpu", weights_only=False)
    best = resume / "best.pt"
    if best.is_file():
        state["best_weights"] = torch.load(best, map_location="cpu", weights_only=False)
    return state


class EpochLoop:
    """Base of a task's trainer: the epoch loop; subclasses set ``model`` and implement the hooks.

    Attributes a subclass sets before :meth:`fit`: ``spec`` (``max_epochs``, ``seed``, ``metric``,
    ``direction``), ``config`` (``lr``, ``weight_decay``, ``batch_size``, ``grad_accum``, ``patience``),
    ``model``, and ``accelerator`` (:meth:`setup_accelerator`).
    """

    spec: Any
    config: dict[str, Any]
    model: nn.Module
    accelerator: Accelerator
    max_grad_norm: float | None = None
    # Wall-clock budget of one ``fit`` call (a prepared script's stage, e.g. benchmarks/gpu_papers.py): the trial
    # ends, test scored on the best epoch as at its last epoch, before an epoch that would not finish in time
    # (judged by the mean epoch so far). ``None``: no budget (studies budget trials through Ray Tune instead).
    max_seconds: float | None = None

    # -- set-up ---------------------------------------------------------------------------------
    def setup_accelerator(self) -> None:
        resources = getattr(self.spec, "resources", None)
        self.accelerator = make_accelerator(int(self.config.get("grad_accum", 1)),
                                            getattr(resources, "precision", "auto"))

    @property
    def device(self) -> torch.device:
        """Where every batch goes: the accelerator's device (the model's after ``prepare``)."""
        return self.accelerator.device

    def unwrapped(self) -> nn.Module:
        """The model without DDP (evaluation runs per rank, without collectives)."""
        return self.accelerator.unwrap_model(self.model)

    # -- hooks ----------------------------------------------------------------------------------
    def train_loader(self, epoch: int) -> Iterable[dict[str, torch.Tensor]]:
        """This epoch's training batches (CPU; the loop shards and places them)."""
        raise NotImplementedError

    def epoch_rows(self) -> list[int]:
        """Rows trained in each epoch (``max_epochs`` numbers): the length of the LR schedule."""
        raise NotImplementedError

    def train_step(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, int]:
        """Loss of one placed batch (mean over its units) and the number of units (rows, tokens)."""
        raise NotImplementedError

    def make_scheduler(self, optimizer: torch.optim.Optimizer, total_steps: int) -> Any:
        """The learning-rate schedule over ``total_steps`` optimizer steps."""
        raise NotImplementedError

    def evaluate_valid(self, ckpt: Path) -> dict[str, float]:
        """Valid metrics (without the ``valid_`` prefix); may write predictions into ``ckpt``."""
        raise NotImplementedError

    def evaluate_test(self, ckpt: Path) -> dict[str, float]:
        """Test metrics (without prefix) of the current weights; writes ``test_predictions.csv`` into ``ckpt``."""
        raise NotImplementedError

    def export(self, path: Path) -> None:
        """A self-contained serving directory of the current weights."""
        raise NotImplementedError

    def before_training(self, reporter: Reporter, state: dict[str, Any]) -> None:
        """Runs once after the model is placed, before the schedule is sized (selection set-up)."""

    def epoch_log(self, epoch: int) -> dict[str, Any]:
        """Extra numbers reported with the epoch's metrics."""
        return {}

    def extra_state(self) -> dict[str, Any]:
        """Task state saved in ``state.pt`` beside model/optimizer/scheduler (e.g. the selector's)."""
        return {}

    def write_artifacts(self, ckpt: Path) -> None:
        """Extra files of a checkpoint (e.g. ``selection.csv``)."""

    def valid_rows(self) -> int | None:
        """Molecules :meth:`evaluate_valid` predicts (for ``predict_ms_per_1k``): the trainer's ``valid`` rows,
        else its data's; ``None`` (the cost is not reported) when a trainer has neither."""
        for holder in (self, getattr(self, "data", None)):
            valid = getattr(holder, "valid", None)
            if valid is not None and hasattr(valid, "__len__"):
                return len(valid)
        return None

    def costs(self, wall_s: float, valid_s: float) -> dict[str, float]:
        """What the trial has spent so far (``trainables.metrics.COSTS``), reported with every epoch.

        ``wall_s``: the trial's training and evaluation seconds over all its epochs (a resumed trial keeps
        counting from its checkpoint); ``valid_s``: this epoch's valid evaluation.
        """
        res = getattr(self.spec, "resources", None)  # a bare loop (tests, phase-1 models) holds one device
        devices = res.num_workers * (res.gpus_per_trial if res.gpus_per_trial > 0 else 1) if res else 1
        cuda = self.device.type == "cuda"
        out = {"device_seconds": wall_s * devices,
               "peak_memory_mb": torch.cuda.max_memory_allocated(self.device) / 2**20 if cuda else 0.0,
               "trainable_params": float(sum(p.numel() for p in self.unwrapped().parameters() if p.requires_grad))}
        rows = self.valid_rows()
        if rows:
            out["predict_ms_per_1k"] = valid_s * 1000 / rows * 1000
        return out

    # -- the loop -------------------------------------------------------------------------------
    def make_optimizer(self) -> torch.optim.Optimizer:
        params = [p for p in self.model.parameters() if p.requires_grad]
        return adamw(params, lr=float(self.config["lr"]), weight_decay=float(self.config["weight_decay"]))

    def schedule_steps(self, rows: list[int]) -> int:
        """Optimizer steps of epochs training ``rows`` rows each (not the pool: a top-k trial reaches its peak LR)."""
        bs, accum = int(self.config["batch_size"]), int(self.config.get("grad_accum", 1))
        return sum(steps_per_epoch(n, bs, accum) for n in rows)

    def train_epoch(self, loader: Iterable[dict[str, torch.Tensor]], optimizer: torch.optim.Optimizer,
                    scheduler: Any) -> tuple[float, int]:
        """One pass; returns the mean loss per unit and the number of units.

        The loader is sharded across DDP ranks by Accelerate (which also tells ``accumulate`` where it
        ends) and every batch is placed on the device here, whoever built it.
        """
        self.model.train()
        loader = self.accelerator.prepare_data_loader(loader, device_placement=False)  # type: ignore[arg-type]
        total, count = 0.0, 0
        epoch = getattr(self, "epoch", 0)  # 1-based in fit; 0 in influence phase 1
        for step, batch in enumerate(placed(loader, self.device)):
            with self.accelerator.accumulate(self.model):
                with self.accelerator.autocast():
                    loss, n = self.train_step(batch)
                if step == 0:
                    loss = inject("step", self.config, epoch, loss)  # fault suite hook; inert unless CHEMTUNE_FAULTS
                value = float(loss.detach())  # the step's one host sync
                check_finite(value, epoch, step)  # before backward: a NaN never reaches the weights
                self.accelerator.backward(loss)
                if self.max_grad_norm and self.accelerator.sync_gradients:
                    self.accelerator.clip_grad_norm_(self.model.parameters(), self.max_grad_norm)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
            total += value * n
            count += n
        return total / max(count, 1), count

    def _weights(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().to("cpu", copy=True) for k, v in self.unwrapped().state_dict().items()}

    def fit(self, reporter: Reporter) -> dict[str, Any]:
        """Train for ``spec.max_epochs`` (resuming from the reporter's checkpoint), report every epoch."""
        state = load_training_state(reporter)
        self.model = self.accelerator.prepare(self.model)
        self.before_training(reporter, state)
        optimizer = self.make_optimizer()
        scheduler = self.make_scheduler(optimizer, max(self.schedule_steps(self.epoch_rows()), 2))
        optimizer, scheduler = self.accelerator.prepare(optimizer, scheduler)
        if state:
            self.unwrapped().load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
        metric, direction = self.spec.metric, self.spec.direction
        refit = bool(getattr(self.spec, "refit", False))  # keep the last epoch: valid was trained on (promote)
        patience = int(self.config.get("patience", 0) or 0)
        best: float | None = state.get("best")
        best_epoch: int = state.get("best_epoch", 0)
        best_weights: dict[str, torch.Tensor] | None = state.get("best_weights")
        wall_s = float(state.get("wall_s", 0.0))  # costs: a resumed trial counts on from its checkpoint
        if self.device.type == "cuda":  # a reused actor's earlier trial must not count as this one's peak
            torch.cuda.reset_peak_memory_stats(self.device)
        final: dict[str, Any] = {}
        fit_tic, epoch_s = time.perf_counter(), []  # the budget counts this call only, not a resumed run's past
        with tempfile.TemporaryDirectory(prefix="chemtune-best-") as keep:
            best_dir = Path(keep)  # the best epoch's export and valid predictions, copied into each checkpoint
            if best_weights is not None and reporter.resume_dir() is not None:
                shutil.copytree(reporter.resume_dir() / "model", best_dir / "model")  # type: ignore[operator]
            for epoch in range(state.get("epoch", 0), self.spec.max_epochs):
                self.epoch = epoch + 1
                tic = time.perf_counter()
                loss, units = self.train_epoch(self.train_loader(epoch), optimizer, scheduler)
                seconds = time.perf_counter() - tic
                with tempfile.TemporaryDirectory(prefix="chemtune-ckpt-") as tmp:
                    ckpt = Path(tmp)
                    valid_tic = time.perf_counter()
                    valid = {f"valid_{k}": v for k, v in self.evaluate_valid(ckpt).items()}
                    valid_s = time.perf_counter() - valid_tic
                    metrics: dict[str, Any] = {"epoch": epoch + 1, "train_loss": loss,
                                               **self.throughput(units, seconds), **valid, **self.epoch_log(epoch)}
                    if refit or is_better(float(valid[metric]), best, direction):
                        best, best_epoch, best_weights = float(valid[metric]), epoch + 1, self._weights()
                        shutil.rmtree(best_dir / "model", ignore_errors=True)
                        self.export(best_dir / "model")
                    metrics.update({"best_epoch": best_epoch, f"best_{metric}": best})
                    stale = epoch + 1 - best_epoch
                    epoch_s.append(time.perf_counter() - tic)
                    out_of_time = self.out_of_time(time.perf_counter() - fit_tic, epoch_s)
                    last, patient = epoch + 1 == self.spec.max_epochs, patience > 0 and stale >= patience
                    end = last or patient or out_of_time
                    if end:  # test is looked at once, on the best epoch's weights
                        current = self._weights()
                        if best_weights is not None:
                            self.unwrapped().load_state_dict(best_weights)
                        metrics.update({f"test_{k}": v for k, v in self.evaluate_test(ckpt).items()})
                        self.unwrapped().load_state_dict(current)
                        if self.max_seconds is not None:
                            metrics["budget_stopped"] = int(out_of_time and not last)
                        metrics["patience_stopped"] = int(not last and patient)
                    wall_s += time.perf_counter() - tic
                    metrics = {**self.costs(wall_s, valid_s), **metrics}  # a task's own count wins
                    torch.save({"model": self.unwrapped().state_dict(), "optimizer": optimizer.state_dict(),
                                "scheduler": scheduler.state_dict(), "epoch": epoch + 1, "best": best,
                                "best_epoch": best_epoch, "wall_s": wall_s, **self.extra_state()}, ckpt / "state.pt")
                    inject("checkpoint", self.config, epoch + 1)  # fault suite: killed while writing a checkpoint
                    if best_weights is not None:
                        torch.save(best_weights, ckpt / "best.pt")
                        shutil.copytree(best_dir / "model", ckpt / "model")
                    self.write_artifacts(ckpt)
                    atomic_write_json(ckpt / "metrics.json", metrics)
                    seal_checkpoint(ckpt)  # manifest written last: a torn checkpoint is detected on load
                    reporter.report(metrics, ckpt)
                final = metrics
                if end:
                    break
        return final

    def out_of_time(self, elapsed: float, epoch_seconds: list[float]) -> bool:
        """Whether another epoch (as long as the mean so far) would overrun :attr:`max_seconds`."""
        if self.max_seconds is None:
            return False
        return elapsed + sum(epoch_seconds) / len(epoch_seconds) > self.max_seconds

    def throughput(self, units: int, seconds: float) -> dict[str, float]:
        """Speed numbers of an epoch (``units`` as :meth:`train_step` counts them)."""
        return {"train_units_per_s": units / max(seconds, 1e-9)}

    def copy_model(self) -> nn.Module:
        """A detached copy of the unwrapped model (a phase-1 model, a snapshot)."""
        return copy.deepcopy(self.unwrapped())
