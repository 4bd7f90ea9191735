"""Seq2seq backbones for retrosynthesis, registered in the shared ``BACKBONES`` registry.

Each entry is a :class:`~trainables.models.backbones.Backbone` whose ``load(spec, smiles, seed)``
returns ``(model, tokenizer)`` with a transformers seq2seq model (``generate`` works). The names
are also kept in :data:`SEQ2SEQ` so the retro task can tell its models from the encoders of the
property task.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from transformers import (
    AutoModelForSeq2SeqLM,
    AutoTokenizer,
    BartConfig,
    BartForConditionalGeneration,
    EncoderDecoderModel,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from trainables.models.backbones import BACKBONES, Backbone, rxnfp_bert_dir
from trainables.models.tokenizer import BART_SPECIALS, BERT_SPECIALS, build_vocab, smiles_tokenizer
from trainables.registry import Registry
from trainables.retro.chemformer import convert_molbart_checkpoint, is_molbart_checkpoint

if TYPE_CHECKING:
    from trainables.spec import ModelSpec

__all__ = ["SEQ2SEQ", "load_seq2seq", "bart_config", "decoder_start_id", "is_random_init"]

SEQ2SEQ: Registry[Backbone] = Registry("seq2seq model")

# Tokens a randomized SMILES may use although the canonical train set does not (ring closures).
_EXTRA_TOKENS = [str(d) for d in range(10)] + [f"%{d}" for d in range(10, 20)]


def load_seq2seq(spec: "ModelSpec", smiles: Sequence[str], seed: int = 0) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load the seq2seq model a study names.

    Args:
        spec: The study's model section.
        smiles: Train products and reactants (the vocabulary of models built from scratch).
        seed: Seed of a random initialisation.
    """
    from trainables.models.resolve import local_model

    return SEQ2SEQ.get(spec.name).load(local_model(spec), smiles, seed)


def is_random_init(spec: "ModelSpec") -> bool:
    """Whether the study's seq2seq model starts from random weights (a BART shape without ``model.path`` or
    a pretraining stage, ``model.pretrain``, whose checkpoint becomes the path)."""
    return spec.name in _FROM_SCRATCH and not spec.path and not spec.pretrain


def decoder_start_id(model: PreTrainedModel) -> int:
    """The token id the decoder starts from."""
    start = model.generation_config.decoder_start_token_id
    if start is None:
        start = model.config.decoder_start_token_id
    if start is None:
        raise ValueError(f"{type(model).__name__} has no decoder_start_token_id")
    return int(start)


def _bart_tokenizer(smiles: Sequence[str], max_length: int):
    vocab = build_vocab(list(smiles) + [" ".join(_EXTRA_TOKENS)], list(BART_SPECIALS.values()))
    return smiles_tokenizer(vocab, BART_SPECIALS, max_length)


def bart_config(tokenizer: PreTrainedTokenizerBase, d_model: int, layers: int, heads: int, ffn: int,
                max_positions: int, dropout: float = 0.1) -> BartConfig:
    """A BART config whose decoder starts from ``<s>`` and stops at ``</s>``."""
    return BartConfig(
        vocab_size=len(tokenizer), d_model=d_model, encoder_layers=layers, decoder_layers=layers,
        encoder_attention_heads=heads, decoder_attention_heads=heads, encoder_ffn_dim=ffn, decoder_ffn_dim=ffn,
        activation_function="gelu", max_position_embeddings=max_positions, dropout=dropout,
        attention_dropout=0.0, pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, decoder_start_token_id=tokenizer.bos_token_id,
        forced_bos_token_id=None, forced_eos_token_id=None, tie_word_embeddings=True,
    )


def _set_generation(model: PreTrainedModel, start: int, eos: int, pad: int) -> PreTrainedModel:
    for cfg in (model.config, model.generation_config):
        cfg.decoder_start_token_id, cfg.eos_token_id, cfg.pad_token_id = start, eos, pad
    model.generation_config.forced_bos_token_id = None
    model.generation_config.forced_eos_token_id = None
    return model


def _bart(d_model: int, layers: int, heads: int, ffn: int, min_positions: int, dropout: float = 0.1):
    def load(spec: "ModelSpec", smiles: Sequence[str], seed: int):
        if is_molbart_checkpoint(spec.path):  # a Chemformer (molbart) Lightning checkpoint, converted
            return convert_molbart_checkpoint(spec.path, spec.max_length)
        if spec.path:  # a transformers directory or hub id (BART, or a converted Chemformer), with its tokenizer
            tokenizer = AutoTokenizer.from_pretrained(spec.path)
            tokenizer.model_max_length = min(tokenizer.model_max_length, spec.max_length)
            return AutoModelForSeq2SeqLM.from_pretrained(spec.path), tokenizer
        tokenizer = _bart_tokenizer(smiles, spec.max_length)
        config = bart_config(tokenizer, d_model, layers, heads, ffn, max(min_positions, spec.max_length + 2), dropout)
        torch.manual_seed(seed)  # reproducible random init
        model = BartForConditionalGeneration(config)
        return _set_generation(model, tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id), tokenizer

    return load


def _rxnfp_bert2bert(spec: "ModelSpec", smiles: Sequence[str], seed: int):
    folder = Path(spec.path) if spec.path else rxnfp_bert_dir()
    tokenizer = smiles_tokenizer(folder / "vocab.txt", BERT_SPECIALS, min(spec.max_length, 512))
    torch.manual_seed(seed)  # the new cross-attention weights are random
    model = EncoderDecoderModel.from_encoder_decoder_pretrained(str(folder), str(folder))
    model.config.vocab_size = model.config.decoder.vocab_size
    return _set_generation(model, tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.pad_token_id), tokenizer


def _hf_seq2seq(spec: "ModelSpec", smiles: Sequence[str], seed: int):
    if not spec.path:
        raise ValueError("model 'hf-seq2seq' needs model.path (a hub id or a local directory)")
    kwargs = {"trust_remote_code": spec.trust_remote_code}
    tokenizer = AutoTokenizer.from_pretrained(spec.path, **kwargs)
    tokenizer.model_max_length = min(tokenizer.model_max_length, spec.max_length)
    return AutoModelForSeq2SeqLM.from_pretrained(spec.path, **kwargs), tokenizer


_FROM_SCRATCH = {"tiny-bart", "chemformer-small"}


def _register(name: str, load, help: str) -> None:  # noqa: ANN001 - a Backbone loader
    entry = Backbone(load)
    SEQ2SEQ.register(name, entry, help=help)
    BACKBONES.register(name, entry, help=help)


_register("tiny-bart", _bart(128, 2, 4, 256, 0, dropout=0.0),
          "seq2seq: 2+2-layer BART (d_model 128, no dropout), random init (tests, smoke runs)")
_register(
    "chemformer-small", _bart(512, 6, 8, 2048, 512),
    "seq2seq: BART shaped like Chemformer small (d_model 512, 6+6 layers, 8 heads, FFN 2048, GELU); "
    "from scratch, or model.path = a Chemformer (molbart) .ckpt (vocabulary file beside it) or a transformers dir / hub id",
)
_register(
    "rxnfp-bert2bert", _rxnfp_bert2bert,
    "seq2seq: encoder-decoder warm-started from the rxnfp BERT on both sides (cross-attention new)",
)
_register("hf-seq2seq", _hf_seq2seq, "seq2seq: any Hugging Face seq2seq model: model.path = hub id or directory")
