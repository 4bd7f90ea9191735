from __future__ import annotations

import pytest
import torch

from studies.spec import ModelSpec
from trainables.methods import METHODS, apply_method, count_parameters
from trainables.models.backbones import load_backbone
from trainables.models.regression import HeadConfig, RegressionModel, pad_batch

SMILES = ["CCO", "c1ccccc1O", "CC(=O)Nc1ccc(O)cc1", "CCN(CC)CC", "O=C(O)c1ccccc1"]


def _model(method: str) -> tuple[RegressionModel, torch.Tensor, torch.Tensor]:
    backbone, tok = load_backbone(ModelSpec(name="tiny-bert", max_length=64), SMILES, seed=0)
    backbone = apply_method(method, backbone, {"lora_r": 4})
    model = RegressionModel(backbone, HeadConfig(hidden_size=backbone.config.hidden_size, head_dropout=0.0))
    ids, mask = pad_batch(tok(SMILES)["input_ids"], tok.pad_token_id)
    return model, ids, mask


def _expected(method: str, name: str) -> bool:
    if name.startswith("head."):
        return True
    return {
        "full": True,
        "bitfit": name.endswith("bias"),
        "lora": "lora_" in name,
        "ia3": "ia3_" in name,
    }[method]


@pytest.mark.parametrize("method", METHODS.names())
def test_exactly_the_intended_parameters_change(method: str) -> None:
    model, ids, mask = _model(method)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2, weight_decay=0.0)
    model.train()
    for _ in range(2):  # two steps: LoRA's A only moves once B is non-zero
        loss = (model(ids, mask) - 1.0).pow(2).mean()
        loss.backward()
        opt.step()
        opt.zero_grad()
    changed = {n for n, p in model.named_parameters() if not torch.equal(p.detach(), before[n])}
    expected = {n for n in before if _expected(method, n)}
    # parameters that see no gradient in this batch (e.g. unused position rows) may stay put,
    # but nothing outside the intended set may move, and every intended tensor must move
    assert changed == expected, (sorted(changed ^ expected))[:10]


def test_parameter_counts() -> None:
    full, _, _ = _model("full")
    lora, _, _ = _model("lora")
    bitfit, _, _ = _model("bitfit")
    n_full, total = count_parameters(full)
    assert n_full == total
    n_lora, total_lora = count_parameters(lora)
    head = sum(p.numel() for p in lora.head.parameters())
    # tiny-bert: 2 layers x (query, value) x r*(in+out) with r=4, hidden 64
    assert n_lora - head == 2 * 2 * 4 * (64 + 64)
    assert total_lora == total + n_lora - head
    n_bitfit, _ = count_parameters(bitfit)
    assert n_bitfit - head == sum(p.numel() for n, p in bitfit.backbone.named_parameters() if n.endswith("bias"))
