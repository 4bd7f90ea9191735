"""Treatments: which parameters train, and adapters / LoRA are on the forward path."""

import pytest
import torch

from trainables.errors import StudyError
from trainables.retro.treatments import TREATMENT_CHOICES, apply_treatment, parse_treatment


def _batch(tokenizer):
    enc = tokenizer(["CC(=O)Nc1ccccc1", "CCOC(C)=O"], padding=True, return_tensors="pt")
    dec = tokenizer(["CC(=O)Cl.Nc1ccccc1", "CC(=O)O.CCO"], padding=True, return_tensors="pt")
    return {"input_ids": enc.input_ids, "attention_mask": enc.attention_mask, "decoder_input_ids": dec.input_ids}


def _groups(model):
    """Parameter names of the wrapped model by part: encoder/decoder layers, shared, lora, adapters."""
    names = {}
    for n, p in model.named_parameters():
        if "lora_" in n:
            group = "lora_enc" if ".encoder." in n else "lora_dec"
        elif n.startswith("adapters."):
            group = "adapter_" + n.split(".")[2]
        elif ".encoder." in n:
            group = "encoder"
        elif ".decoder." in n:
            group = "decoder"
        else:
            group = "shared"  # tied token embeddings / LM head
        names.setdefault(group, []).append((n, p.requires_grad))
    return {g: {rg for _, rg in items} for g, items in names.items()}


EXPECTED = {  # part -> requires_grad of all its parameters (a set {True} / {False})
    "full": {"encoder": {True}, "decoder": {True}, "shared": {True}},
    "freeze_encoder": {"encoder": {False}, "decoder": {True}, "shared": {False}},
    "freeze_decoder": {"encoder": {True}, "decoder": {False}, "shared": {False}},
    "adapter_mid": {"encoder": {True}, "decoder": {True}, "shared": {True}, "adapter_mid": {True}},
    "adapter_end": {"encoder": {True}, "decoder": {True}, "shared": {True}, "adapter_end": {True}},
    "adapter_all": {"encoder": {True}, "decoder": {True}, "shared": {True}, "adapter_mid": {True}, "adapter_end": {True}},
    "freeze_encoder+freeze_decoder+adapter_all": {
        "encoder": {False}, "decoder": {False}, "shared": {False}, "adapter_mid": {True}, "adapter_end": {True}},
    "lora_encoder": {"encoder": {False}, "decoder": {True}, "shared": {False}, "lora_enc": {True}},
    "lora_decoder": {"encoder": {True}, "decoder": {False}, "shared": {False}, "lora_dec": {True}},
    "lora_both": {"encoder": {False}, "decoder": {False}, "shared": {False}, "lora_enc": {True}, "lora_dec": {True}},
    "lora_both+adapter_all": {"encoder": {False}, "decoder": {False}, "shared": {False}, "lora_enc": {True},
                              "lora_dec": {True}, "adapter_mid": {True}, "adapter_end": {True}},
    "freeze_encoder+lora_decoder": {"encoder": {False}, "decoder": {False}, "shared": {False}, "lora_dec": {True}},
}


def test_every_choice_is_covered():
    assert set(EXPECTED) == set(TREATMENT_CHOICES)


@pytest.mark.parametrize("treatment", TREATMENT_CHOICES)
def test_which_parameters_train(tiny, treatment):
    model, tokenizer = tiny
    wrapped = apply_treatment(model, treatment, {"lora_rank": 4, "adapter_dim": 16})
    assert _groups(wrapped) == EXPECTED[treatment]
    # One real step: exactly the trainable parameters receive gradients and move.
    before = {n: p.detach().clone() for n, p in wrapped.named_parameters()}
    trainable = [p for p in wrapped.parameters() if p.requires_grad]
    opt = torch.optim.SGD(trainable, lr=1.0)
    wrapped.train()
    wrapped(**_batch(tokenizer)).logits.float().pow(2).mean().backward()
    for n, p in wrapped.named_parameters():
        assert (p.grad is not None) == p.requires_grad, n
    opt.step()
    moved = {n for n, p in wrapped.named_parameters() if not torch.equal(p, before[n])}
    frozen = {n for n, p in wrapped.named_parameters() if not p.requires_grad}
    assert not moved & frozen
    assert moved  # something trains in every treatment


@pytest.mark.parametrize("treatment, marker", [("lora_both", "lora_B"), ("lora_encoder", "lora_B"),
                                               ("lora_decoder", "lora_B"), ("adapter_all", "adapters.")])
def test_new_weights_are_on_the_forward_path(tiny, treatment, marker):
    model, tokenizer = tiny
    wrapped = apply_treatment(model, treatment, {"lora_rank": 4, "adapter_dim": 16}).eval()
    batch = _batch(tokenizer)
    with torch.no_grad():
        before = wrapped(**batch).logits
        touched = 0
        for n, p in wrapped.named_parameters():
            if marker in n:
                p.copy_(torch.randn_like(p) * 0.5)
                touched += 1
        after = wrapped(**batch).logits
    assert touched > 0
    assert not torch.allclose(before, after, atol=1e-4)
    # Serving exports a plain model (LoRA merged) plus the adapters: same outputs.
    base, adapters = wrapped.export()
    from trainables.retro.treatments import Seq2SeqModel

    served = Seq2SeqModel(base)
    if adapters is not None:
        served.adapters = adapters
        adapters.attach(base)
    with torch.no_grad():
        assert torch.allclose(served(**batch).logits, after, atol=1e-4)


def test_zero_initialised_adapters_start_as_the_base_model(tiny):
    model, tokenizer = tiny
    batch = _batch(tokenizer)
    with torch.no_grad():
        base = model.eval()(**batch).logits.clone()
        wrapped = apply_treatment(model, "adapter_all", {"adapter_dim": 16}).eval()
        assert torch.allclose(wrapped(**batch).logits, base, atol=1e-6)


def test_bad_combinations_name_the_part():
    with pytest.raises(StudyError, match="unknown part 'lora_everything'"):
        parse_treatment("full+lora_everything")
    with pytest.raises(StudyError, match="one of lora_encoder"):
        parse_treatment("lora_encoder+lora_decoder")
    assert parse_treatment("freeze_encoder + adapter_end") == ["freeze_encoder", "adapter_end"]
