"""ruff (pyflakes F + isort I, configured in pyproject.toml) is clean over the whole checkout.

The test command runs the linter, so an unused import or an unsorted block fails the suite the way CI sees it;
the failure message is ruff's own report (file:line:col code message), with the command that fixes it.
"""

from __future__ import annotations

import subprocess
import sys
import tomllib

from tests.conftest import ROOT


def test_ruff_is_configured_for_pyflakes_and_isort() -> None:
    ruff = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["ruff"]
    assert {"F", "I"} <= set(ruff["lint"]["select"])
    assert set(ruff["lint"]["isort"]["known-first-party"]) == {"studies", "trainables", "search_spaces", "cluster"}


def test_ruff_check_is_clean() -> None:
    # --no-cache: no .ruff_cache written into the checkout by a test run.
    done = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "--output-format", "concise", "."],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert "No module named ruff" not in done.stderr, "ruff is not installed: it comes with the test extras"
    assert done.returncode != 2, f"ruff could not run:\n{done.stderr}"
    assert done.returncode == 0, (f"ruff check found problems (fix: python -m ruff check --fix .):\n"
                                  f"{done.stdout}{done.stderr}")
