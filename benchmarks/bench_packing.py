"""Packing: N trials sharing one device vs 1 trial alone, through `chemtune launch` (Ray Tune resources).

On a GPU the packed trials ask `gpus_per_trial: 1/N` (Ray puts all N on the one GPU) and the lone trial
`gpus_per_trial: 1`; on CPU (CI-sized) the packed trials ask 1/N of the cores each and the lone trial all
of them. Printed side by side in one run: aggregate samples/s (trials x epochs x train rows / wall) and
the device's busy share (GPU utilization from NVML, or CPU utilization) while each launch ran.
Target on one GPU: packed aggregate >= 3.5x the lone trial's.

    python benchmarks/bench_packing.py [--trials 4] [--limit 2000] [--epochs 2] [--model tiny-bert]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import threading
import time
from typing import Any

os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


def study(args: argparse.Namespace, trials: int, gpu: bool, cpus: int) -> dict[str, Any]:
    """The benchmark study: ``trials`` identical configurations sharing the device."""
    share = {"gpus_per_trial": 1 / trials, "cpus_per_trial": max(cpus // trials, 1)} if gpu else {
        "gpus_per_trial": 0, "cpus_per_trial": cpus / trials}
    config = {"method": "full", "lr": 1e-4, "weight_decay": 0.01, "batch_size": args.batch_size, "head_dropout": 0.1}
    return {
        "name": f"bench-packing-{trials}", "task": "property",
        "dataset": {"name": "nci-logp", "split": "random", "limit": args.limit},
        "model": {"name": args.model, "max_length": 128}, "search_space": "property",
        "fixed": config, "num_trials": trials, "max_epochs": args.epochs,
        "scheduler": {"grace_period": args.epochs},  # no early stopping: every trial does the same work
        "resources": {**share, "max_concurrent_trials": trials},
        "baselines": {"random_forest": False},  # only the trials share the device
    }


class BusySampler:
    """Mean device utilization (0..1) over a block: NVML's GPU utilization, or the CPU's."""

    def __init__(self, gpu: bool, every: float = 0.2) -> None:
        self.gpu, self.every, self.samples = gpu, every, []
        self._stop = threading.Event()

    def _read(self) -> float:
        if self.gpu:
            import torch

            return torch.cuda.utilization() / 100
        import psutil

        return psutil.cpu_percent(interval=None) / 100

    def _run(self) -> None:
        self._read()  # psutil's first reading is meaningless
        while not self._stop.wait(self.every):
            self.samples.append(self._read())

    def __enter__(self) -> "BusySampler":
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def mean(self) -> float:
        return sum(self.samples) / max(len(self.samples), 1)


def run(args: argparse.Namespace, trials: int, gpu: bool, cpus: int, root: str) -> tuple[float, float, int]:
    """``(wall seconds, busy share, samples trained)`` of one launch."""
    from studies.runner import launch, prepare
    from studies.spec import parse_study

    spec = parse_study(study(args, trials, gpu, cpus))
    n_train = prepare(spec).summary["n_train"]
    with BusySampler(gpu) as busy:
        tic = time.perf_counter()
        result = launch(spec, root=root)
        wall = time.perf_counter() - tic
    assert result.num_errors == 0 and len(result.leaderboard) == trials, result.leaderboard
    return wall, busy.mean, trials * args.epochs * n_train


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--trials", type=int, default=4)
    parser.add_argument("--limit", type=int, default=2000)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--model", default="tiny-bert")
    args = parser.parse_args(argv)

    import ray
    import torch

    gpu = torch.cuda.is_available()
    cpus = os.cpu_count() or 1
    ray.init(include_dashboard=False, log_to_driver=False, num_cpus=cpus, num_gpus=1 if gpu else 0)  # once, for both
    try:
        with tempfile.TemporaryDirectory() as root:
            alone = run(args, 1, gpu, cpus, root)
            packed = run(args, args.trials, gpu, cpus, root)
    finally:
        ray.shutdown()
    rate = {"alone": alone[2] / alone[0], "packed": packed[2] / packed[0]}
    device = torch.cuda.get_device_name() if gpu else f"CPU ({cpus} cores)"
    print(f"device={device} model={args.model} molecules={args.limit} epochs={args.epochs} packed trials={args.trials}")
    print(f"1 trial alone      : {alone[0]:7.1f} s  {rate['alone']:8.1f} samples/s  busy {alone[1]:5.1%}")
    print(f"{args.trials} trials packed    : {packed[0]:7.1f} s  {rate['packed']:8.1f} samples/s  busy {packed[1]:5.1%}")
    print(f"aggregate ratio    : {rate['packed'] / rate['alone']:7.2f}x  (target >= 3.5x on one GPU)")
    return {"ratio": rate["packed"] / rate["alone"], "busy_alone": alone[1], "busy_packed": packed[1]}


if __name__ == "__main__":
    main()
