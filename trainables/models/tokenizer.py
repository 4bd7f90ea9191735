"""SMILES tokenizers built on Hugging Face ``tokenizers``: regex pre-split, word-level vocabulary.

They save and load like any fast tokenizer (``save_pretrained`` / ``AutoTokenizer.from_pretrained``),
so a registered model carries its tokenizer with it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

from tokenizers import Regex, Tokenizer, pre_tokenizers, processors
from tokenizers.models import WordLevel
from transformers import PreTrainedTokenizerFast

__all__ = ["SMILES_REGEX", "BERT_SPECIALS", "BART_SPECIALS", "split_smiles", "build_vocab", "smiles_tokenizer"]

# The SMILES regex of Schwaller et al. (Molecular Transformer, rxnfp); '>>' keeps reactions whole.
SMILES_REGEX = (
    r"(\%\([0-9]{3}\)|\[[^\]]+]|Br?|Cl?|N|O|S|P|F|I|b|c|n|o|s|p|\||\(|\)|\.|=|#|-|\+|\\|\/|:|~|@|\?|>>?|\*|\$|\%[0-9]{2}|[0-9])"
)
BERT_SPECIALS = {"pad": "[PAD]", "unk": "[UNK]", "cls": "[CLS]", "sep": "[SEP]", "mask": "[MASK]"}
BART_SPECIALS = {"pad": "<pad>", "unk": "<unk>", "bos": "<s>", "eos": "</s>", "mask": "<mask>"}

_pre = pre_tokenizers.Split(Regex(SMILES_REGEX), behavior="isolated")


def split_smiles(smiles: str) -> list[str]:
    """Regex tokens of one SMILES string (without special tokens)."""
    return [piece for piece, _ in _pre.pre_tokenize_str(smiles)]


def build_vocab(smiles: Iterable[str], specials: Sequence[str], min_count: int = 1) -> dict[str, int]:
    """Vocabulary of the regex tokens in ``smiles``: specials first, then by frequency."""
    counts = Counter(tok for s in smiles for tok in split_smiles(s))
    tokens = [t for t, c in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])) if c >= min_count]
    vocab = {t: i for i, t in enumerate(specials)}
    for t in tokens:
        vocab.setdefault(t, len(vocab))
    return vocab


def smiles_tokenizer(
    vocab: dict[str, int] | str | Path,
    specials: dict[str, str] = BERT_SPECIALS,
    max_length: int = 512,
) -> PreTrainedTokenizerFast:
    """A fast SMILES tokenizer.

    Args:
        vocab: token -> id, or the path of a BERT-style ``vocab.txt`` (one token a line).
        specials: role -> token; BERT roles (cls/sep) wrap inputs as ``[CLS] x [SEP]``,
            BART roles (bos/eos) as ``<s> x </s>``.
        max_length: ``model_max_length`` of the tokenizer.
    """
    if not isinstance(vocab, dict):
        lines = Path(vocab).read_text().splitlines()
        vocab = {tok: i for i, tok in enumerate(lines) if tok}
    missing = [t for t in specials.values() if t not in vocab]
    if missing:
        raise ValueError(f"vocabulary lacks the special tokens {missing}")
    tok = Tokenizer(WordLevel(vocab, unk_token=specials["unk"]))
    tok.pre_tokenizer = _pre
    first, last = (specials["cls"], specials["sep"]) if "cls" in specials else (specials["bos"], specials["eos"])
    tok.post_processor = processors.TemplateProcessing(
        single=f"{first} $A {last}",
        pair=f"{first} $A {last} $B {last}",
        special_tokens=[(first, vocab[first]), (last, vocab[last])],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        model_max_length=max_length,
        **{f"{role}_token": token for role, token in specials.items()},
    )
