"""Influence parameter subsets on a real problem: cost and how much the selection changes.

Lipophilicity (random split, 30% pool), rxnfp-bert with LoRA; one phase-1 epoch; then the pool
is scored over each subset (``head``, ``peft``, ``last_layers``) by the selector itself, and the
top-k picks are compared with the ``head`` subset's (overlap) — all in one run, same phase-1 model.

    CHEMTUNE_DATA_DIR=../shared/data python benchmarks/bench_influence_subsets.py [--limit 1500] [--top-k 128]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np
import torch

from studies.spec import parse_study
from trainables import NullReporter
from trainables.models.backbones import rxnfp_bert_dir
from trainables.property.task import PropertyTrainer, prepare_property

SUBSETS = (
    ("head", {}),
    ("head", {"influence_curvature": "hessian", "lissa_damping": 0.5}),
    ("peft", {}),
    ("last_layers", {"influence_layers": 1}),
)

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--limit", type=int, default=1500, help="Lipophilicity molecules used")
    parser.add_argument("--top-k", type=int, default=128)
    parser.add_argument("--depth", type=int, default=50, help="LiSSA depth")
    args = parser.parse_args()
    os.environ["CHEMTUNE_RXNFP_DIR"] = str(rxnfp_bert_dir())  # the model stays where it is cached
    spec = parse_study({
        "name": "bench-influence-subsets", "task": "property",
        "dataset": {"name": "lipophilicity", "limit": args.limit, "split": "random", "seed": 0,
                    "fractions": {"valid": 0.1, "test": 0.1, "pool": 0.3}},
        "model": {"name": "rxnfp-bert", "max_length": 128}, "search_space": "selection",
        "fixed": {"selection": "influence"}, "max_epochs": 1,
    })
    data = prepare_property(spec).payload
    print(f"train {len(data.train)}, valid {len(data.valid)}, pool {len(data.pool)}; threads {torch.get_num_threads()}")
    picks: dict[str, set[int]] = {}
    with tempfile.TemporaryDirectory() as cache:
        for subset, extra in SUBSETS:
            os.environ["CHEMTUNE_CACHE"] = tempfile.mkdtemp(dir=cache)  # no score reuse between rows
            config = {"selection": "influence", "method": "lora", "lora_r": 8, "lr": 1e-3, "batch_size": 32,
                      "top_k": args.top_k, "influence_params": subset, "lissa_depth": args.depth, "lissa_batch": 32,
                      **extra}
            trainer = PropertyTrainer(config, data, spec)
            tic = time.perf_counter()
            trainer.selector.setup(trainer.selection_context(), NullReporter())
            wall = time.perf_counter() - tic
            stats = trainer.selector.stats
            label = f"{subset}{extra.get('influence_layers', '')}/{extra.get('influence_curvature', 'gauss_newton')}"
            picks[label] = set(trainer.selector.selected.tolist())
            overlap = len(picks[label] & picks["head/gauss_newton"]) / args.top_k
            scoring = stats["influence_seconds"] - stats["influence_phase1_seconds"]
            print(f"{label:<24} P={int(stats['influence_params']):>8}  phase 1 {stats['influence_phase1_seconds']:6.1f} s, "
                  f"scoring {scoring:6.1f} s (wall {wall:6.1f} s)  top-{args.top_k} overlap with head "
                  f"{overlap:.2f}  mean score selected {stats['influence_selected_mean_score']:.3g} "
                  f"vs pool {stats['influence_pool_mean_score']:.3g}")
    rng = np.random.default_rng(0)
    chance = np.mean([len(set(rng.choice(len(data.pool), args.top_k, replace=False)) &
                          set(rng.choice(len(data.pool), args.top_k, replace=False))) for _ in range(200)]) / args.top_k
    print(f"overlap of two random top-{args.top_k} draws from the pool: {chance:.2f}")


if __name__ == "__main__":
    main()
