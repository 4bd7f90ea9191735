"""The ``dmpnn`` property model on tiny data: trains, reports like an LM trial, resumes, serves, mixes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from search_spaces import SPACES
from studies.spec import parse_study
from tests.conftest import tiny_study
from trainables import TASKS, NullReporter
from trainables.errors import StudyError
from trainables.models import chemprop_api

pytestmark = pytest.mark.usefixtures("chemprop_installed")  # fails, not skips, without it

CONFIG = {"arch": "dmpnn", "dmpnn_depth": 2, "dmpnn_hidden_size": 64, "dmpnn_ffn_hidden_size": 32,
          "dmpnn_aggregation": "mean", "dmpnn_lr": 3e-3, "dmpnn_batch_size": 32}


@pytest.fixture(scope="module")
def study():
    spec = parse_study(tiny_study(search_space="dmpnn", max_epochs=3, dataset={"limit": 150}))
    return spec, TASKS.get("property").prepare(spec).payload


def test_dmpnn_trial_reports_checkpoints_and_learns(study, tmp_path: Path) -> None:
    spec, data = study
    reporter = NullReporter(keep_dir=tmp_path / "ckpt")
    final = TASKS.get("property").train(CONFIG, data, spec, reporter)
    assert [h["epoch"] for h in reporter.history] == [1, 2, 3]
    assert {"valid_rmse", "valid_r2", "train_loss", "trainable_params"} <= set(reporter.history[0])
    assert "test_rmse" in final and "test_rmse" not in reporter.history[0]  # test once, at the end
    assert reporter.history[-1]["train_loss"] < reporter.history[0]["train_loss"]
    ckpt = tmp_path / "ckpt"
    assert {"state.pt", "model", "valid_predictions.csv", "test_predictions.csv", "metrics.json"} <= {
        p.name for p in ckpt.iterdir()}
    test = pd.read_csv(ckpt / "test_predictions.csv")
    rmse = float(np.sqrt(np.mean((test["prediction"] - test["target"]) ** 2)))
    assert rmse == pytest.approx(final["test_rmse"])

    # The served model (the pyfunc's predictor) gives the trial's own test predictions.
    from trainables.property.dmpnn import DmpnnPredictor
    from trainables.property.serving import PropertyPyfunc

    assert DmpnnPredictor.is_dmpnn(ckpt / "model")
    pyfunc = PropertyPyfunc()
    pyfunc.load_context(type("Ctx", (), {"artifacts": {"model": str(ckpt / "model")}})())
    out = pyfunc.predict(None, pd.DataFrame({"smiles": list(test["smiles"][:5]) + ["not a smiles"]}))
    np.testing.assert_allclose(out["prediction"][:5].astype(float), test["prediction"][:5], rtol=1e-5, atol=1e-5)
    assert out["prediction"].iloc[5] is None and out["error"].iloc[5] == "invalid SMILES"  # null when served


def test_dmpnn_resumes_from_its_checkpoint(study, tmp_path: Path) -> None:
    spec, data = study
    full = NullReporter()
    TASKS.get("property").train(CONFIG, data, spec, full)
    part = NullReporter(keep_dir=tmp_path / "d")
    with pytest.raises(KeyboardInterrupt):
        TASKS.get("property").train(CONFIG, data, spec, _StopAfter(part, 2))
    resumed = NullReporter(resume_from=tmp_path / "d")
    TASKS.get("property").train(CONFIG, data, spec, resumed)
    assert [h["epoch"] for h in resumed.history] == [3]
    assert resumed.history[-1]["valid_rmse"] == pytest.approx(full.history[-1]["valid_rmse"], rel=1e-4)


def test_passes_per_epoch_trains_like_as_many_epochs_of_one_pass(study) -> None:
    """``dmpnn_passes_per_epoch``: 1 reported epoch of 3 passes is the same training (shuffles, schedule) as
    3 epochs of 1 pass; only the number of reports differs."""
    spec, data = study
    one_pass = NullReporter()
    TASKS.get("property").train(CONFIG, data, spec, one_pass)  # 3 epochs x 1 pass
    three = NullReporter()
    TASKS.get("property").train({**CONFIG, "dmpnn_passes_per_epoch": 3}, data, spec.model_copy(update={"max_epochs": 1}),
                                three)
    assert [h["epoch"] for h in three.history] == [1]
    assert three.history[-1]["valid_rmse"] == pytest.approx(one_pass.history[-1]["valid_rmse"], rel=1e-5)
    assert three.history[-1]["test_rmse"] == pytest.approx(one_pass.history[-1]["test_rmse"], rel=1e-5)
    once = NullReporter()  # and it is not one pass: 1 epoch of 1 pass ends elsewhere
    TASKS.get("property").train(CONFIG, data, spec.model_copy(update={"max_epochs": 1}), once)
    assert once.history[-1]["valid_rmse"] != pytest.approx(three.history[-1]["valid_rmse"], rel=1e-3)


class _StopAfter:
    """A reporter that interrupts the trial after ``n`` epochs (as a preempted worker would)."""

    def __init__(self, inner: NullReporter, n: int) -> None:
        self.inner, self.n = inner, n

    def report(self, metrics, checkpoint_dir=None) -> None:  # noqa: ANN001
        self.inner.report(metrics, checkpoint_dir)
        if metrics["epoch"] >= self.n:
            raise KeyboardInterrupt

    def resume_dir(self):  # noqa: ANN201
        return None


def test_mixed_space_gives_each_family_its_own_knobs() -> None:
    space = SPACES.get("property_mix")
    configs = [space.sample(seed=s) for s in range(12)]
    archs = {c["arch"] for c in configs}
    assert archs == {"lm", "dmpnn"}
    for c in configs:
        if c["arch"] == "dmpnn":
            assert "dmpnn_depth" in c and "method" not in c and "lr" not in c
        else:
            assert "method" in c and not any(k.startswith("dmpnn_") for k in c)


def test_dmpnn_without_chemprop_fails_before_any_trial(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(chemprop_api, "chemprop_available", lambda: False)
    with pytest.raises(StudyError, match=r"arch dmpnn needs chemprop, which is not installed"):
        parse_study(tiny_study(search_space="property_mix"))
    parse_study(tiny_study(search_space="property_mix", fixed={"arch": "lm"}))
