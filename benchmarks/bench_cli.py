"""Import cost of the CLI's light verbs, measured side by side with ``python -X importtime``.

``chemtune --help`` and every ``list`` used to import the tasks (torch, transformers, peft) through
``trainables/__init__``; target: under 1 s of imports (the registries declare their plug-ins, which
load on first use). ``leaderboard`` should import MLflow and pandas only (no Ray, no torch). Each row
is the cumulative import time of one fresh interpreter and the number of modules it loaded; the ratio
compares the verb with importing the plug-ins, in the same run (a shared machine's load cancels out).
Given a finished study (``--root DIR --study NAME``), the whole ``chemtune leaderboard`` is timed too.

    PYTHONPATH=$PWD python benchmarks/bench_cli.py [--root chemtune-runs --study quickstart] [--repeat 3]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LISTS = ("datasets", "models", "methods", "spaces", "tasks", "selections")
PLUGINS = "the plug-ins (torch, transformers, peft)"
CASES = {
    "chemtune --help": "import studies.cli as c; c.build_parser().format_help()",
    **{f"chemtune list {w}": f"import contextlib, io, studies.cli as c\n"
                             f"with contextlib.redirect_stdout(io.StringIO()): c.main(['list', '{w}'])" for w in LISTS},
    "chemtune leaderboard (imports)": "import studies.cli, studies.results, mlflow.tracking, "
                                      "mlflow.store.tracking.sqlalchemy_store",
    PLUGINS: "import trainables.property.task, trainables.retro.task, trainables.selection.influence",
}
HEAVY = ("torch", "ray", "transformers", "peft", "optuna", "mlflow", "pandas")


def import_seconds(code: str) -> tuple[float, int, list[str]]:
    """Cumulative import time of ``code`` in a fresh interpreter, its module count, and the heavy packages loaded."""
    probe = f"{code}\nimport sys; print(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-X", "importtime", "-c", probe], cwd=ROOT, capture_output=True,
                         text=True, check=True)
    total, modules = 0, 0
    for line in out.stderr.splitlines():
        fields = line.split("|")
        if line.startswith("import time:") and len(fields) == 3 and fields[1].strip().isdigit():
            modules += 1
            if not fields[2].startswith("  "):  # top-level imports only: their cumulative time
                total += int(fields[1])
    return total / 1e6, modules, [m for m in (out.stdout.splitlines() or [""])[-1].split(",") if m]


def leaderboard_wall(root: str, study: str) -> float:
    """Wall seconds of a whole ``chemtune leaderboard`` (interpreter start, imports, MLflow queries, table)."""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "studies.cli", "leaderboard", study, "--root", root], cwd=ROOT,
                   capture_output=True, check=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=1, help="runs per row (the median is shown)")
    parser.add_argument("--root", help="embedded store of a finished study (times the whole leaderboard)")
    parser.add_argument("--study", help="that study's name")
    args = parser.parse_args()
    rows = {}
    for name, code in CASES.items():
        runs = [import_seconds(code) for _ in range(args.repeat)]
        rows[name] = (statistics.median(r[0] for r in runs), runs[0][1], runs[0][2])
    base = rows[PLUGINS][0]
    for name, (seconds, modules, heavy) in rows.items():
        print(f"{name:42s} {seconds:6.2f} s {modules:5d} modules ({seconds / base:6.1%} of the plug-ins')  "
              f"loads: {','.join(heavy) or '-'}")
    if args.root and args.study:
        walls = [leaderboard_wall(args.root, args.study) for _ in range(args.repeat)]
        print(f"{'chemtune leaderboard ' + args.study + ' (wall)':42s} {statistics.median(walls):6.2f} s")


if __name__ == "__main__":
    main()
