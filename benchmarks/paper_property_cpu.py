"""The property paper study set (``studies/papers/property_*.yaml``) reduced to run on CPU, in the papers'
table layout (``chemtune compare``).

Each paper study is run as published except for what a CPU cannot afford, changed the same way for
every arm so the arms stay comparable: rxnfp-bert (the offline pretrained BERT) instead of MoLFormer-XL,
``--epochs`` epochs, ``--limit`` molecules, no GPU, and one trial per table row (the row's parameter as a
grid; the searched learning rate fixed at ``--lr``) instead of a search per row. The split (scaffold,
seed 0), pool, selection knobs (top-k, curriculum bins and pacing, MC passes) are the papers'.

    python benchmarks/paper_property_cpu.py [--epochs 3] [--limit 1500] [--root DIR] [--only peft ...]

Prints each table's markdown (the reports' figures beside chemtune's) and the wall
time of each study; every study stays in the embedded store under ``--root`` for ``chemtune leaderboard``.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
PAPERS = ("peft", "influence", "curriculum", "active")
# The row parameter of each table (published.yaml's ``key``) and the values its rows take.
ROWS = {"influence": ("selection", ["none", "influence"]), "curriculum": ("selection", ["none", "curriculum"]),
        "active": ("acquisition", ["uncertainty", "random"])}


def cpu_variant(paper: str, args: argparse.Namespace) -> dict[str, Any]:
    """The paper study file with the CPU reductions above (and nothing else) applied."""
    study = yaml.safe_load((ROOT / "studies" / "papers" / f"property_{paper}.yaml").read_text())
    study["name"] = f"{study['name']}-cpu"
    study["model"] = {"name": "rxnfp-bert", "max_length": 256}
    study["dataset"] = {**study["dataset"], "limit": args.limit}
    study["max_epochs"] = args.epochs
    study["scheduler"] = {"grace_period": args.epochs}  # no early stopping: every row trains to the end
    study["resources"] = {"cpus_per_trial": 1, "gpus_per_trial": 0}
    study["baselines"] = {"random_forest": False, "chemprop": False}
    if paper == "peft":  # its rows are the four enqueued methods (each with the paper's own lr)
        study["num_trials"] = len(study["enqueue"])
        return study
    key, values = ROWS[paper]
    ranges = dict(study.pop("ranges", {}))
    fixed = dict(study.get("fixed", {}))
    ranges.pop(key, None)
    fixed["lr"] = args.lr
    ranges.pop("lr", None)
    for name, bounds in ranges.items():  # a grid row fixes every knob it uses: the middle of the paper's range
        fixed[name] = bounds[0] if isinstance(bounds[0], str) else type(bounds[0])((bounds[0] + bounds[-1]) / 2)
    study.update(fixed=fixed, sampler="grid", grid={key: values}, num_trials=len(values))
    return _fix_free_knobs(study)


def _fix_free_knobs(study: dict[str, Any]) -> dict[str, Any]:
    """A grid samples nothing else: the knobs the paper searched or left free (those the study schema would
    name as free) take their declared default, the one source of each knob's default."""
    from search_spaces import SPACES
    from studies.grid import grid_free_params

    space = SPACES.get(study["search_space"])
    defaults = {p.name: p.default for p in space.params}
    for name in grid_free_params(space, study["grid"], study["fixed"]):
        study["fixed"][name] = defaults[name]
    return study


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--limit", type=int, default=1500)
    parser.add_argument("--lr", type=float, default=5e-5)
    parser.add_argument("--root", type=Path, default=Path("paper-cpu-runs"))
    parser.add_argument("--only", nargs="*", choices=PAPERS, default=list(PAPERS))
    args = parser.parse_args()
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

    from studies.compare import compare
    from studies.runner import launch
    from studies.spec import parse_study

    lines = [f"CPU run: rxnfp-bert, {args.epochs} epochs, {args.limit} molecules, scaffold split seed 0, "
             f"lr {args.lr} (peft: the paper study's per-method lr)"]
    for paper in args.only:
        spec = parse_study(cpu_variant(paper, args), f"property_{paper}.yaml (CPU variant)")
        tic = time.perf_counter()
        result = launch(spec, root=args.root, restart=True)
        wall = time.perf_counter() - tic
        _, text = compare(spec.name, f"property_{paper}", result.tracking_uri)
        lines += ["", f"### property_{paper} ({len(result.leaderboard)} trials, {wall / 60:.1f} min)", "", text]
        print("\n".join(lines[-3:]), flush=True)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
