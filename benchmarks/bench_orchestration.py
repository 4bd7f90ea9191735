"""Orchestration overhead: the same 8 trials through `chemtune launch` vs. the trainable core called
directly, with the same concurrency (2 processes). Target: chemtune's wall time at most 1.10x.

    python benchmarks/bench_orchestration.py [--trials 8] [--limit 2000] [--epochs 3]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor

os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


def _study(args: argparse.Namespace, configs: list[dict]) -> dict:
    return {
        "name": "bench-orchestration", "task": "property",
        "dataset": {"name": "nci-logp", "split": "random", "limit": args.limit},
        "model": {"name": "tiny-bert", "max_length": 128}, "search_space": "property",
        "enqueue": configs, "num_trials": len(configs), "max_epochs": args.epochs,
        # no early stopping: both sides do the same work
        "scheduler": {"grace_period": args.epochs}, "resources": {"cpus_per_trial": 1, "max_concurrent_trials": 2},
        "baselines": {"random_forest": False},  # the direct side fits no baseline
    }


def _direct(job: tuple[dict, dict]) -> float:
    import torch

    from studies.spec import parse_study
    from trainables import TASKS, NullReporter

    torch.set_num_threads(1)
    config, study = job
    spec = parse_study(study)
    task = TASKS.get("property")
    return task.train(config, task.prepare(spec).payload, spec.trial_spec(), NullReporter())["valid_rmse"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--limit", type=int, default=2000)
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()

    from search_spaces import SPACES
    from studies.runner import launch
    from studies.spec import parse_study

    configs = [SPACES.get("property").sample(seed=i) for i in range(args.trials)]
    study = _study(args, configs)

    tic = time.perf_counter()
    with ProcessPoolExecutor(2) as pool:
        list(pool.map(_direct, [(c, study) for c in configs]))
    direct = time.perf_counter() - tic

    with tempfile.TemporaryDirectory() as root:
        tic = time.perf_counter()
        result = launch(parse_study(study), root=root)
        chemtune = time.perf_counter() - tic
    assert len(result.leaderboard) == args.trials

    print(f"trials={args.trials} epochs={args.epochs} molecules={args.limit} concurrency=2")
    print(f"direct core (2 processes): {direct:8.1f} s")
    print(f"chemtune launch          : {chemtune:8.1f} s  (Ray start, Optuna, ASHA, MLflow, model logging)")
    print(f"ratio chemtune/direct    : {chemtune / direct:8.2f}x  (target <= 1.10x)")


if __name__ == "__main__":
    main()
