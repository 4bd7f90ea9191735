"""Seq2seq backbones: registration, Chemformer-small shape, rxnfp warm start, study validation."""

import pytest
import torch
from transformers import BertConfig, BertModel

from studies.spec import parse_study
from tests.trainables.retro.conftest import SMILES, model_spec
from trainables.errors import StudyError
from trainables.models.backbones import BACKBONES
from trainables.models.tokenizer import BERT_SPECIALS, build_vocab
from trainables.retro.models import SEQ2SEQ, load_seq2seq


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
             "model": {"name": "tiny-bart"}, "search_space": "retro", "fixed": {"gamma": 0, "treatment": "full"},
             "metric": "valid_top1"}
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
        parse_study(_study(fixed={"treatment": "full"}))
    with pytest.raises(StudyError, match="needs a reactions dataset"):
        parse_study(_study(dataset={"name": "lipophilicity"}))
    with pytest.raises(StudyError, match="metric 'valid_rmse'"):
        parse_study(_study(metric="valid_rmse"))


def test_freezing_or_lora_on_random_weights_is_refused_unless_allowed():
    with pytest.raises(StudyError, match=r"'tiny-bart' without model.path starts from random weights.*fix_decoder\+mlp_end"):
        parse_study(_study(fixed={"gamma": 0, "treatment": "fix_decoder+mlp_end"}))
    with pytest.raises(StudyError, match=r"random weights, so freezing a stack or LoRA \(fix_encoder, lora_all\)"):
        parse_study(_study(fixed={"gamma": 0}, ranges={"treatment": ["full", "fix_encoder", "mlp_all", "lora_all"]}))
    parse_study(_study(fixed={"gamma": 0, "treatment": "mlp_all"}))  # MLPs on a full fine-tune are fine
    parse_study(_study(fixed={"gamma": 0, "treatment": "lora_all"}, options={"allow_random_init": True}))


def test_chemformer_checkpoint_path_loads_the_converted_model(tmp_path):
    from tests.trainables.retro.test_chemformer import MolbartBART
    from trainables.retro.chemformer import MOLBART_SPECIALS, ChemformerForConditionalGeneration

    vocab = [MOLBART_SPECIALS[k] for k in ("pad", "unk", "bos", "eos", "mask")] + ["<SEP>"] + list(build_vocab(SMILES, []))
    (tmp_path / "bart_vocab.txt").write_text("\n".join(vocab) + "\n")
    torch.save({"state_dict": MolbartBART(len(vocab), 0).state_dict(), "hyper_parameters": {"num_heads": 4}},
               tmp_path / "chemformer.ckpt")
    model, tokenizer = load_seq2seq(model_spec("chemformer-small", path=str(tmp_path / "chemformer.ckpt")), SMILES)
    assert isinstance(model, ChemformerForConditionalGeneration) and tokenizer.bos_token == "^"
    spec = parse_study(_study(model={"name": "chemformer-small", "path": str(tmp_path / "chemformer.ckpt")},
                              fixed={"gamma": 0, "treatment": "fix_encoder+lora_decoder+mlp_end"}))
    assert spec.fixed["treatment"] == "fix_encoder+lora_decoder+mlp_end"
