"""`chemtune --help` and every `chemtune list` run without importing the ML stack (issue 13: under a second).

Behaviour, not timing: a fresh interpreter runs them and reports which heavy packages got imported.
The registries declare their plug-ins (``Registry.register_lazy``), so listing never loads one.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from studies.cli import _LISTS, _REGISTRIES

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("torch", "transformers", "peft", "accelerate", "sklearn", "rdkit", "pandas", "optuna", "mlflow", "ray")

SCRIPT = """
import contextlib, io, json, sys
import studies.cli as cli
out = {}
for what in sys.argv[1:]:
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        if what == "--help":
            try:
                cli.main(["--help"])
            except SystemExit:
                pass
        else:
            assert cli.main(["list", what]) == 0
    out[what] = buf.getvalue()
out["heavy"] = sorted(m for m in %r if m in sys.modules)
print(json.dumps(out))
""" % (HEAVY,)


def _run(*args: str) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "400"}
    proc = subprocess.run([sys.executable, "-c", SCRIPT, *args], capture_output=True, text=True, env=env, cwd=ROOT,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.splitlines()[-1])


def test_help_and_every_list_import_no_ml_library() -> None:
    assert sorted(_REGISTRIES) == sorted(_LISTS)
    out = _run("--help", *_LISTS)
    assert out["heavy"] == [], f"`chemtune list` imported {out['heavy']}"
    assert "leaderboard" in out["--help"]
    # the lazily declared plug-ins are listed with their help, none loaded
    assert "uspto50k" in out["datasets"] and "USPTO-50K retrosynthesis" in out["datasets"]
    assert "tiny-bart" in out["models"] and "hf-seq2seq" in out["models"]
    assert all(m in out["methods"] for m in ("full", "bitfit", "lora", "ia3"))
    assert "retro" in out["tasks"] and "property" in out["tasks"]
    assert all(s in out["selections"] for s in ("none", "active", "curriculum", "influence"))
    # the spaces are derived from the declared knobs (torch-free modules), e.g. LoRA's, influence's, a treatment's
    spaces = " ".join(out["spaces"].replace("│", " ").split())
    assert "lora_r: int [2, 64] log if method in ['lora']" in spaces
    assert "influence_params: categorical {head, head_out, peft, last_layers}" in spaces
    assert "lora_rank: int [2, 64] log if treatment in" in spaces
