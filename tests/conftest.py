"""Shared fixtures: where the shared data lives, tiny studies, isolated stores."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


# -- parallel runs (pytest-xdist, `-n auto --dist loadscope` in pyproject.toml) ------------------------------

@pytest.hookimpl(optionalhook=True)
def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """``-n auto``: 2 workers even on 2 cores (most tests wait on Ray start-ups, servers and subprocesses), at
    most 4 (each worker may hold a local Ray and a torch model: memory, not cores, bounds them);
    ``$CHEMTUNE_TEST_WORKERS`` overrides."""
    if os.environ.get("CHEMTUNE_TEST_WORKERS"):
        return int(os.environ["CHEMTUNE_TEST_WORKERS"])
    return max(2, min(4, os.cpu_count() or 1))


def worker_group(nodeid: str) -> str:
    """The tests one worker runs together: a module (its module-scoped fixtures, a launched study or a server,
    are set up once), and all of tests/cluster but the stand-alone walk-through (its package fixtures start one
    PostgreSQL, MLflow server and 3-node Ray cluster per run). (xdist's own ``loadgroup`` marks do not group
    under pytest 9: xdist renames ``item._nodeid``, which pytest 9 no longer reads.)"""
    path = nodeid.split("::", 1)[0]
    if path.startswith("tests/cluster/") and path != "tests/cluster/test_guide.py":
        return "tests/cluster"
    return path


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    from xdist.scheduler import LoadScopeScheduling

    class ByTestGroup(LoadScopeScheduling):
        """Whole groups (``worker_group``) to a worker, in collection order (the long cluster tests first)."""

        def _split_scope(self, nodeid: str) -> str:
            return worker_group(nodeid)

    return ByTestGroup(config, log)


def pytest_make_parametrize_id(config: pytest.Config, val: object, argname: str) -> str | None:
    """A long str/bytes parameter (a 10 MB line in tests/security) gets a short id on every pytest version:
    before pytest 9.2 the id was the whole value, and a 10 MB test id broke the test itself (pytest puts it in
    ``PYTEST_CURRENT_TEST``, which a child process then cannot receive: one environment string is at most
    128 KiB) and filled the CI log's last line."""
    if isinstance(val, (str, bytes)) and len(val) > 100:
        return f"{argname}-{len(val)}-long"
    return None


def _shared_data() -> Path:
    env = os.environ.get("CHEMTUNE_DATA_DIR")
    return Path(env) if env else ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``$CHEMTUNE_DATA_DIR`` or ``../shared/data`` beside the checkout (CI has it)."""
    path = _shared_data()
    if not (path / "lipophilicity" / "Lipophilicity.csv").is_file():
        pytest.fail(f"shared data not found at {path}; set CHEMTUNE_DATA_DIR")
    return path


@pytest.fixture(scope="session")
def chemprop_installed() -> None:
    """chemprop is part of what the tests need (tests/install-and-run.sh installs it): missing, the tests
    that use it fail rather than skip, so a newcomer's run and CI's cannot differ silently."""
    from trainables.models import chemprop_api

    if not chemprop_api.chemprop_available():
        pytest.fail("chemprop is not installed; run tests/install-and-run.sh (it installs the chemprop stack)")


@pytest.fixture(scope="module", autouse=True)
def _no_inherited_tracking_uri() -> Any:
    """A module-scoped fixture that launches a study is set up before the per-test ``_isolated_home``; an
    ``MLFLOW_TRACKING_URI`` left in the process by an earlier module would send its runs to another store."""
    import warnings

    leaked = os.environ.get("MLFLOW_TRACKING_URI")
    if leaked:
        warnings.warn(f"MLFLOW_TRACKING_URI={leaked} was left in the environment by an earlier test module")
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        yield


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    # Keep studies out of the working tree; the model/data cache stays shared (downloads once).
    monkeypatch.setenv("CHEMTUNE_HOME", str(tmp_path_factory.mktemp("home")))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


def tiny_study(**overrides: Any) -> dict[str, Any]:
    """A study dict small enough for a unit test: 300 NCI molecules, tiny-bert, 2 epochs."""
    study: dict[str, Any] = {
        "name": "tiny",
        "task": "property",
        "dataset": {"name": "nci-logp", "split": "random", "limit": 300, "seed": 0},
        "model": {"name": "tiny-bert", "max_length": 64},
        "search_space": "property",
        "num_trials": 2,
        "max_epochs": 2,
        "metric": "valid_rmse",
        "resources": {"cpus_per_trial": 1},
        "baselines": {"random_forest": False},  # tests/studies/test_baselines.py fits them
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(study.get(key), dict):
            study[key] = {**study[key], **value}
        else:
            study[key] = value
    return study


def tiny_selection_study(selection: str, limit: int, max_epochs: int, **fixed: Any) -> dict[str, Any]:
    """A tiny ``selection`` study: NCI molecules with 30% of them as the pool; no early stopping (ASHA's first
    rung may not come before an active-learning round or a mixed curriculum's last epoch)."""
    return tiny_study(
        name=f"tiny-{selection}", search_space="selection", max_epochs=max_epochs,
        scheduler={"grace_period": max_epochs},
        dataset={"limit": limit, "fractions": {"valid": 0.1, "test": 0.1, "pool": 0.3}},
        fixed={"selection": selection, **fixed},
    )


def tiny_pretrain_study(model: str, **overrides: Any) -> dict[str, Any]:
    """A tiny ``pretrain`` study: 200 NCI molecules drawn into the corpus (160 train), 1 epoch."""
    return tiny_study(**{
        "name": f"tiny-pretrain-{model}", "task": "pretrain", "search_space": "pretrain", "metric": "valid_token_acc",
        "dataset": {"name": "corpus", "limit": 200}, "model": {"name": model, "max_length": 64},
        "num_trials": 1, "max_epochs": 1, "fixed": {"batch_size": 32, "lr": 1e-3},
        "options": {"draw_from": [{"name": "nci-logp", "limit": 200}], "val_subset": 8, "test_limit": 8},
        "baselines": {}, **overrides})


# One tiny study per registered task, for the shared suites (tests/trainables/test_tasks.py).
TINY_STUDIES: dict[str, dict[str, Any]] = {
    "property": tiny_study(fixed={"method": "lora"}),
    "retro": tiny_study(
        task="retro", search_space="retro", metric="valid_top1",
        dataset={"name": "uspto50k", "path": str(_shared_data() / "uspto50k"), "limit": 48, "split": "random"},
        model={"name": "tiny-bart", "max_length": 128},
        fixed={"gamma": 0, "batch_size": 16, "treatment": "lora_all+mlp_all"},
        options={"val_subset": 8, "test_limit": 8, "allow_random_init": True},  # LoRA on a random tiny-bart
    ),
    "pretrain": tiny_pretrain_study("tiny-bert"),
}


# -- paper studies (studies/papers/, studies/uspto50k_gamma.yaml) ---------------------------------------

@pytest.fixture
def paper_data_dir(tmp_path, monkeypatch):
    """$CHEMTUNE_DATA_DIR as a paper study expects it: the shared data, a Chemformer checkpoint, a teacher CSV."""
    import pandas as pd
    import torch

    from tests.trainables.retro.test_chemformer import MolbartBART
    from trainables.models.tokenizer import build_vocab
    from trainables.retro.chemformer import MOLBART_SPECIALS

    shared = _shared_data()
    root = tmp_path / "data"
    (root / "uspto50k").mkdir(parents=True)
    for name in ("train.smi", "valid.smi", "test.smi"):
        (root / "uspto50k" / name).symlink_to(shared / "uspto50k" / name)
    (root / "lipophilicity").symlink_to(shared / "lipophilicity")
    n = 16  # the smoke variants' dataset.limit; the teacher is right on every other row
    with open(shared / "uspto50k" / "train.smi") as f:
        pairs = [next(f).split(">>") for _ in range(n)]
    products, reactants = [p.strip() for p, _ in pairs], [r.strip() for _, r in pairs]
    preds = [r if i % 2 == 0 else reactants[(i + 1) % n] for i, r in enumerate(reactants)]
    pd.DataFrame({"product": products, "prediction": preds}).to_csv(
        root / "uspto50k" / "teacher_llasmol_train.csv", index=False)
    (root / "chemformer").mkdir()
    vocab = [MOLBART_SPECIALS[k] for k in ("pad", "unk", "bos", "eos", "mask")] + ["<SEP>"] + list(build_vocab(["CCO"], []))
    (root / "chemformer" / "bart_vocab.txt").write_text("\n".join(vocab) + "\n")
    torch.save({"state_dict": MolbartBART(len(vocab), 0).state_dict(), "hyper_parameters": {"num_heads": 4}},
               root / "chemformer" / "chemformer_small.ckpt")
    monkeypatch.setenv("CHEMTUNE_DATA_DIR", str(root))
    return root




def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Note each rerun (pytest-rerunfailures) in ``$CHEMTUNE_TEST_REPORTS/reruns.txt``: the test command
    reruns a failed test once, and tests/support/failures.py lists what passed only on its second try, so
    a flaky test stays visible at the end of the log instead of vanishing into a pass."""
    folder = os.environ.get("CHEMTUNE_TEST_REPORTS")
    if report.outcome != "rerun" or not folder or os.environ.get("PYTEST_XDIST_WORKER"):
        return  # the controller sees every worker's reports; a worker would write each twice
    lines = str(report.longrepr).strip().splitlines() if report.longrepr else []
    error = next((line for line in lines if line.startswith("E ")), lines[-1] if lines else "")
    with open(Path(folder) / "reruns.txt", "a", encoding="utf-8") as out:
        out.write(f"RERUN {report.nodeid}: {error[:300]}\n")
    with open(Path(folder) / "reruns.log", "a", encoding="utf-8") as out:  # the whole report, to read later
        out.write(f"===== RERUN {report.nodeid}\n{report.longrepr}\n"
                  + "".join(f"----- {name}\n{text}\n" for name, text in report.sections) + "\n")
