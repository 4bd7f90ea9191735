"""Issue 22's quality table on a CPU: Lipophilicity, chemtune's 80/10/10 split of seed 0 (random, or scaffold
with ``--split scaffold``), test read once. Per seed, one ``property_mix`` study of three trials, each run to its
end (no pruning), and the ensemble of the three registered from it:

- ``lm``: rxnfp-bert (the offline pretrained BERT), full fine-tune, the pooled embedding alone;
- ``hybrid``: the same with ``head_features: both`` (RDKit 2D descriptors + Morgan counts beside the embedding);
- ``dmpnn``: chemprop's D-MPNN at chemprop's defaults, 4 passes over the train split per epoch (48 in all);
- ``ensemble``: ``chemtune register STUDY --top 3`` (weights fitted on valid only), as registered.

``--encoder rxnfp-bert-dapt`` runs the two language-model rows again on the domain-adapted encoder (issue 22,
item 3): the study names ``studies/pretrain_rxnfp_bert_molecules.yaml`` as its pretraining stage
(``model.pretrain``: rxnfp-bert's MLM continued on molecule SMILES, Lipophilicity's valid and test molecules
removed), which the first launch runs and caches; the studies are ``lipo-quality-dapt-SPLIT-sSEED``.

Every trial shares ``--epochs`` (the study's ``max_epochs``), lr and batch; bf16 autocast on the CPU for the
language model (``resources.precision``); the trial seed changes between seeds, never the split. Prints mean ±
std of test R2 and RMSE per row over the seeds, beside the issue's targets, and the wall time of each study.

    python benchmarks/lipo_quality_cpu.py [--seeds 0 1 2] [--split random] [--epochs 12] [--out FILE]
                                          [--encoder rxnfp-bert|rxnfp-bert-dapt] [--dmpnn-passes 4]

Studies stay in the embedded store under ``--root`` (``chemtune leaderboard lipo-quality-random-s0``): a study
that finished there before is read, not run again, and one that was cut is resumed from its trials' checkpoints.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # seed_tables.py, beside this file
from seed_tables import finish, mean_std  # noqa: E402

ROWS = ("lm", "hybrid", "dmpnn", "ensemble")
TARGETS = {"random": {"lm": "test R2 >= 0.70", "hybrid": "test R2 >= 0.80", "ensemble": "best registered R2 >= 0.83"},
           "scaffold": {"ensemble": "best registered RMSE <= 0.65"}}
LM = {"arch": "lm", "method": "full", "batch_size": 32, "weight_decay": 0.01, "head_dropout": 0.1,
      "augment_copies": 0, "tta": 1, "pooling": "mean", "head_hidden": 256, "head_lr_mult": 1.0}
DMPNN = {"arch": "dmpnn", "dmpnn_depth": 3, "dmpnn_hidden_size": 300, "dmpnn_dropout": 0.0, "dmpnn_ffn_num_layers": 1,
         "dmpnn_ffn_hidden_size": 300, "dmpnn_aggregation": "norm", "dmpnn_lr": 0.001, "dmpnn_batch_size": 64}


# The encoders: rxnfp-bert as shipped, or with its pretraining continued on molecules (a study's pretraining stage).
DMPNN_PASSES = 4  # per reported epoch: 12 x 4 = chemprop's ~50 (a D-MPNN pass is cheap beside an LM epoch)
ENCODERS = {"rxnfp-bert": None,
            "rxnfp-bert-dapt": Path(__file__).resolve().parents[1] / "studies" / "pretrain_rxnfp_bert_molecules.yaml"}


def quality_study(split: str, seed: int, epochs: int, lr: float, cpus: int, precision: str = "bf16",
                  encoder: str = "rxnfp-bert", dmpnn_passes: int = DMPNN_PASSES) -> dict[str, Any]:
    """The per-seed study: the trials enqueued in ``ROWS`` order, nothing searched, nothing pruned. On the
    domain-adapted encoder only the two language-model rows (the D-MPNN does not read the encoder). A D-MPNN
    budget other than the default 4 passes per epoch is in the name (a finished study is read by its name)."""
    stage = ENCODERS[encoder]
    trials = [{**LM, "lr": lr, "head_features": "none"}, {**LM, "lr": lr, "head_features": "both"}]
    trials += [] if stage else [DMPNN]
    passes = "" if stage or dmpnn_passes == DMPNN_PASSES else f"-p{dmpnn_passes}"
    return {
        "name": f"lipo-quality-{'dapt-' if stage else ''}{split}{passes}-s{seed}", "task": "property",
        "dataset": {"name": "lipophilicity", "split": split, "seed": 0, "fractions": {"valid": 0.1, "test": 0.1}},
        "model": {"name": "rxnfp-bert", "max_length": 256, **({"pretrain": str(stage)} if stage else {})},
        "search_space": "property_mix",
        "enqueue": trials,
        # a fixed-only knob: the sampler never draws it, so it is set for the study (enqueue would be refused)
        **({} if stage else {"fixed": {"dmpnn_passes_per_epoch": dmpnn_passes}}),
        "num_trials": len(trials), "max_epochs": epochs, "metric": "valid_rmse", "seed": seed,
        "scheduler": {"grace_period": epochs, "reduction_factor": 3},  # grace = max_t: every trial runs to its end
        "resources": {"cpus_per_trial": cpus, "gpus_per_trial": 0, "precision": precision},
        "baselines": {"random_forest": False, "chemprop": False},
    }


def scores(name: str, uri: str, n_trials: int = 3, register: bool = True) -> dict[str, dict[str, float]] | None:
    """Test R2 and RMSE per row of a finished study, else None. With ``register`` a study of the three families
    that has no ensemble yet gets its top-3 ensemble registered first (``--table-only`` writes nothing)."""
    from studies.ensemble import register_ensemble
    from studies.results import leaderboard
    from trainables.errors import StudyError

    try:
        board = leaderboard(name, uri)
    except StudyError:  # not launched yet
        return None
    trials = board[(board["role"] == "trial") & (board["state"] == "complete")]
    if len(trials) < n_trials:
        return None
    if register and n_trials == 3 and not (board["role"] == "ensemble").any():
        register_ensemble(name, f"{name}-ensemble", uri, 3, alias="champion")
        board = leaderboard(name, uri)
    out = {}
    for _, row in board.iterrows():
        if row["role"] == "ensemble":
            out["ensemble"] = {"r2": row["test_r2"], "rmse": row["test_rmse"]}
        elif row["role"] == "trial":  # t00 lm, t01 hybrid, t02 dmpnn: enqueued in ROWS order
            out[ROWS[int(str(row["trial"])[1:3])]] = {"r2": row["test_r2"], "rmse": row["test_rmse"],
                                                     "valid_r2": row["valid_r2"]}
    return out



def table(split: str, per_seed: list[dict[str, dict[str, float]]]) -> str:
    """Markdown: per row, valid R2, test R2 and test RMSE as mean ± std over the seeds, and the issue's target."""
    lines = ["| row | seeds | valid R2 | test R2 | test RMSE | target |", "|---|---|---|---|---|---|"]
    for row in ROWS:
        got = [s[row] for s in per_seed if row in s]
        lines.append(f"| {row} | {len(got)} | {mean_std([g['valid_r2'] for g in got if 'valid_r2' in g])} | "
                     f"{mean_std([g['r2'] for g in got])} | {mean_std([g['rmse'] for g in got])} | "
                     f"{TARGETS.get(split, {}).get(row, '')} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--split", choices=["random", "scaffold"], default="random")
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--lr", type=float, default=1e-4, help="the language model's peak learning rate")
    parser.add_argument("--cpus", type=int, default=1, help="CPUs per trial (trials run side by side)")
    parser.add_argument("--precision", choices=["bf16", "fp32", "auto"], default="bf16")
    parser.add_argument("--encoder", choices=list(ENCODERS), default="rxnfp-bert",
                        help="rxnfp-bert-dapt: the language-model rows on rxnfp-bert adapted to molecules")
    parser.add_argument("--dmpnn-passes", type=int, default=DMPNN_PASSES,
                        help="the D-MPNN's passes over the train split per epoch (1: the first, starved table)")
    parser.add_argument("--root", type=Path, default=Path("lipo-quality-runs"))
    parser.add_argument("--table-only", action="store_true", help="run nothing: the table of what the store holds")
    parser.add_argument("--out", type=Path, default=None, help="also write the table (markdown) here")
    args = parser.parse_args()
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

    from studies.runner import launch, resume
    from studies.spec import parse_study
    from studies.store import StudyPaths

    uri = StudyPaths.default(args.root).mlflow_uri
    per_seed, walls = [], {}
    for seed in args.seeds:
        raw = quality_study(args.split, seed, args.epochs, args.lr, args.cpus, args.precision, args.encoder,
                            args.dmpnn_passes)
        got = scores(raw["name"], uri, raw["num_trials"], register=not args.table_only)
        if got is None and not args.table_only:
            tic = time.perf_counter()
            if StudyPaths.default(args.root).state_file(raw["name"]).exists():  # cut before: on from its checkpoints
                resume(raw["name"], root=args.root)
            else:
                launch(parse_study(raw, f"{raw['name']} (benchmarks/lipo_quality_cpu.py)"), root=args.root)
            walls[raw["name"]] = time.perf_counter() - tic
            print(f"{raw['name']}: {walls[raw['name']] / 60:.1f} min", flush=True)
            got = scores(raw["name"], uri, raw["num_trials"])
        per_seed += [got] if got else []
    dmpnn = "" if ENCODERS[args.encoder] else " and chemprop's D-MPNN"
    text = (f"Lipophilicity, {args.split} 80/10/10 split of seed 0, test read once; {args.encoder} (bf16 autocast)"
            f"{dmpnn}, {args.epochs} epochs each, lr {args.lr:g}; mean ± std over {len(per_seed)} "
            f"seed(s).\n\n{table(args.split, per_seed)}\n")
    finish(text, walls, args.out)


if __name__ == "__main__":
    main()
