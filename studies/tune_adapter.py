"""The Ray side of a trial: reporters that hand the plain core's metrics and checkpoints to Tune / Train.

The core (``trainables``) only knows the ``Reporter`` protocol and its do-nothing ``NullReporter``; the
runner picks :class:`TuneReporter` for a one-worker trial and :class:`TrainReporter` inside a Ray Train worker.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from trainables.base import resumable_folder

__all__ = ["TuneReporter", "TrainReporter", "trial_reporter"]


class TuneReporter:
    """Reports to the running Ray Tune trial; checkpoints are persisted by Tune's storage."""

    def __init__(self) -> None:
        self._restored: Path | None = None

    def report(self, metrics: Mapping[str, Any], checkpoint_dir: Path | None = None) -> None:
        from ray import tune

        checkpoint = tune.Checkpoint.from_directory(str(checkpoint_dir)) if checkpoint_dir else None
        tune.report(dict(metrics), checkpoint=checkpoint)

    def resume_dir(self) -> Path | None:
        from ray import tune

        if self._restored is None:
            self._restored = resumable_folder(tune.get_checkpoint())  # the newest valid one
        return self._restored


class TrainReporter:
    """The :class:`~trainables.base.Reporter` of a Ray Train worker: all ranks report, rank 0 checkpoints."""

    def __init__(self) -> None:
        self._restored: Path | None = None
        self._looked = False

    def report(self, metrics: Mapping[str, Any], checkpoint_dir: Path | None = None) -> None:
        import ray.train

        context = ray.train.get_context()
        rank = context.get_world_rank()
        metrics = {**metrics, "train_world_size": context.get_world_size()}
        checkpoint = None
        if checkpoint_dir is not None and rank == 0:  # one copy of the (identical) DDP weights
            checkpoint = ray.train.Checkpoint.from_directory(str(checkpoint_dir))
        ray.train.report(dict(metrics), checkpoint=checkpoint)

    def resume_dir(self) -> Path | None:
        import ray.train

        if not self._looked:
            self._restored = resumable_folder(ray.train.get_checkpoint())  # the newest valid one
            self._looked = True
        return self._restored


def trial_reporter() -> TuneReporter | TrainReporter:
    """The reporter of the running trial: Train's inside a Ray Train worker (several per trial), else Tune's."""
    from cluster.distributed import in_train_worker

    return TrainReporter() if in_train_worker() else TuneReporter()
