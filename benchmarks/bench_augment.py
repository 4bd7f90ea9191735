"""SMILES enumeration on Lipophilicity (random split seed 0, the first --limit molecules): what it does.

Trains the LM (default rxnfp-bert, full fine-tune, lr 5e-5, batch 32) for --epochs with and without
training augmentation (``augment_copies``), and scores each trained model on valid/test with and
without test-time augmentation (TTA is inference-only, so both come from the same weights).
Prints test RMSE / R2 and wall times side by side.

    python benchmarks/bench_augment.py [--limit 1200] [--epochs 2] [--copies 1] [--tta 4] [--model rxnfp-bert]
"""

from __future__ import annotations

import argparse
import time

from studies.spec import parse_study
from trainables import TASKS, NullReporter
from trainables.property.augment import tta_predict
from trainables.property.data import regression_metrics
from trainables.property.task import PropertyTrainer


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--limit", type=int, default=1200)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--copies", type=int, default=1)
    parser.add_argument("--tta", type=int, default=4)
    parser.add_argument("--model", default="rxnfp-bert")
    args = parser.parse_args()
    spec = parse_study({
        "name": "bench-augment", "task": "property", "search_space": "property_plus", "max_epochs": args.epochs,
        "dataset": {"name": "lipophilicity", "split": "random", "seed": 0, "limit": args.limit},
        "model": {"name": args.model, "max_length": 256},
    })
    data = TASKS.get("property").prepare(spec).payload
    print(f"train {len(data.train)} valid {len(data.valid)} test {len(data.test)}, {args.model}, {args.epochs} epochs")
    for copies in (0, args.copies):
        tic = time.perf_counter()
        trainer = PropertyTrainer({"method": "full", "lr": 5e-5, "batch_size": 32, "augment_copies": copies}, data, spec)
        trainer.fit(NullReporter())
        train_s = time.perf_counter() - tic
        for k in (1, args.tta):
            tic = time.perf_counter()
            out = []
            for split in ("valid", "test"):
                table = getattr(data, split)
                pred = tta_predict(lambda s: trainer.predict_ids(trainer.encode(s)), table.smiles, k, spec.seed)
                m = regression_metrics(table.targets, pred)
                out.append(f"{split} RMSE {m['rmse']:.3f} R2 {m['r2']:.3f}")
            print(f"augment_copies {copies} tta {k}: {' | '.join(out)} | train {train_s:.0f} s, "
                  f"predict {time.perf_counter() - tic:.0f} s", flush=True)


if __name__ == "__main__":
    main()
