"""Import cost of the CLI's light verbs, measured side by side with ``python -X importtime``.

``chemtune --help`` used to import the tasks (torch, transformers, peft) through the error module;
target: under 1 s of imports. ``leaderboard`` should import MLflow and pandas only (no Ray, no
torch). Each row is the cumulative import time of one fresh interpreter; the ratio compares the
verb with importing the tasks, in the same run (a shared machine's load cancels out).

    PYTHONPATH=$PWD python benchmarks/bench_cli.py
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CASES = {
    "chemtune --help": "import studies.cli as c; c.build_parser().format_help()",
    "chemtune leaderboard (imports)": "import studies.cli, studies.results, mlflow.tracking",
    "the tasks (what --help imported before)": "import trainables",
}
HEAVY = ("torch", "ray", "transformers", "peft", "mlflow")


def import_seconds(code: str) -> tuple[float, list[str]]:
    """Cumulative import time of ``code`` in a fresh interpreter, and which heavy packages it loaded."""
    probe = f"{code}\nimport sys; print(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-X", "importtime", "-c", probe], cwd=ROOT, capture_output=True,
                         text=True, check=True)
    total = 0
    for line in out.stderr.splitlines():
        fields = line.split("|")
        if line.startswith("import time:") and len(fields) == 3 and fields[1].strip().isdigit():
            if not fields[2].startswith("  "):  # top-level imports only: their cumulative time
                total += int(fields[1])
    return total / 1e6, [m for m in out.stdout.strip().split(",") if m]


def main() -> None:
    rows = {name: import_seconds(code) for name, code in CASES.items()}
    tasks = rows["the tasks (what --help imported before)"][0]
    for name, (seconds, heavy) in rows.items():
        print(f"{name:45s} {seconds:7.2f} s  ({seconds / tasks:5.1%} of the tasks' import)  loads: {heavy or '-'}")


if __name__ == "__main__":
    main()
