"""The property paper tables on a CPU: each ``studies/papers/property_*_as_published.yaml`` study (the
report's settings, one trial per table row) over several seeds, and its tuned study beside it, printed and
written in the layout of ``chemtune compare`` (published | as published | tuned | diff; test R2 and MSE).

What a CPU cannot run is changed the same way for every arm, so the arms stay comparable:
- rxnfp-bert (the offline pretrained BERT, 12 layers, hidden 256) stands in for MoLFormer-XL, which no
  offline machine has;
- no GPU (``resources``: the machine's cores, no GPU), no peer baselines;
- the tuned studies run ``--tuned-trials`` trials of at most ``--tuned-epochs`` epochs (ASHA as in the
  study) on one seed, instead of their full search.
Everything else is the study files' own: all 4,200 molecules, the random 80/10/10 split of seed 0 (plus the
30% pool of the influence and active tables), Adam at lr 1e-4 for 5 epochs, the selection knobs. The
``--seeds`` change the trial seed (initialisation of the head, shuffling, dropout), never the split.

    python benchmarks/paper_property_cpu.py [--seeds 0 1 2] [--only peft curriculum] [--out FILE]

Every study stays in the embedded store under ``--root``: ``chemtune leaderboard NAME`` and ``chemtune compare
NAME --paper property_peft`` read them again.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
PAPERS = ("peft", "curriculum", "active", "influence")
STAND_IN = {"name": "rxnfp-bert", "max_length": 256}


def cpu_study(file: Path, name: str, seed: int, cpus: int) -> dict[str, Any]:
    """A paper study file with the CPU changes above (and nothing else) applied."""
    study = yaml.safe_load(file.read_text())
    study.update(name=name, model=dict(STAND_IN), seed=seed, resources={"cpus_per_trial": cpus, "gpus_per_trial": 0})
    study["baselines"] = {"random_forest": False, "chemprop": False}
    return study


def _mean_std(values: list[float]) -> str:
    if not values:
        return ""
    mean = statistics.fmean(values)
    return f"{mean:.3f} ± {statistics.stdev(values):.3f}" if len(values) > 1 else f"{mean:.3f}"


def _fmt(value: Any) -> str:
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{float(value):.3f}"


def table(paper_name: str, per_seed: list[Any], tuned: Any | None, paper: dict[str, Any]) -> str:
    """Markdown: per row and metric, the published figure, the as-published mean ± std over seeds, the
    tuned figure and the difference of the means from the published figure."""
    metrics = paper["metrics"]
    head = ["row"] + [f"{m} {c}" for m in metrics for c in ("paper", "as published", "tuned", "diff")]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for i, row in enumerate(paper["rows"]):
        cells = [row["label"] + ("" if row.get("in_report", True) else " (not in report)")]
        for metric in metrics:
            mine = [float(t.iloc[i][f"{metric} as published"]) for t in per_seed
                    if t.iloc[i][f"{metric} as published"] is not None and not math.isnan(t.iloc[i][f"{metric} as published"])]
            published = (row.get("published") or {}).get(metric)
            tuned_value = None if tuned is None else tuned.iloc[i][f"{metric} as published"]
            diff = None if published is None or not mine else statistics.fmean(mine) - float(published)
            cells += [_fmt(published), _mean_std(mine), _fmt(tuned_value), "" if diff is None else f"{diff:+.3f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--only", nargs="*", choices=PAPERS, default=list(PAPERS))
    parser.add_argument("--tuned-trials", type=int, default=4, help="trials of each tuned study (0: no tuned column)")
    parser.add_argument("--tuned-epochs", type=int, default=10)
    parser.add_argument("--cpus", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--root", type=Path, default=Path("paper-cpu-runs"))
    parser.add_argument("--out", type=Path, default=None, help="also write the tables (markdown) here")
    args = parser.parse_args()
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

    from studies.compare import compare, load_papers
    from studies.runner import launch
    from studies.spec import parse_study

    papers = load_papers()
    out = [f"CPU run: rxnfp-bert standing in for MoLFormer-XL, all 4,200 molecules, random 80/10/10 split seed 0; "
           f"as published over seeds {args.seeds} (mean ± std); tuned: {args.tuned_trials} trials of at most "
           f"{args.tuned_epochs} epochs, seed 0. Test R2 and MSE; each row's trial chosen on valid RMSE."]
    for name in args.only:
        key, folder = f"property_{name}", ROOT / "studies" / "papers"
        per_seed, walls = [], []
        for seed in args.seeds:
            raw = cpu_study(folder / f"{key}_as_published.yaml", f"{key}-as-published-cpu-s{seed}", seed, args.cpus)
            spec = parse_study(raw, f"{key}_as_published.yaml (CPU, seed {seed})")
            tic = time.perf_counter()
            result = launch(spec, root=args.root, restart=True)
            walls.append(time.perf_counter() - tic)
            per_seed.append(compare(spec.name, key, result.tracking_uri)[0])
            print(f"{key} seed {seed}: {walls[-1] / 60:.1f} min", flush=True)
        tuned = None
        if args.tuned_trials:
            raw = cpu_study(folder / f"{key}.yaml", f"{key}-tuned-cpu", 0, args.cpus)
            raw.update(num_trials=args.tuned_trials, max_epochs=min(args.tuned_epochs, raw["max_epochs"]))
            if not raw.get("enqueue"):  # each table row tried once first; the search fills the rest
                raw["enqueue"] = [{papers[key]["key"]: row["key"]} for row in papers[key]["rows"]]
            spec = parse_study(raw, f"{key}.yaml (CPU, tuned)")
            tic = time.perf_counter()
            result = launch(spec, root=args.root, restart=True)
            walls.append(time.perf_counter() - tic)
            tuned = compare(spec.name, key, result.tracking_uri)[0]
            print(f"{key} tuned: {walls[-1] / 60:.1f} min", flush=True)
        out += ["", f"### {papers[key]['title']}", "",
                f"({len(args.seeds)} as-published runs + tuned, {sum(walls) / 60:.0f} min on {args.cpus} cores)", "",
                table(key, per_seed, tuned, papers[key])]
        print("\n".join(out[-5:]), flush=True)
    text = "\n".join(out) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
