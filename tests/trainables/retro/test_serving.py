"""The logged retro model carries a signature: a ``product`` column in, top-k reactants out, beam params."""

from pathlib import Path

import mlflow
import pandas as pd
import pytest
from mlflow.exceptions import MlflowException
from mlflow.models import get_model_info

from studies.store import tracking_uri_scope
from trainables.retro.predictor import save_retro_model
from trainables.retro.serving import RetroPyfunc


@pytest.fixture(scope="module")
def logged(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """A tiny-bart saved as a trial saves it (tested with 4 beams), logged as the tracker logs it."""
    from tests.trainables.retro.conftest import SMILES, model_spec
    from trainables.retro.models import load_seq2seq

    tmp_path = tmp_path_factory.mktemp("retro-serving")
    model, tokenizer = load_seq2seq(model_spec(), SMILES, seed=0)
    folder = tmp_path / "model"
    save_retro_model(folder, model, tokenizer, None, num_beams=4)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    with tracking_uri_scope(uri):
        experiment = mlflow.create_experiment("retro-serving", artifact_location=(tmp_path / "artifacts").as_uri())
        with mlflow.start_run(experiment_id=experiment):
            info = mlflow.pyfunc.log_model(name="model", python_model=RetroPyfunc(), artifacts={"model": str(folder)},
                                           pip_requirements=["chemtune"],  # as the tracker: no inference run
                                           signature=RetroPyfunc.model_signature(folder))
    return uri, info.model_uri


def test_signature_names_the_product_column_the_outputs_and_the_beam_params(logged) -> None:
    uri, model_uri = logged
    with tracking_uri_scope(uri):
        signature = get_model_info(model_uri).signature
    assert signature.inputs.input_names() == ["product"]
    assert signature.outputs.input_names() == ["product", "canonical_product", "prediction_1", "prediction_2",
                                               "prediction_3", "prediction_4", "error"]
    assert {p.name: p.default for p in signature.params.params} == {"num_beams": 4, "top_k": 4}


def test_the_loaded_model_reads_products_and_honours_top_k(logged) -> None:
    uri, model_uri = logged
    with tracking_uri_scope(uri):
        model = mlflow.pyfunc.load_model(model_uri)
        out = model.predict(pd.DataFrame({"product": ["CC(=O)Nc1ccccc1", "C1CC"]}))
        assert [c for c in out.columns if c.startswith("prediction_")] == [f"prediction_{k}" for k in range(1, 5)]
        assert out["error"].tolist() == ["", "invalid SMILES"]
        # the params reach the model (MLflow drops params a signature does not declare)
        two = model.predict(pd.DataFrame({"product": ["CC(=O)Nc1ccccc1"]}), params={"top_k": 2})
        assert [c for c in two.columns if c.startswith("prediction_")] == ["prediction_1", "prediction_2"]
        with pytest.raises(MlflowException, match="product"):  # a wrong column is refused by name
            model.predict(pd.DataFrame({"reactants": ["CCO"]}))


def test_chemtune_predict_feeds_the_column_the_signature_names(logged, tmp_path: Path, capsys) -> None:
    """`chemtune predict` reads a SMILES column and hands it to a retro model as ``product``."""
    from studies.cli import main

    uri, model_uri = logged
    src = tmp_path / "in.csv"
    src.write_text("id,smiles\n7,CC(=O)Nc1ccccc1\n8,C1CC\n")
    out = tmp_path / "out.csv"
    assert main(["predict", model_uri, str(src), "-o", str(out), "--tracking-uri", uri]) == 0
    frame = pd.read_csv(out, keep_default_na=False)
    assert list(frame.columns[:4]) == ["id", "smiles", "canonical_product", "prediction_1"]
    assert "product" not in frame.columns and frame["error"].tolist() == ["", "invalid SMILES"]
    assert "1 invalid SMILES at lines 3" in capsys.readouterr().out
