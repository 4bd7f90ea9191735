"""Hybrid heads: RDKit descriptors / Morgan counts (normalized on train) beside the pooled embedding; served alike."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from studies.spec import parse_study
from tests.conftest import tiny_study
from trainables import TASKS, NullReporter
from trainables.data.datasets import CRIPPEN_LOGP_DESCRIPTORS
from trainables.property.baselines import featurize
from trainables.property.features import FEATURES_FILE, HeadFeaturizer
from trainables.property.knobs import LMExtraKnobs
from trainables.property.task import PropertyTrainer
from trainables.selection.active import mc_dropout
from trainables.selection.common import embed_ids


@pytest.fixture(scope="module")
def study():
    spec = parse_study(tiny_study(search_space="property_plus", max_epochs=1, dataset={"limit": 60}))
    return spec, TASKS.get("property").prepare(spec).payload


def test_the_knob_is_declared_once_and_off_by_default() -> None:
    assert LMExtraKnobs.defaults()["head_features"] == "none"
    with pytest.raises(ValueError, match="head_features"):
        LMExtraKnobs.from_config({"head_features": "maccs"})


def test_features_are_the_baselines_normalized_on_train_without_label_descriptors(study) -> None:
    spec, data = study
    trainer = PropertyTrainer({"head_features": "both"}, data, spec)
    feats = trainer.featurizer
    # nci-logp's label is Crippen logP: its descriptors stay out, as the forest baseline leaves them out
    assert not set(CRIPPEN_LOGP_DESCRIPTORS) & set(feats.names)
    raw = featurize(data.train.smiles, exclude=CRIPPEN_LOGP_DESCRIPTORS).astype(np.float64)
    assert raw.shape[1] == feats.size == trainer.model.config.n_features
    z = trainer.feats["candidates"][: trainer.n_train]
    np.testing.assert_allclose(z, np.clip((raw - raw.mean(0)) / np.where(raw.std(0) > 1e-8, raw.std(0), 1), -10, 10),
                               rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(z.mean(0), 0, atol=1e-3)  # train statistics only: train is centred...
    assert abs(trainer.feats["test"].mean()) > 1e-4  # ...test is not (it was never used to fit them)
    assert trainer.model.head[1].in_features == trainer.model.config.hidden_size + feats.size


def test_hybrid_head_trains_serves_and_id_only_paths_see_the_features(study, tmp_path: Path) -> None:
    spec, data = study
    trainer = PropertyTrainer({"head_features": "descriptors", "head_dropout": 0.2}, data, spec)
    trainer.fit(NullReporter(keep_dir=tmp_path / "ckpt"))
    model = trainer.model
    ids = trainer.ids["test"]
    explicit = trainer.predict_ids(ids, trainer.feats["test"])
    np.testing.assert_allclose(trainer.predict_ids(ids), explicit, rtol=1e-6)  # looked up by token ids
    # the features matter: other features, other predictions
    assert not np.allclose(trainer.predict_ids(ids, np.zeros_like(trainer.feats["test"])), explicit)
    emb = embed_ids(model, ids, trainer.tokenizer.pad_token_id)
    assert emb.shape == (len(ids), model.config.hidden_size + trainer.featurizer.size)
    torch.testing.assert_close(emb[:, model.config.hidden_size:], torch.as_tensor(trainer.feats["test"]))
    passes = mc_dropout(model, ids, trainer.tokenizer.pad_token_id, passes=4)
    assert passes.shape == (4, len(ids)) and float(passes.std(0).mean()) > 0
    with pytest.raises(KeyError, match="no molecular features registered"):
        model.eval()(torch.tensor([[2, 7, 7, 7, 3]]), torch.ones(1, 5, dtype=torch.long))

    from trainables.property.serving import PropertyPredictor

    folder = tmp_path / "ckpt" / "model"
    saved = json.loads((folder / FEATURES_FILE).read_text())
    assert saved["kind"] == "descriptors" and len(saved["names"]) == len(saved["mean"]) == trainer.featurizer.size
    served = PropertyPredictor.load(folder)
    out = served.predict(data.test.smiles + ["not a smiles"])
    np.testing.assert_allclose(out["prediction"][:-1], explicit, rtol=1e-5, atol=1e-5)
    assert np.isnan(out["prediction"].iloc[-1])
    # the served model featurizes SMILES itself: a randomized form of a molecule predicts the same
    from rdkit import Chem

    other = Chem.MolToSmiles(Chem.MolFromSmiles(data.test.smiles[0]), doRandom=True)
    assert served.predict([other])["prediction"][0] == pytest.approx(explicit[0], rel=1e-5)


def test_a_hybrid_folder_without_its_features_file_is_refused(study, tmp_path: Path) -> None:
    spec, data = study
    trainer = PropertyTrainer({"head_features": "morgan"}, data, spec)
    trainer.export(tmp_path / "model")
    (tmp_path / "model" / FEATURES_FILE).unlink()
    from trainables.errors import DataError
    from trainables.property.serving import PropertyPredictor

    with pytest.raises(DataError, match="2048 molecular features"):
        PropertyPredictor.load(tmp_path / "model")


def test_plain_head_writes_no_features_and_bad_kind_is_named() -> None:
    with pytest.raises(ValueError, match="head_features 'maccs'"):
        HeadFeaturizer("maccs")


def test_encoder_influence_on_a_hybrid_head_is_refused_with_the_way_out(study) -> None:
    spec, data = study
    from trainables.errors import StudyError
    from trainables.selection.influence.selector import InfluenceSelector

    trainer = PropertyTrainer({"head_features": "descriptors"}, data, spec)
    head = InfluenceSelector({"selection": "influence", "influence_params": "head"})._subset_names(trainer.model)
    assert head and all(n.startswith("head.") for n in head)
    encoder = InfluenceSelector({"selection": "influence", "influence_params": "last_layers", "influence_layers": 1})
    with pytest.raises(StudyError, match="carry no molecular features: with head_features, use 'head' or 'head_out'"):
        encoder._subset_names(trainer.model)
