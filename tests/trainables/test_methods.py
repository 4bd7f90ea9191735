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


def _unmapped_bert():
    """tiny-bert posing as a model PEFT has no (IA)^3 mapping for (MoLFormer's remote code)."""
    backbone, _ = load_backbone(ModelSpec(name="tiny-bert", max_length=64), SMILES, seed=0)
    backbone.config.model_type = "molformer"
    return backbone


def test_ia3_on_unmapped_models_scales_keys_values_and_ffn() -> None:
    from trainables.methods import ia3_targets

    targets, ffn = ia3_targets(_unmapped_bert())
    leaves = {t.split("encoder.layer.")[1].split(".", 1)[1] for t in targets}
    assert leaves == {"attention.self.key", "attention.self.value", "output.dense"}  # FFN out, not attention out
    assert ffn and all(f.endswith(".output.dense") and "attention" not in f for f in ffn)
    peft_model = apply_method("ia3", _unmapped_bert(), {})
    vectors = {n.split(".ia3_l")[0].split("encoder.layer.")[1] for n, p in peft_model.named_parameters() if "ia3_l" in n}
    assert len(vectors) == 2 * 3  # 2 layers x (key, value, FFN)


def test_ia3_fails_clearly_when_targets_cannot_be_resolved() -> None:
    class Fused(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.config = type("C", (), {"model_type": "fused"})()
            self.Wqkv = torch.nn.Linear(4, 12)
            self.fc1 = torch.nn.Linear(4, 8)

    from trainables.methods import ia3_targets

    with pytest.raises(ValueError, match=r"could not find keys, values, the FFN .*\['Wqkv', 'fc1'\]"):
        ia3_targets(Fused())


def test_hf_backbone_sets_deterministic_eval(tmp_path) -> None:
    from transformers import BertConfig, BertModel

    from trainables.models.backbones import BACKBONES
    from trainables.models.tokenizer import BERT_SPECIALS, build_vocab

    config = BertConfig(vocab_size=16, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32)
    config.deterministic_eval = False  # as MoLFormer's config ships
    BertModel(config).save_pretrained(tmp_path)
    (tmp_path / "vocab.txt").write_text("\n".join(build_vocab(SMILES, list(BERT_SPECIALS.values()))) + "\n")
    from transformers import BertTokenizerFast

    BertTokenizerFast(vocab_file=str(tmp_path / "vocab.txt")).save_pretrained(tmp_path)
    model, _ = BACKBONES.get("hf").load(ModelSpec(name="hf", path=str(tmp_path)), SMILES, 0)
    assert model.config.deterministic_eval is True
