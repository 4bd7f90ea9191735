"""Chemformer (molbart) checkpoints: a small checkpoint in molbart's exact key layout converts into a
transformers model that computes the same logits, and converts back to the same tensors."""

import math

import pytest
import torch
from torch import nn

from tests.trainables.retro.conftest import SMILES
from trainables.errors import StudyError
from trainables.retro.chemformer import (
    MOLBART_SPECIALS,
    ChemformerForConditionalGeneration,
    convert_molbart_checkpoint,
    molbart_state_dict,
    sinusoidal_table,
)

D, HEADS, FFN, LAYERS, MAX_LEN = 32, 4, 64, 2, 40


class MolbartBART(nn.Module):
    """molbart's BARTModel (pre_train.py) reduced to its modules and forward: same names, same maths."""

    def __init__(self, vocab_size: int, pad: int) -> None:
        super().__init__()
        self.d_model = D
        self.emb = nn.Embedding(vocab_size, D, padding_idx=pad)
        self.dropout = nn.Dropout(0.1)
        self.register_buffer("pos_emb", self._positional_embs())
        enc = nn.TransformerEncoderLayer(D, HEADS, FFN, 0.1, "gelu", norm_first=True)
        self.encoder = nn.TransformerEncoder(enc, LAYERS, norm=nn.LayerNorm(D), enable_nested_tensor=False)
        dec = nn.TransformerDecoderLayer(D, HEADS, FFN, 0.1, "gelu", norm_first=True)
        self.decoder = nn.TransformerDecoder(dec, LAYERS, norm=nn.LayerNorm(D))
        self.token_fc = nn.Linear(D, vocab_size)
        self.loss_fn = nn.CrossEntropyLoss(reduction="none", ignore_index=pad)
        for p in self.parameters():  # molbart's _init_params, plus random biases/norms so every tensor matters
            nn.init.xavier_uniform_(p) if p.dim() > 1 else nn.init.normal_(p, std=0.2)

    def _positional_embs(self):  # molbart's loop, written out
        encs = torch.tensor([dim / self.d_model for dim in range(0, self.d_model, 2)])
        encs = 10000 ** encs
        encs = [(torch.sin(pos / encs), torch.cos(pos / encs)) for pos in range(MAX_LEN)]
        return torch.stack([torch.stack(e, dim=1).flatten()[: self.d_model] for e in encs])

    def _construct_input(self, ids):
        embs = self.emb(ids) * math.sqrt(self.d_model) + self.pos_emb[: ids.size(0)].unsqueeze(1)
        return self.dropout(embs)

    def forward(self, enc_ids, enc_pad, dec_ids, dec_pad):  # seq-first, pad masks True where padded
        tgt_mask = nn.Transformer.generate_square_subsequent_mask(dec_ids.size(0))
        memory = self.encoder(self._construct_input(enc_ids), src_key_padding_mask=enc_pad.T)
        out = self.decoder(self._construct_input(dec_ids), memory, tgt_mask=tgt_mask,
                           tgt_key_padding_mask=dec_pad.T, memory_key_padding_mask=enc_pad.T.clone())
        return self.token_fc(out)


@pytest.fixture
def molbart_ckpt(tmp_path):
    from trainables.models.tokenizer import build_vocab

    specials = [MOLBART_SPECIALS[k] for k in ("pad", "unk", "bos", "eos", "mask")] + ["<SEP>"]
    vocab = list(build_vocab(SMILES, specials))
    (tmp_path / "bart_vocab.txt").write_text("\n".join(vocab) + "\n")
    torch.manual_seed(0)
    ref = MolbartBART(len(vocab), pad=0).eval()
    hyper = {"pad_token_idx": 0, "vocab_size": len(vocab), "d_model": D, "num_layers": LAYERS, "num_heads": HEADS,
             "d_feedforward": FFN, "activation": "gelu", "max_seq_len": MAX_LEN, "dropout": 0.1}
    path = tmp_path / "model.ckpt"  # a Lightning checkpoint: state_dict + hyper_parameters + trainer state
    torch.save({"state_dict": ref.state_dict(), "hyper_parameters": hyper, "epoch": 3, "global_step": 10,
                "pytorch-lightning_version": "1.2.3"}, path)
    return path, ref


def _inputs(tokenizer, sources, targets):
    enc = tokenizer(sources, padding=True, return_tensors="pt")
    dec = tokenizer(targets, padding=True, return_tensors="pt")
    dec_ids, dec_mask = dec.input_ids[:, :-1], dec.attention_mask[:, :-1]  # "^ tokens" (last & or pad dropped)
    return enc.input_ids, enc.attention_mask, dec_ids, dec_mask


def test_converted_checkpoint_computes_molbarts_logits(molbart_ckpt, tmp_path):
    path, ref = molbart_ckpt
    model, tokenizer = convert_molbart_checkpoint(path, max_length=64)
    model.eval()
    assert isinstance(model, ChemformerForConditionalGeneration)
    assert tokenizer.convert_ids_to_tokens(tokenizer("CC(=O)Cl")["input_ids"]) == ["^", "C", "C", "(", "=", "O", ")", "Cl", "&"]
    ids, mask, dec_ids, dec_mask = _inputs(tokenizer, ["CC(=O)Nc1ccccc1", "CCOC(C)=O"], ["CC(=O)Cl.Nc1ccccc1", "CCO"])
    with torch.no_grad():
        expected = ref(ids.T, mask.T == 0, dec_ids.T, dec_mask.T == 0).transpose(0, 1)
        got = model(input_ids=ids, attention_mask=mask, decoder_input_ids=dec_ids,
                    decoder_attention_mask=dec_mask).logits
    valid = dec_mask.bool()
    assert torch.allclose(got[valid], expected[valid], atol=1e-4), (got[valid] - expected[valid]).abs().max()
    # Untied output projection, trainable bias, fixed positions (a buffer, not a parameter).
    assert model.lm_head.weight.data_ptr() != model.model.shared.weight.data_ptr()
    names = dict(model.named_parameters())
    assert "final_logits_bias" in names and not any("embed_positions" in n for n in names)
    assert torch.allclose(model.model.encoder.embed_positions.table, ref.pos_emb, atol=1e-6)
    # Round trip: back to molbart's layout, tensor for tensor ...
    back = molbart_state_dict(model)
    assert set(back) == set(ref.state_dict())
    for key, value in ref.state_dict().items():
        assert torch.allclose(back[key], value, atol=1e-6), key
    # ... and through save_pretrained / the Auto classes (how trials, checkpoints and serving load it).
    from transformers import AutoModelForSeq2SeqLM

    model.save_pretrained(tmp_path / "hf")
    again = AutoModelForSeq2SeqLM.from_pretrained(tmp_path / "hf").eval()
    assert isinstance(again, ChemformerForConditionalGeneration)
    with torch.no_grad():
        reloaded = again(input_ids=ids, attention_mask=mask, decoder_input_ids=dec_ids,
                         decoder_attention_mask=dec_mask).logits
    assert torch.allclose(reloaded, got, atol=1e-6)
    out = again.generate(input_ids=ids, attention_mask=mask, num_beams=3, num_return_sequences=3, max_length=12)
    assert out.shape[0] == 6 and (out[:, 0] == tokenizer.bos_token_id).all()


def test_sinusoidal_table_matches_molbart():
    ref = MolbartBART(10, 0)
    assert torch.allclose(sinusoidal_table(MAX_LEN, D), ref.pos_emb, atol=1e-5)  # float32 sin of large angles


def test_bad_checkpoints_are_refused_with_the_reason(molbart_ckpt, tmp_path):
    path, ref = molbart_ckpt
    state = ref.state_dict()
    torch.save({"state_dict": {**state, "extra.weight": torch.zeros(2)}, "hyper_parameters": {"num_heads": HEADS}},
               tmp_path / "extra.ckpt")
    with pytest.raises(StudyError, match=r"not in molbart's BARTModel layout: \['extra.weight'\]"):
        convert_molbart_checkpoint(tmp_path / "extra.ckpt")
    torch.save({"state_dict": {"weight": torch.zeros(2)}}, tmp_path / "other.ckpt")
    with pytest.raises(StudyError, match="not a molbart checkpoint"):
        convert_molbart_checkpoint(tmp_path / "other.ckpt")
    (tmp_path / "bart_vocab.txt").write_text("C\nO\n")
    with pytest.raises(StudyError, match="lacks the special tokens"):
        convert_molbart_checkpoint(path)


def test_one_shared_embedding_and_an_untied_projection(molbart_ckpt):
    model, _ = convert_molbart_checkpoint(molbart_ckpt[0])
    shared = model.model.shared.weight
    assert model.model.encoder.embed_tokens.weight is shared and model.model.decoder.embed_tokens.weight is shared
    assert model.lm_head.weight is not shared
