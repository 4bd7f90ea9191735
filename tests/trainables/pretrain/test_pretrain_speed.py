"""The MLM epoch's fast paths give the results of the plain ones: the loss over the masked positions only
equals the full-position loss (and its gradients), the vectorised collate equals transformers' collator, the
corpus tokenized once equals tokenizing each epoch's SMILES, padding is the row-by-row padding."""

from __future__ import annotations

import random

import pytest
import torch
from transformers import BertForMaskedLM, DataCollatorForLanguageModeling

from studies.spec import parse_study
from tests.conftest import tiny_pretrain_study
from trainables import TASKS
from trainables.batching import pad_batch
from trainables.loop import adamw
from trainables.pretrain.task import MLMTrainer, _PretrainLoop, masked_lm_head
from trainables.retro.data import randomize_smiles


@pytest.fixture(scope="module")
def trainer() -> MLMTrainer:
    spec = parse_study(tiny_pretrain_study("tiny-bert", fixed={"batch_size": 32, "lr": 1e-3, "enumerate_prob": 0.5}))
    payload = TASKS.get("pretrain").prepare(spec).payload
    return MLMTrainer(dict(spec.fixed), payload, spec.trial_spec())


def _grads(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}


def test_masked_positions_loss_equals_the_full_position_loss_and_its_gradients(trainer: MLMTrainer) -> None:
    assert trainer.head is trainer.model.cls  # the fast path is the one trained (BERT's head split off)
    batch = next(iter(trainer.train_loader(0)))
    picked = int((batch["labels"] != -100).sum())
    assert 0 < picked < int(batch["attention_mask"].sum())  # some positions masked, most not
    model = trainer.model.eval()  # no dropout: both passes see the same network
    model.zero_grad()
    fast, n_fast = trainer.train_step(batch)
    fast.backward()
    fast_grads = _grads(model)
    model.zero_grad()
    full, n_full = _PretrainLoop.train_step(trainer, batch)
    full.backward()
    full_grads = _grads(model)
    assert n_fast == n_full == picked
    assert torch.isclose(fast, full, rtol=1e-5, atol=1e-6), (float(fast), float(full))
    assert full_grads.keys() == fast_grads.keys() and "cls.predictions.transform.dense.weight" in fast_grads
    for key, grad in full_grads.items():
        assert torch.allclose(fast_grads[key], grad, rtol=1e-4, atol=1e-6), key
    model.zero_grad()
    model.train()


def test_a_head_that_does_not_reproduce_the_logits_is_not_split_off(trainer: MLMTrainer) -> None:
    class Scaled(BertForMaskedLM):
        def forward(self, *args, **kwargs):  # noqa: ANN002, ANN003, ANN202 - transformers' signature
            out = super().forward(*args, **kwargs)
            out.logits = out.logits * 2
            return out

    probe = trainer.train_ids[:2]
    pad = trainer.tokenizer.pad_token_id
    assert masked_lm_head(trainer.model, probe, pad) is trainer.model.cls
    assert masked_lm_head(Scaled(trainer.model.config), probe, pad) is None


def test_collate_masks_as_transformers_collator_does(trainer: MLMTrainer) -> None:
    rows = trainer.train_ids[:40]
    ours = trainer.collate_fn(7)
    theirs = DataCollatorForLanguageModeling(trainer.tokenizer, mlm_probability=trainer.knobs.mask_prob, seed=7)
    for start in (0, 20):  # the second batch continues the same random stream
        a, b = ours(rows[start:start + 20]), theirs([{"input_ids": r} for r in rows[start:start + 20]])
        assert a.keys() == {"input_ids", "attention_mask", "labels"}
        for key in a:
            assert torch.equal(a[key], b[key]), key
    assert (a["labels"] != -100).any()


def test_epoch_ids_are_the_epochs_smiles_tokenized(trainer: MLMTrainer) -> None:
    for epoch in (0, 1):
        rng = random.Random(trainer.seed * 100_003 + epoch)
        smiles = [randomize_smiles(s, rng) if rng.random() < 0.5 else s for s in trainer.data.train]
        assert smiles != list(trainer.data.train)  # some enumerated
        assert trainer.epoch_ids(epoch) == trainer.encode(smiles)


def test_pad_batch_pads_right_to_the_longest_row() -> None:
    ids, mask = pad_batch([[5, 6, 7], [8], [], [1, 2, 3, 4]], 0)
    assert ids.tolist() == [[5, 6, 7, 0], [8, 0, 0, 0], [0, 0, 0, 0], [1, 2, 3, 4]]
    assert mask.tolist() == [[1, 1, 1, 0], [1, 0, 0, 0], [0, 0, 0, 0], [1, 1, 1, 1]]
    assert ids.dtype == mask.dtype == torch.long


def test_adamw_uses_the_fused_kernel_where_it_can() -> None:
    layer = torch.nn.Linear(3, 2)
    assert adamw(layer.parameters(), lr=1e-3).defaults["fused"]
    assert adamw([{"params": list(layer.parameters())}], lr=1e-3, weight_decay=0.1).defaults["fused"]
