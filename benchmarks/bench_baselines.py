"""Peer baselines on Lipophilicity (chemtune's random 80/10/10 split, seed 0, or --split scaffold).

Prints each baseline's valid/test RMSE and R2 with its wall time, fitted on the study's own splits
(the split hashes printed are the ones every trial of such a study logs).

    python benchmarks/bench_baselines.py [--split random|scaffold] [--chemprop-epochs 50] [--skip chemprop]
"""

from __future__ import annotations

import argparse
import json
import time

from studies.spec import parse_study
from trainables import TASKS
from trainables.property.baselines import BASELINES


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--split", default="random")
    parser.add_argument("--chemprop-epochs", type=int, default=50)
    parser.add_argument("--skip", nargs="*", default=[])
    parser.add_argument("--limit", type=int, default=None)
    args = parser.parse_args()
    spec = parse_study({
        "name": "bench-baselines", "task": "property", "search_space": "property",
        "dataset": {"name": "lipophilicity", "split": args.split, "seed": 0, "limit": args.limit},
        "model": {"name": "tiny-bert"},
    })
    prepared = TASKS.get("property").prepare(spec)
    print(json.dumps({**prepared.summary, **prepared.tags}))
    for name in BASELINES.names():
        if name in args.skip:
            continue
        kwargs = {"max_epochs": args.chemprop_epochs} if name == "chemprop" else {}
        tic = time.perf_counter()
        result = BASELINES.get(name)(prepared.payload, 0, **kwargs, **({"n_jobs": 2} if name == "random_forest" else {}))
        m = result.metrics
        print(f"{name:14s} valid RMSE {m['valid_rmse']:.3f} R2 {m['valid_r2']:.3f} | test RMSE {m['test_rmse']:.3f} "
              f"R2 {m['test_r2']:.3f} | wall {time.perf_counter() - tic:.0f} s | {json.dumps(result.params)}", flush=True)


if __name__ == "__main__":
    main()
