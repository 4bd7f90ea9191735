"""Several workers per trial: the trainable runs under Ray Train's ``TorchTrainer`` inside one Tune trial.

Ray >= 2.43 (Train V2) runs a ``TorchTrainer`` from inside a Tune function trainable: the trial is a light
driver that starts the Train run, whose workers reserve the study's per-trial resources each. Ray Train sets
up the ``torch.distributed`` process group (NCCL on GPUs, gloo on CPUs) and the ``RANK``/``WORLD_SIZE``
environment; Accelerate inside each worker picks it up, wraps the model in DDP and shards the data loader.

Every worker reports each epoch (Ray Train needs all ranks at ``ray.train.report``); only rank 0 attaches the
checkpoint. A Train callback forwards rank 0's metrics and checkpoint to the driver, which reports them to
Tune, so ASHA, Optuna, the MLflow callback and trial resume see exactly what a one-worker trial gives them.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from trainables.spec import ResourcesSpec

__all__ = ["distributed_trainable", "in_train_worker", "scaling_config"]

_DONE = "__chemtune_train_done__"


def in_train_worker() -> bool:
    """Whether this process is a Ray Train worker (inside ``TorchTrainer.fit``)."""
    try:
        from ray.train.v2._internal.util import _in_ray_train_worker
    except ImportError:  # Ray without Train V2
        return False
    return _in_ray_train_worker()


def scaling_config(spec: "ResourcesSpec") -> Any:
    """Ray Train's ``ScalingConfig``: ``num_workers`` workers, each with the per-trial CPUs and GPUs."""
    from ray.train import ScalingConfig

    per_worker: dict[str, float] = {"CPU": spec.cpus_per_trial}
    if spec.gpus_per_trial:
        per_worker["GPU"] = spec.gpus_per_trial
    return ScalingConfig(num_workers=spec.num_workers, use_gpu=spec.gpus_per_trial > 0,
                         resources_per_worker=per_worker)


def _train_loop(loop_config: dict[str, Any]) -> None:
    """Runs on every Train worker: the study's trainable, whose reporter hands over to :class:`studies.tune_adapter.TrainReporter`."""
    loop_config["trainable"](loop_config["config"])


def _forward_callback(queue: Any) -> Any:
    from ray.train.v2.api.callback import UserCallback

    class ForwardToTune(UserCallback):
        """Runs in the Train controller: passes rank 0's metrics and checkpoint to the Tune driver."""

        def after_report(self, run_context: Any, metrics: list[dict[str, Any]], checkpoint: Any) -> None:
            queue.put((dict(metrics[0]), checkpoint), timeout=600)

    return ForwardToTune()


def distributed_trainable(trainable: Callable[[dict[str, Any]], Any], spec: "ResourcesSpec") -> Callable[..., None]:
    """A Tune function trainable that runs ``trainable`` on ``spec.num_workers`` Ray Train workers.

    Args:
        trainable: The study's Tune function trainable (``config -> None``); it must report through
            :class:`studies.tune_adapter.TuneReporter`, which hands over to :class:`studies.tune_adapter.TrainReporter` in a worker.
        spec: Per-worker CPUs/GPUs and the number of workers.

    Returns:
        The driver trainable. It reserves no CPU itself (it only waits on the Train run), so the runner limits
        concurrent trials with :func:`cluster.resources.limit_search`, which counts every worker of a trial.
    """
    from ray import tune

    scaling = scaling_config(spec)

    def driver(config: dict[str, Any]) -> None:
        from ray.train import FailureConfig, RunConfig
        from ray.train.torch import TorchTrainer
        from ray.util.queue import Empty, Queue

        storage = tune.get_context().get_storage()
        queue = Queue(maxsize=1, actor_options={"num_cpus": 0})
        trainer = TorchTrainer(
            _train_loop,
            train_loop_config={"config": config, "trainable": trainable},
            scaling_config=scaling,
            run_config=RunConfig(
                # Beside the Tune trial on the same (shared) storage; Tune owns retries (max_failures).
                name="ray-train", storage_path=storage.trial_fs_path, storage_filesystem=storage.storage_filesystem,
                failure_config=FailureConfig(max_failures=0), callbacks=[_forward_callback(queue)],
            ),
            resume_from_checkpoint=tune.get_checkpoint(),
        )
        outcome: dict[str, BaseException] = {}

        def fit() -> None:
            try:
                trainer.fit()
            except BaseException as err:  # noqa: BLE001 - re-raised in the trial below
                outcome["error"] = err
            finally:
                queue.put((_DONE, None))

        thread = threading.Thread(target=fit, name="chemtune-torchtrainer", daemon=True)
        thread.start()
        while True:
            try:
                metrics, checkpoint = queue.get(timeout=5)
            except Empty:
                continue
            if metrics == _DONE:
                break
            # Tune copies the checkpoint into the trial's storage; MLflow and resume read it from there.
            tune.report(metrics, checkpoint=checkpoint)
        thread.join()
        queue.shutdown()
        if "error" in outcome:
            raise outcome["error"]

    driver.__name__ = getattr(trainable, "__name__", "distributed_trainable")
    # The driver needs no CPU, but Tune needs a non-empty request: a token 1 MiB of memory.
    return tune.with_resources(driver, {"cpu": 0, "memory": 1 << 20})
