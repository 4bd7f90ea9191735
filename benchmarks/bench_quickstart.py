"""Quickstart wall time: `chemtune launch studies/quickstart.yaml` in a fresh store, timed end to end
(process start, data checks, Ray start, all trials, MLflow logging).

    python benchmarks/bench_quickstart.py
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

STUDY = Path(__file__).resolve().parents[1] / "studies" / "quickstart.yaml"


def main() -> None:
    with tempfile.TemporaryDirectory() as home:
        env = {**os.environ, "CHEMTUNE_HOME": home}
        tic = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "studies.cli", "launch", str(STUDY)], env=env,
                              capture_output=True, text=True)
        wall = time.perf_counter() - tic
    if proc.returncode != 0:
        sys.exit(proc.stdout[-3000:] + proc.stderr[-3000:])
    print(proc.stdout[-2500:])
    print(f"quickstart wall time: {wall:.1f} s on {os.cpu_count()} CPU cores")


if __name__ == "__main__":
    main()
