"""MoLFormer-XL's path: model ``hf`` + ``trust_remote_code`` on a folder that carries its own modelling code.

A tiny stand-in folder (tests/support/remote_model.py: custom config, model and tokenizer classes, ``auto_map``)
goes through a property trial under every fine-tuning method, selection, serving (pyfunc) and ``chemtune predict``.
"""

from __future__ import annotations

from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch

from studies.spec import parse_study
from tests.conftest import tiny_selection_study, tiny_study
from tests.support.remote_model import MODEL_TYPE, build_remote_model
from trainables import TASKS, NullReporter
from trainables.methods import METHODS, apply_method
from trainables.models.backbones import load_backbone
from trainables.property.task import PropertyTrainer


@pytest.fixture(scope="module")
def remote(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """The model folder (vocabulary from the tiny study's molecules) and the study's ``model:``."""
    spec = parse_study(tiny_study(dataset={"limit": 200}))
    smiles = TASKS.get("property").prepare(spec).payload
    every = smiles.train.smiles + smiles.valid.smiles + smiles.test.smiles
    folder = build_remote_model(tmp_path_factory.mktemp("remote") / "tinymol", every)
    return folder, {"name": "hf", "path": str(folder), "trust_remote_code": True, "max_length": 64}


@pytest.fixture(scope="module")
def study(remote):
    spec = parse_study(tiny_study(name="tiny-remote", model=remote[1], max_epochs=1, dataset={"limit": 60}))
    return spec, TASKS.get("property").prepare(spec).payload


def test_the_folder_loads_only_with_trust_remote_code(remote) -> None:
    folder, model = remote
    from trainables.spec import ModelSpec

    backbone, tokenizer = load_backbone(ModelSpec(**model), [], 0)
    assert type(backbone).__module__.startswith("transformers_modules.")  # the folder's own code
    assert backbone.config.model_type == MODEL_TYPE and backbone.config.deterministic_eval  # set by the loader
    assert tokenizer.model_max_length == 64 and tokenizer("CCO")["input_ids"][0] == tokenizer.bos_token_id
    with pytest.raises(ValueError, match="trust_remote_code"):
        load_backbone(ModelSpec(**{**model, "trust_remote_code": False}), [], 0)


@pytest.mark.parametrize("method", METHODS.names())
def test_each_method_finds_its_targets_trains_and_serves(method: str, study, tmp_path: Path) -> None:
    spec, data = study
    trainer = PropertyTrainer({"method": method, "lr": 1e-3}, data, spec)
    trained = {n for n, p in trainer.model.backbone.named_parameters() if p.requires_grad}
    if method == "full":
        assert trained == {n for n, _ in trainer.model.backbone.named_parameters()}
    elif method == "bitfit":
        assert trained and all(n.endswith("bias") for n in trained)
    elif method == "lora":  # no PEFT mapping for the remote model type: the attention query/value projections
        assert {n.split(".lora_")[0].rsplit(".", 1)[-1] for n in trained} == {"query", "value"}
    elif method == "ia3":  # keys, values and the FFN's output (not the attention output)
        wrapped = {n.split(".ia3_l")[0] for n in trained}
        leaves = {n.split("encoder.layer.")[1].split(".", 1)[1] for n in wrapped}
        assert leaves == {"attention.self.key", "attention.self.value", "output.dense"}
    else:
        raise AssertionError(f"add the targets of method {method!r} to this test")
    before = [p.detach().clone() for p in trainer.model.backbone.parameters() if p.requires_grad]
    final = trainer.fit(NullReporter(keep_dir=tmp_path / "ckpt"))
    after = [p for p in trainer.model.backbone.parameters() if p.requires_grad]
    assert any(not torch.equal(a, b) for a, b in zip(after, before)), "the encoder's trainable weights did not move"
    assert np.isfinite(final["test_rmse"])

    from trainables.property.serving import PropertyPredictor

    folder = tmp_path / "ckpt" / "model"
    assert (folder / "backbone" / "modeling_tinymol.py").is_file()  # the served folder carries the code too
    assert (folder / "trust_remote_code").read_text() == "1"
    served = PropertyPredictor.load(folder)
    np.testing.assert_allclose(served.predict(data.test.smiles)["prediction"], trainer.predict_ids(trainer.ids["test"]),
                               rtol=1e-4, atol=1e-4)  # adapters merged: the same predictions


def test_methods_on_the_bare_remote_backbone(remote) -> None:
    from trainables.spec import ModelSpec

    for method in ("lora", "ia3"):
        backbone, _ = load_backbone(ModelSpec(**remote[1]), [], 0)
        peft_model = apply_method(method, backbone, {})
        out = peft_model(input_ids=torch.tensor([[2, 5, 6, 3]]), attention_mask=torch.ones(1, 4, dtype=torch.long))
        assert out.last_hidden_state.shape == (1, 4, backbone.config.hidden_size)


SELECTION = {
    "influence": {"top_k": 8, "influence_params": "head", "influence_curvature": "gauss_newton"},
    "active": {"n_select": 8, "rounds": 1, "acquisition": "uncertainty", "mc_passes": 4},
    "curriculum": {},
}


@pytest.mark.parametrize("selection", SELECTION)
def test_selection_on_the_remote_model(selection: str, remote) -> None:
    study = tiny_selection_study(selection, limit=100, max_epochs=2, **SELECTION[selection])
    spec = parse_study({**study, "model": remote[1]})
    prepared = TASKS.get("property").prepare(spec)
    config = {"batch_size": 32, "lissa_depth": 5, "lissa_batch": 32, "lr": 1e-3}
    from search_spaces import SPACES

    config = {**SPACES.get(spec.search_space).sample(seed=0, fixed=spec.fixed), **config}
    final = TASKS.get("property").train(config, prepared.payload, spec, NullReporter())
    assert np.isfinite(final["test_rmse"])


def test_encoder_influence_on_remote_code_is_a_clear_error(remote) -> None:
    """The tiny model, like MoLFormer's code, takes a 2D mask only: encoder-level influence says so."""
    from trainables.errors import StudyError

    fixed = {"top_k": 8, "influence_params": "last_layers", "influence_layers": 1, "method": "full",
             "influence_curvature": "gauss_newton"}
    spec = parse_study({**tiny_selection_study("influence", limit=100, max_epochs=2, **fixed), "model": remote[1]})
    prepared = TASKS.get("property").prepare(spec)
    from search_spaces import SPACES

    config = {**SPACES.get(spec.search_space).sample(seed=0, fixed=spec.fixed), "batch_size": 32}
    with pytest.raises(StudyError, match="4D additive attention mask.*use 'head' or 'head_out'"):
        TASKS.get("property").train(config, prepared.payload, spec, NullReporter())


def test_pyfunc_and_chemtune_predict(study, tmp_path: Path) -> None:
    spec, data = study
    trainer = PropertyTrainer({"method": "lora", "lr": 1e-3, "head_features": "descriptors"}, data, spec)
    trainer.fit(NullReporter(keep_dir=tmp_path / "ckpt"))
    expected = trainer.predict_ids(trainer.ids["test"])
    from studies.cli import main as cli
    from studies.store import tracking_uri_scope
    from trainables.property.serving import PropertyPyfunc

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    experiment = mlflow.MlflowClient(uri).create_experiment("remote", artifact_location=(tmp_path / "art").as_uri())
    with tracking_uri_scope(uri), mlflow.start_run(experiment_id=experiment) as run:
        mlflow.pyfunc.log_model(name="model", python_model=PropertyPyfunc(),
                                artifacts={"model": str(tmp_path / "ckpt" / "model")},
                                signature=PropertyPyfunc.model_signature(tmp_path / "ckpt" / "model"))
    src, out = tmp_path / "in.csv", tmp_path / "out.csv"
    pd.DataFrame({"id": range(len(data.test)), "smiles": data.test.smiles}).to_csv(src, index=False)
    assert cli(["predict", f"runs:/{run.info.run_id}/model", str(src), "-o", str(out), "--tracking-uri", uri]) == 0
    np.testing.assert_allclose(pd.read_csv(out)["prediction"], expected, rtol=1e-4, atol=1e-4)
