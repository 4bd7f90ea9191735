"""Trial faults: divergence checks, and faults injected on purpose (the fault suite's chaos hooks).

``CHEMTUNE_FAULTS`` (JSON, a list of faults; unset in normal use, so every hook is a no-op) makes a
trial fail the way real ones do — its loss turns NaN, it runs out of memory, its process is killed,
killed while it writes a checkpoint — at a chosen epoch, for chosen configurations, at most ``times``
times (counted with marker files, so a retried or resumed trial sees how often a fault already fired)::

    [{"kind": "nan", "epoch": 2, "match": {"lr": 0.001}, "times": 1, "id": "nan-lr"}]

``CHEMTUNE_FAULTS_STATE`` is the folder of those marker files. The driver forwards ``CHEMTUNE_*``
variables to Ray workers, so the faults reach every trial process. Faults are injected at the same
places real failures happen: after the first optimizer step of an epoch (``nan``, ``oom``, ``kill``,
and ``slow``: a straggler that sleeps ``seconds``) and between writing a checkpoint's files
(``kill_in_checkpoint``). ``"epoch": "any"`` matches every epoch. ``"at"`` names another point: ``baseline``
is a study's baseline fit (its config is ``{"baseline": name}``, epoch 1), e.g. a slow one beside the trials.
"""

from __future__ import annotations

import json
import math
import os
import signal
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["TrialDiverged", "FAULTS_ENV", "STATE_ENV", "check_finite", "inject"]

FAULTS_ENV, STATE_ENV = "CHEMTUNE_FAULTS", "CHEMTUNE_FAULTS_STATE"
_KINDS = ("nan", "oom", "kill", "kill_in_checkpoint", "raise", "slow")
_POINTS = {"nan": "step", "oom": "step", "kill": "step", "raise": "step", "slow": "step",
           "kill_in_checkpoint": "checkpoint"}


class TrialDiverged(RuntimeError):
    """The training loss is no longer finite: the trial fails (Optuna FAIL), it is not pruned.

    A NaN is not a bad score that a sampler can learn from as an intermediate value (pruned trials keep
    theirs); it says this configuration cannot be trained, so the trial is told to Optuna as FAIL.
    """


def check_finite(loss: float, epoch: int, step: int) -> float:
    """Raise :class:`TrialDiverged` naming the epoch and step when ``loss`` is NaN or infinite."""
    if not math.isfinite(loss):
        raise TrialDiverged(f"training loss became {loss} at epoch {epoch}, step {step}: the trial diverged "
                            "(lower the learning rate, or clip gradients)")
    return loss


def _faults() -> list[dict[str, Any]]:
    raw = os.environ.get(FAULTS_ENV)
    if not raw:
        return []
    faults = json.loads(raw)
    for i, fault in enumerate(faults):
        if fault.get("kind") not in _KINDS:
            raise ValueError(f"{FAULTS_ENV}[{i}].kind: {fault.get('kind')!r} is not one of {_KINDS}")
    return faults


def _matches(fault: Mapping[str, Any], config: Mapping[str, Any], epoch: int) -> bool:
    if fault.get("epoch") != "any" and int(fault.get("epoch", 1)) != epoch:
        return False
    return all(k in config and (config[k] == v or str(config[k]) == str(v)) for k, v in fault.get("match", {}).items())


def _claim(fault: Mapping[str, Any], index: int) -> bool:
    """Count one firing of ``fault``; False once it fired ``times`` times (default 1)."""
    folder = Path(os.environ.get(STATE_ENV) or Path.cwd() / ".chemtune-faults")
    folder.mkdir(parents=True, exist_ok=True)
    for n in range(int(fault.get("times", 1))):
        try:  # O_EXCL: two processes never claim the same firing
            os.close(os.open(folder / f"{fault.get('id', index)}.{n}", os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            return True
        except FileExistsError:
            continue
    return False


def inject(point: str, config: Mapping[str, Any], epoch: int, loss: Any = None) -> Any:
    """The hook the training loops call at ``point`` ("step" or "checkpoint") of 1-based ``epoch``.

    Returns ``loss`` unchanged, or a NaN loss of the same type for a ``nan`` fault.
    """
    for index, fault in enumerate(_faults()):
        at = fault.get("at", _POINTS[fault["kind"]])
        if at != point or not _matches(fault, config, epoch) or not _claim(fault, index):
            continue
        kind = fault["kind"]
        if kind == "nan":
            return loss * float("nan")
        if kind == "oom":
            import torch

            raise torch.OutOfMemoryError(f"CUDA out of memory (injected fault at epoch {epoch})")
        if kind == "raise":
            raise RuntimeError(f"injected fault at epoch {epoch}")
        if kind == "slow":  # a straggling step (a busy node, a slow disk): time passes, nothing fails
            import time

            time.sleep(float(fault.get("seconds", 1.0)))
            continue
        os.kill(os.getpid(), signal.SIGKILL)  # kill, kill_in_checkpoint: no cleanup, like a pre-empted node
    return loss
