from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import BertConfig, BertModel

from studies.spec import ModelSpec
from trainables.models.backbones import load_backbone, rxnfp_bert_dir
from trainables.models.tokenizer import BERT_SPECIALS, build_vocab, smiles_tokenizer

SMILES = ["CCO", "c1ccccc1O", "CC(=O)Nc1ccc(O)cc1"]


def test_tiny_bert_is_seeded_and_uses_train_vocab() -> None:
    a, tok = load_backbone(ModelSpec(name="tiny-bert", max_length=64), SMILES, seed=1)
    b, _ = load_backbone(ModelSpec(name="tiny-bert", max_length=64), SMILES, seed=1)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    assert a.config.vocab_size == len(tok) and "[UNK]" not in tok.convert_ids_to_tokens(tok(SMILES[2])["input_ids"])


def test_hf_directory_loads_model_and_tokenizer(tmp_path: Path) -> None:
    tok = smiles_tokenizer(build_vocab(SMILES, list(BERT_SPECIALS.values())), BERT_SPECIALS, 64)
    model = BertModel(BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                 intermediate_size=64), add_pooling_layer=False)
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    loaded, loaded_tok = load_backbone(ModelSpec(name="hf", path=str(tmp_path), max_length=64), [], seed=0)
    ids = torch.tensor([loaded_tok("CCO")["input_ids"]])
    model.eval(), loaded.eval()
    assert torch.allclose(model(ids).last_hidden_state, loaded(ids).last_hidden_state)


def test_hf_missing_local_directory_is_a_study_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no such file or directory"):
        ModelSpec(name="hf", path=str(tmp_path / "missing"))


def test_rxnfp_bert_from_the_pypi_wheel() -> None:
    folder = rxnfp_bert_dir()  # downloads the wheel once into the cache
    assert (folder / "vocab.txt").is_file() and (folder / "config.json").is_file()
    model, tok = load_backbone(ModelSpec(name="rxnfp-bert"), [], seed=0)
    assert (model.config.num_hidden_layers, model.config.hidden_size, model.config.vocab_size) == (12, 256, 591)
    ids = tok("CC(=O)Oc1ccccc1C(=O)O")["input_ids"]
    assert tok.unk_token_id not in ids  # the regex tokenizer matches the pretrained vocabulary
    # pretrained, not random: every encoder weight is the file's
    state = torch.load(folder / "pytorch_model.bin", map_location="cpu", weights_only=True)
    ours = model.state_dict()
    loaded = [k for k in state if k.startswith("bert.") and k.removeprefix("bert.") in ours]
    assert len(loaded) >= 12 * 16
    assert all(torch.equal(state[k], ours[k.removeprefix("bert.")]) for k in loaded)
