"""The property paper tables on a CPU: each ``studies/papers/property_*_as_published.yaml`` study (the
report's settings, one trial per table row) over several seeds, and its tuned study beside it, printed and
written in the layout of ``chemtune compare`` (published | as published | tuned | diff; test R2 and MSE).

What a CPU cannot run is changed the same way for every arm, so the arms stay comparable:
- rxnfp-bert (the offline pretrained BERT, 12 layers, hidden 256) stands in for MoLFormer-XL, which no
  offline machine has;
- no GPU (``resources``: the machine's cores, no GPU), bf16 autocast on the CPU (``--precision``; about 2x on
  CPUs with AVX512-BF16, weights and the regression head in fp32), no peer baselines;
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
import sys
import time
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))  # seed_tables.py, beside this file
from seed_tables import finish, mean_std  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PAPERS = ("peft", "curriculum", "active", "influence")
STAND_IN = {"name": "rxnfp-bert", "max_length": 256}


def cpu_study(file: Path, name: str, seed: int, cpus: int, precision: str = "bf16") -> dict[str, Any]:
    """A paper study file with the CPU changes above (and nothing else) applied."""
    study = yaml.safe_load(file.read_text())
    study.update(name=name, model=dict(STAND_IN), seed=seed,
                 resources={"cpus_per_trial": cpus, "gpus_per_trial": 0, "precision": precision})
    study["baselines"] = {"random_forest": False, "chemprop": False}
    return study



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
            cells += [_fmt(published), mean_std(mine), _fmt(tuned_value), "" if diff is None else f"{diff:+.3f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _finished(name: str, key: str, uri: str, compare: Any) -> Any | None:
    """The study's compare table when every row has a finished trial in the store already, else None."""
    from trainables.errors import StudyError

    try:
        got = compare(name, key, uri)[0]
    except StudyError:  # not launched yet, or no trial finished (no scores logged): run it
        return None
    return got if (got["trials"] > 0).all() else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--only", nargs="*", choices=PAPERS, default=list(PAPERS))
    parser.add_argument("--tuned-trials", type=int, default=None,
                        help="trials of each tuned study (default: one per table row; 0: no tuned column)")
    parser.add_argument("--tuned-epochs", type=int, default=5)
    parser.add_argument("--tuned-after", type=int, default=1, help="run the tuned studies after this many seeds")
    parser.add_argument("--cpus", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--precision", choices=["bf16", "fp32", "auto"], default="bf16")
    parser.add_argument("--root", type=Path, default=Path("paper-cpu-runs"))
    parser.add_argument("--table-only", action="store_true", help="run nothing: the tables of what the store holds")
    parser.add_argument("--out", type=Path, default=None, help="also write the tables (markdown) here")
    args = parser.parse_args()
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

    from studies.compare import compare, load_papers
    from studies.runner import launch
    from studies.spec import parse_study
    from studies.store import StudyPaths

    papers, folder = load_papers(), ROOT / "studies" / "papers"
    uri = StudyPaths.default(args.root).mlflow_uri
    walls: dict[str, float] = {}

    def run(raw: dict[str, Any], key: str, what: str) -> Any | None:
        """The study's table: from the store when it finished there before, else launched now."""
        done = _finished(raw["name"], key, uri, compare)
        if done is not None or args.table_only:
            return done
        spec = parse_study(raw, what)
        tic = time.perf_counter()
        launch(spec, root=args.root, restart=True)
        walls[raw["name"]] = time.perf_counter() - tic
        print(f"{raw['name']}: {walls[raw['name']] / 60:.1f} min", flush=True)
        return compare(spec.name, key, uri)[0]

    def run_tuned(name: str) -> Any | None:
        key = f"property_{name}"
        raw = cpu_study(folder / f"{key}.yaml", f"{key}-tuned-cpu", 0, args.cpus, args.precision)
        rows = [{papers[key]["key"]: row["key"]} for row in papers[key]["rows"]]
        enqueue = raw.get("enqueue") or rows  # each table row tried once first; a search fills the rest
        raw.update(num_trials=args.tuned_trials or len(enqueue), enqueue=enqueue,
                   max_epochs=min(args.tuned_epochs, raw["max_epochs"]))
        return run(raw, key, f"{key}.yaml (CPU, tuned)")

    # Seed by seed over the tables (a cut run leaves whole seeds); the tuned studies after --tuned-after seeds.
    per_seed: dict[str, list[Any]] = {name: [] for name in args.only}
    tuned: dict[str, Any] = {}
    for i, seed in enumerate(args.seeds):
        if i == args.tuned_after and args.tuned_trials != 0:
            tuned = {name: run_tuned(name) for name in args.only}
        for name in args.only:
            key = f"property_{name}"
            raw = cpu_study(folder / f"{key}_as_published.yaml", f"{key}-as-published-cpu-s{seed}", seed, args.cpus,
                             args.precision)
            got = run(raw, key, f"{key}_as_published.yaml (CPU, seed {seed})")
            per_seed[name] += [got] if got is not None else []
    if not tuned and args.tuned_trials != 0:
        tuned = {name: run_tuned(name) for name in args.only}

    out = [f"CPU run: rxnfp-bert standing in for MoLFormer-XL, all 4,200 molecules, random 80/10/10 split seed 0; "
           f"as published: mean ± std over the seeds run; tuned: the tuned study's protocol (AdamW, schedule, its "
           f"per-row settings), {f'{args.tuned_trials} trials per table' if args.tuned_trials else 'one trial per row'} of at "
           f"most {args.tuned_epochs} epochs, seed 0. Test R2 and MSE; each row's trial chosen on valid RMSE."]
    for name in args.only:
        key = f"property_{name}"
        out += ["", f"### {papers[key]['title']}", "", f"As published over {len(per_seed[name])} seed(s); "
                f"tuned: {'run' if tuned.get(name) is not None else 'not run'}.", "",
                table(key, per_seed[name], tuned.get(name), papers[key])]
    text = "\n".join(out) + "\n"
    finish(text, walls, args.out)


if __name__ == "__main__":
    main()
