"""Seq2seq backbones: registration, Chemformer-small shape, rxnfp warm start, study validation."""

import pytest
import torch
from transformers import BertConfig, BertModel

from studies.spec import parse_study
from trainables.errors import StudyError
from trainables.models.backbones import BACKBONES
from trainables.models.tokenizer import BERT_SPECIALS, build_vocab
from trainables.retro.models import SEQ2SEQ, load_seq2seq

from tests.trainables.retro.conftest import SMILES, model_spec


def test_seq2seq_models_are_in_the_shared_registry():
    assert set(SEQ2SEQ.names()) == {"tiny-bart", "chemformer-small", "rxnfp-bert2bert", "hf-seq2seq"}
    assert set(SEQ2SEQ.names()) <= set(BACKBONES.names())


def test_chemformer_small_shape():
    model, tokenizer = load_seq2seq(model_spec("chemformer-small", max_length=256), SMILES, seed=0)
    c = model.config
    assert (c.d_model, c.encoder_layers, c.decoder_layers, c.encoder_attention_heads) == (512, 6, 6, 8)
    assert (c.encoder_ffn_dim, c.decoder_ffn_dim, c.activation_function) == (2048, 2048, "gelu")
    assert tokenizer.convert_ids_to_tokens(tokenizer("CC(=O)Cl")["input_ids"]) == ["<s>", "C", "C", "(", "=", "O", ")", "Cl", "</s>"]


def test_rxnfp_bert2bert_is_warm_started_on_both_sides(tmp_path):
    vocab = build_vocab(SMILES, list(BERT_SPECIALS.values()))
    (tmp_path / "vocab.txt").write_text("\n".join(vocab) + "\n")
    torch.manual_seed(0)
    bert = BertModel(BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                intermediate_size=64, max_position_embeddings=64), add_pooling_layer=False)
    bert.save_pretrained(tmp_path)
    model, tokenizer = load_seq2seq(model_spec("rxnfp-bert2bert", path=str(tmp_path)), SMILES, seed=0)
    ref = bert.state_dict()
    enc = model.encoder.state_dict()
    assert all(torch.equal(enc[k], ref[k]) for k in ref)
    dec = {k.removeprefix("bert."): v for k, v in model.decoder.state_dict().items()}
    assert torch.equal(dec["encoder.layer.0.attention.self.query.weight"], ref["encoder.layer.0.attention.self.query.weight"])
    cross = [k for k in dec if "crossattention" in k]
    assert cross and not any("crossattention" in k for k in ref)  # cross-attention is new
    assert model.config.decoder_start_token_id == tokenizer.cls_token_id
    ids = tokenizer(["CCOC(C)=O"], return_tensors="pt")
    out = model.generate(input_ids=ids.input_ids, attention_mask=ids.attention_mask, num_beams=2, max_length=8)
    assert out.shape[0] == 1 and out[0, 0].item() == tokenizer.cls_token_id


def _study(**changes):
    study = {"name": "s", "task": "retro", "dataset": {"name": "uspto50k", "path": "/nowhere"},
             "model": {"name": "tiny-bart"}, "search_space": "retro", "fixed": {"gamma": 0}, "metric": "valid_top1"}
    study.update(changes)
    return study


def test_study_validation_names_the_key():
    spec = parse_study(_study())
    assert spec.direction == "max"
    with pytest.raises(StudyError, match="model.name: the retro task needs a seq2seq model"):
        parse_study(_study(model={"name": "tiny-bert"}))
    with pytest.raises(StudyError, match="options.beam_size: Input should be greater than or equal to 10"):
        parse_study(_study(options={"beam_size": 4}))
    with pytest.raises(StudyError, match="options.teacher: unknown key"):
        parse_study(_study(options={"teacher": "x.csv"}))
    with pytest.raises(StudyError, match="options.teacher_csv: .*file not found"):
        parse_study(_study(options={"teacher_csv": "/nowhere/t.csv"}))
    with pytest.raises(StudyError, match="fixed.gamma: without a teacher"):
        parse_study(_study(fixed={}))
    with pytest.raises(StudyError, match="needs a reactions dataset"):
        parse_study(_study(dataset={"name": "lipophilicity"}))
    with pytest.raises(StudyError, match="metric 'valid_rmse'"):
        parse_study(_study(metric="valid_rmse"))
