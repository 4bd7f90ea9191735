"""Wall time of the same CPU study (8 short trials) on a one-worker vs a two-worker local Ray cluster.

Each worker node is a separate ``ray start`` process advertising 1 CPU; the head advertises none, so trials
run only on the workers. Target: two workers take at most 0.6x the one-worker time.

    python benchmarks/bench_cluster.py [--trials 8] [--limit 200] [--epochs 1]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # the local cluster is test support (tests/support/local_cluster.py)


def study(name: str, trials: int, limit: int, epochs: int) -> dict:
    return {
        "name": name, "task": "property", "search_space": "property",
        "dataset": {"name": "nci-logp", "limit": limit, "split": "random", "seed": 0},
        "model": {"name": "tiny-bert", "max_length": 48},
        "fixed": {"method": "bitfit", "batch_size": 32}, "ranges": {"lr": [0.0005, 0.003]},
        "num_trials": trials, "max_epochs": epochs, "seed": 0,
        # Grace = max_epochs: ASHA stops nothing, so both runs do exactly the same work.
        "scheduler": {"grace_period": epochs},
        "resources": {"cpus_per_trial": 1},
        "baselines": {"random_forest": False},  # trials only: both runs do the same work
    }


def run(workers: int, args: argparse.Namespace, root: str) -> float:
    import ray
    from support.local_cluster import LocalRayCluster, NodeSpec

    from studies.runner import launch
    from studies.spec import parse_study

    env = {"PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
           "OMP_NUM_THREADS": "1"}
    with LocalRayCluster([NodeSpec(num_cpus=1) for _ in range(workers)], env=env) as cluster:
        ray.shutdown()
        ray.init(address=cluster.address, log_to_driver=False)
        try:
            spec = parse_study(study(f"bench-{workers}w", args.trials, args.limit, args.epochs))
            tic = time.perf_counter()
            result = launch(spec, address=cluster.address, root=root)
            seconds = time.perf_counter() - tic
        finally:
            ray.shutdown()
    assert result.num_errors == 0 and len(result.leaderboard) == args.trials
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--limit", type=int, default=200)
    parser.add_argument("--epochs", type=int, default=1)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as root:  # one embedded MLflow/Optuna store for both runs
        one = run(1, args, root)
        two = run(2, args, root)
    print(f"{args.trials} trials, 1 worker node:  {one:7.1f} s")
    print(f"{args.trials} trials, 2 worker nodes: {two:7.1f} s")
    print(f"ratio two/one: {two / one:.2f} (target <= 0.6)")


if __name__ == "__main__":
    main()
