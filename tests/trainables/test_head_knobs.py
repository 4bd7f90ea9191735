"""Head knobs of LM trials: CLS vs mean pooling, head width, a separate head learning rate; served alike."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from studies.spec import parse_study
from tests.conftest import tiny_study
from trainables import TASKS
from trainables.property.task import PropertyTrainer


@pytest.fixture(scope="module")
def study():
    spec = parse_study(tiny_study(search_space="property_plus", max_epochs=1, dataset={"limit": 60}))
    return spec, TASKS.get("property").prepare(spec).payload


def test_cls_pooling_head_width_and_head_lr(study, tmp_path: Path) -> None:
    spec, data = study
    trainer = PropertyTrainer({"pooling": "cls", "head_hidden": 128, "head_lr_mult": 10.0, "lr": 1e-4}, data, spec)
    model = trainer.model
    assert model.head[1].out_features == 128
    ids, mask = torch.tensor([[2, 5, 6, 3]]), torch.ones(1, 4, dtype=torch.long)
    model.eval()
    with torch.no_grad():
        hidden = model.backbone(input_ids=ids, attention_mask=mask).last_hidden_state
        torch.testing.assert_close(model.embed(ids, mask), hidden[:, 0])
    optimizer = trainer.make_optimizer()
    lrs = sorted(g["lr"] for g in optimizer.param_groups)
    assert lrs == pytest.approx([1e-4, 1e-3])
    head_ids = {id(p) for p in model.head.parameters()}
    assert {id(p) for p in optimizer.param_groups[1]["params"]} == head_ids

    trainer.export(tmp_path / "model")
    from trainables.property.serving import PropertyPredictor

    served = PropertyPredictor.load(tmp_path / "model")
    assert served.model.config.pooling == "cls"
    smiles = data.test.smiles[:4]
    np.testing.assert_allclose(served.predict(smiles)["prediction"], trainer.predict_ids(trainer.encode(smiles)),
                               rtol=1e-5, atol=1e-5)


def test_mean_pooling_is_the_default_and_bad_pooling_is_named(study) -> None:
    spec, data = study
    assert PropertyTrainer({}, data, spec).model.config.pooling == "mean"
    with pytest.raises(ValueError, match="pooling 'max': choose mean or cls"):
        PropertyTrainer({"pooling": "max"}, data, spec)
