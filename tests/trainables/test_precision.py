"""resources.precision: bf16 autocast on the CPU when asked (about 2x on CPUs with AVX512-BF16; the property
paper tables' CPU run uses it), fp32 weights and an fp32 regression head whatever the autocast."""

from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError

from studies.spec import parse_study
from tests.conftest import tiny_study
from tests.support.dtypes import first_linear_dtypes
from trainables import TASKS, NullReporter
from trainables.loop import make_accelerator
from trainables.property.task import PropertyTrainer
from trainables.spec import ResourcesSpec


@pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU's choices")
@pytest.mark.parametrize(("precision", "expected"), [("auto", "no"), ("fp32", "no"), ("bf16", "bf16")])
def test_precision_sets_the_accelerators_autocast_on_the_cpu(precision: str, expected: str) -> None:
    accelerator = make_accelerator(1, precision)
    assert accelerator.mixed_precision == expected
    with accelerator.autocast():
        out = torch.nn.Linear(4, 4)(torch.randn(2, 4))
    assert out.dtype == (torch.bfloat16 if expected == "bf16" else torch.float32)


def test_an_unknown_precision_is_refused_naming_the_key() -> None:
    with pytest.raises(ValidationError, match="precision"):
        ResourcesSpec(precision="fp16")


def test_a_bf16_trial_trains_in_bf16_and_predicts_in_fp32(tmp_path) -> None:
    spec = parse_study(tiny_study(resources={"cpus_per_trial": 1, "precision": "bf16"}))
    prepared = TASKS.get("property").prepare(spec)
    trainer = PropertyTrainer({"method": "full", "lr": 1e-3, "batch_size": 32, "head_dropout": 0.0,
                               "weight_decay": 0.0}, prepared.payload, spec)
    ids = trainer.encode(prepared.payload.valid.smiles[:8])
    with first_linear_dtypes(trainer.model.backbone) as seen:
        before = trainer.predict_ids(ids)
    assert seen == [torch.bfloat16]  # the encoder ran under bf16 autocast
    assert all(p.dtype == torch.float32 for p in trainer.model.parameters())
    with trainer.accelerator.autocast():
        z = trainer.unwrapped()(*_batch(ids, trainer))
    assert z.dtype == torch.float32  # the head left autocast: no bf16 rounding of the prediction
    reporter = NullReporter(keep_dir=tmp_path)
    final = trainer.fit(reporter)
    assert before.dtype == "float64" and final["test_rmse"] == final["test_rmse"]  # trained to a finite test RMSE
    assert reporter.history[-1]["train_loss"] < reporter.history[0]["train_loss"]


def _batch(ids, trainer):
    from trainables.batching import padded_batches

    _, input_ids, mask = next(iter(padded_batches(ids, trainer.tokenizer.pad_token_id, 8, trainer.device)))
    return input_ids, mask
