"""A regular (non-editable) install works: the wheel carries every file the code reads next to its modules.

The wheel is built from a clean copy of the sources (no stale ``build/``), installed into a fresh virtualenv
that borrows the dependencies from this one (a ``.pth`` naming this environment's site-packages, as plain path
entries: its editable-install hook is not run; ``--no-deps --no-index``: no download) and run from a temporary folder with no ``PYTHONPATH``, so neither the checkout nor the editable install is
what answers. ``chemtune compare`` there reads ``studies/papers/published.yaml`` from the installed package.
"""

from __future__ import annotations

import os
import shutil
import site
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import ROOT

PACKAGES = ("studies", "trainables", "search_spaces", "cluster")


def _package_data() -> list[str]:
    """Non-Python files inside the packages: tracked ones (git), else every one on disk."""
    done = subprocess.run(["git", "ls-files", "-z", *PACKAGES], cwd=ROOT, capture_output=True, text=True)
    if done.returncode == 0 and done.stdout:
        files = [f for f in done.stdout.split("\0") if f]
    else:
        files = [str(p.relative_to(ROOT)) for pkg in PACKAGES for p in (ROOT / pkg).rglob("*") if p.is_file()]
    return sorted(f for f in files if not f.endswith((".py", ".pyc")) and "__pycache__" not in f)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    src = tmp_path_factory.mktemp("src")
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "build")
    for name in PACKAGES:
        shutil.copytree(ROOT / name, src / name, ignore=ignore)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    dist = tmp_path_factory.mktemp("dist")
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                           "-q", "-w", str(dist), str(src)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"pip wheel failed:\n{done.stdout}{done.stderr}"
    (built,) = dist.glob("chemtune-*.whl")
    return built


def test_wheel_ships_every_file_read_next_to_a_module(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "studies/papers/published.yaml" in names
    missing = [f for f in _package_data() if f not in names]
    assert not missing, f"not in the wheel (add them to [tool.setuptools.package-data]): {missing}"


def test_compare_runs_from_a_wheel_install(wheel: Path, tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    from studies.store import PARENT_TAG, TAG_ROLE, TAG_STUDY

    # A finished study in an MLflow store: the `full` arm's best-on-valid trial is the second one.
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment = client.create_experiment("wheelcheck", artifact_location=(tmp_path / "artifacts").as_uri())
    parent = client.create_run(experiment, tags={TAG_STUDY: "wheelcheck", TAG_ROLE: "study", "chemtune.mode": "min"})
    for method, valid, test in (("full", 0.80, 0.70), ("full", 0.60, 0.90), ("lora", 0.75, 0.65)):
        run = client.create_run(experiment, tags={PARENT_TAG: parent.info.run_id})
        client.log_param(run.info.run_id, "method", method)
        client.log_metric(run.info.run_id, "valid_rmse", valid)
        client.log_metric(run.info.run_id, "test_r2", test)  # the property report's own metrics
        client.log_metric(run.info.run_id, "test_mse", 1 - test)
        client.set_terminated(run.info.run_id)

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    bindir = Path(sysconfig.get_path("scripts", vars={"base": str(venv)}))
    purelib = Path(sysconfig.get_path("purelib", vars={"base": str(venv), "platbase": str(venv)}))
    # A venv made from a venv sees the base interpreter's packages, not this environment's: name them here.
    outer = dict.fromkeys(site.getsitepackages())  # this environment's, and the base's if it includes them
    (purelib / "_outer_env.pth").write_text("".join(f"{p}\n" for p in outer))
    python = bindir / Path(sys.executable).name
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env.update(COLUMNS="200", PIP_DISABLE_PIP_VERSION_CHECK="1")
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()

    def run(*args: str) -> str:
        done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=180)
        assert done.returncode == 0, f"{' '.join(args)} failed:\n{done.stdout}{done.stderr}"
        return done.stdout

    # pip comes from the outer environment; --ignore-installed: the editable chemtune there is not replaced.
    run(str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-index", "--ignore-installed", str(wheel))
    where = Path(run(str(python), "-c", "import studies; print(studies.__file__)").strip())
    assert where.is_relative_to(venv), f"studies imported from {where}, not from the wheel install"

    out = run(str(bindir / "chemtune"), "compare", "wheelcheck", "--paper", "property_peft", "--tracking-uri", uri)
    for label in ("Full fine-tuning", "BitFit", "LoRA"):  # the paper's row labels, read from published.yaml
        assert label in out
    table = client.download_artifacts(parent.info.run_id, "compare/property_peft.csv", str(tmp_path))
    rows = pd.read_csv(table).set_index("method")
    assert rows.loc["full", "test_r2 as published"] == pytest.approx(0.90)  # chosen on valid (0.60), not on test
    assert rows.loc["lora", "test_r2 as published"] == pytest.approx(0.65)
    assert rows.loc["lora", "test_r2 paper"] == pytest.approx(0.1613)  # the report's figure, from the package data
    assert rows.loc["lora", "test_r2 diff"] == pytest.approx(0.65 - 0.1613)
    assert rows["trials"].tolist() == [2, 0, 1, 0]
    assert "0.9" in out and "0.65" in out
