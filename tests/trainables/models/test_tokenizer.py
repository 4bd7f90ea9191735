from __future__ import annotations

from pathlib import Path

from transformers import AutoTokenizer

from trainables.models.tokenizer import BART_SPECIALS, BERT_SPECIALS, build_vocab, smiles_tokenizer, split_smiles


def test_regex_keeps_bracket_atoms_and_two_letter_elements() -> None:
    assert split_smiles("C[C@@H](Cl)c1ccc(Br)cc1") == [
        "C", "[C@@H]", "(", "Cl", ")", "c", "1", "c", "c", "c", "(", "Br", ")", "c", "c", "1"
    ]
    assert "".join(split_smiles("CC(=O)O>>CCO.[Na+]")) == "CC(=O)O>>CCO.[Na+]"


def test_vocab_specials_first_then_by_frequency() -> None:
    vocab = build_vocab(["CCO", "CCN"], list(BERT_SPECIALS.values()))
    assert list(vocab)[:5] == list(BERT_SPECIALS.values())
    assert list(vocab)[5] == "C"  # most frequent


def test_bert_wrapping_unknown_tokens_and_roundtrip(tmp_path: Path) -> None:
    tok = smiles_tokenizer(build_vocab(["CCO"], list(BERT_SPECIALS.values())), BERT_SPECIALS, 32)
    enc = tok("CCOBr")["input_ids"]
    assert tok.convert_ids_to_tokens(enc) == ["[CLS]", "C", "C", "O", "[UNK]", "[SEP]"]
    tok.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    assert loaded("CCOBr")["input_ids"] == enc and loaded.pad_token_id == tok.pad_token_id


def test_bart_specials_wrap_with_bos_eos() -> None:
    tok = smiles_tokenizer(build_vocab(["CCO"], list(BART_SPECIALS.values())), BART_SPECIALS)
    assert tok.convert_ids_to_tokens(tok("CO")["input_ids"]) == ["<s>", "C", "O", "</s>"]
