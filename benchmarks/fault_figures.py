"""Run the whole fault suite, long variants included, and print its figures.

    python benchmarks/fault_figures.py            # CHEMTUNE_DATA_DIR must point at the shared data
    python benchmarks/fault_figures.py --short    # only the variants CI runs (a loaded machine)

Scenarios: tests/faults (trial faults, a worker node removed, drivers killed, checkpoints, stale trials, two
studies on SQLite) and tests/cluster/test_joined_study.py (processes joining one study on PostgreSQL and
the authenticated MLflow server). Figures: faults injected, trials finished, runs lost (must be 0), the
wall-time ratio of scenario 2 (a study whose driver is SIGKILLed 3-5 times and resumed, over the same
study uninterrupted; target <= 2.5x).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SUITE = ["tests/faults", "tests/cluster/test_joined_study.py"]


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        figures_file = Path(tmp) / "figures.jsonl"
        args = [a for a in sys.argv[1:] if a != "--short"]
        env = {**os.environ, "CHEMTUNE_FAULT_FIGURES": str(figures_file), "PYTHONPATH": str(ROOT)}
        env["CHEMTUNE_FAULTS_LONG"] = "0" if "--short" in sys.argv[1:] else "1"
        tic = time.monotonic()
        # pyproject's addopts deselect `long` tests (node removal, processes joining on PostgreSQL): select them too
        select = [] if "--short" in sys.argv[1:] else ["-m", "long or not long"]
        code = subprocess.call([sys.executable, "-m", "pytest", "-q", *SUITE, *select, *args], cwd=ROOT, env=env)
        wall = time.monotonic() - tic
        rows = [json.loads(line) for line in figures_file.read_text().splitlines()] if figures_file.exists() else []
    print(f"\nfault suite: exit code {code}, {wall:.0f} s")
    for row in rows:
        print("  " + ", ".join(f"{k}={v}" for k, v in row.items()))
    injected = sum(r.get("faults_injected", 0) for r in rows)
    finished = sum(r.get("trials_finished", 0) for r in rows)
    lost = sum(r.get("runs_lost", 0) for r in rows)
    ratios = [r["wall_ratio"] for r in rows if "wall_ratio" in r]
    print(f"faults injected: {injected}; trials finished: {finished}; runs lost: {lost}; "
          f"scenario 2 wall-time ratio: {', '.join(f'{x:.2f}x' for x in ratios) or 'n/a'} (target <= 2.5x)")
    return code or int(lost != 0)


if __name__ == "__main__":
    sys.exit(main())
