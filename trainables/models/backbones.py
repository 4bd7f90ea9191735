"""Backbone registry: pretrained (or tiny, random) encoders with their SMILES tokenizers.

transformers is imported by the loaders, not here: ``chemtune list models`` reads only the registry.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from trainables.cache import cache_dir, fetch_once
from trainables.errors import DataError
from trainables.registry import Registry

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase


__all__ = ["BACKBONES", "Backbone", "ModelSection", "rxnfp_bert_dir", "load_backbone"]


class ModelSection(Protocol):
    """What a loader reads of a study's ``model:`` (a ``trainables.spec.ModelSpec``; see ``DatasetSection``)."""

    name: str
    path: str | None
    trust_remote_code: bool
    max_length: int

Loader = Callable[[ModelSection, Sequence[str], int], "tuple[PreTrainedModel, PreTrainedTokenizerBase]"]


@dataclass(frozen=True)
class Backbone:
    """A registered encoder; ``load(spec, train_smiles, seed)`` returns ``(model, tokenizer)``."""

    load: Loader


BACKBONES: Registry[Backbone] = Registry("model")

RXNFP_WHEEL = "rxnfp==0.1.0"
RXNFP_FOLDER = "rxnfp/models/transformers/bert_pretrained/"


def load_backbone(spec: ModelSection, train_smiles: Sequence[str], seed: int = 0):
    """Load the backbone a study names (``model.path`` may be an MLflow model URI: fetched once)."""
    from trainables.models.resolve import local_model

    return BACKBONES.get(spec.name).load(local_model(spec), train_smiles, seed)


def _tiny_bert(spec: ModelSection, train_smiles: Sequence[str], seed: int):
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    if spec.path:  # a saved tiny-bert (e.g. pretrained by the pretrain task), with its own tokenizer
        tokenizer = AutoTokenizer.from_pretrained(spec.path)
        tokenizer.model_max_length = min(tokenizer.model_max_length, spec.max_length)
        return BertModel.from_pretrained(spec.path, add_pooling_layer=False), tokenizer

    from trainables.models.tokenizer import BERT_SPECIALS, build_vocab, smiles_tokenizer

    tokenizer = smiles_tokenizer(build_vocab(train_smiles, list(BERT_SPECIALS.values())), BERT_SPECIALS, spec.max_length)
    config = BertConfig(
        vocab_size=len(tokenizer), hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=128, max_position_embeddings=max(spec.max_length, 64) + 2,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)  # random init must be reproducible
    return BertModel(config, add_pooling_layer=False), tokenizer


def rxnfp_bert_dir() -> Path:
    """The rxnfp pretrained BERT folder: ``$CHEMTUNE_RXNFP_DIR``, the cache, or fetched once from PyPI.

    The wheel's own dependencies do not install on current Pythons, so only the wheel itself is
    downloaded (``pip download --no-deps``) and the model folder extracted from it.
    """
    if os.environ.get("CHEMTUNE_RXNFP_DIR"):
        return Path(os.environ["CHEMTUNE_RXNFP_DIR"])
    return fetch_once(cache_dir() / "models" / "rxnfp-bert", _fetch_rxnfp)


def _fetch_rxnfp(out: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-q", "-d", tmp, RXNFP_WHEEL]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        wheels = list(Path(tmp).glob("rxnfp-*.whl"))
        if proc.returncode != 0 or not wheels:
            raise DataError(f"could not download {RXNFP_WHEEL} ({proc.stderr.strip()[-300:]}); set CHEMTUNE_RXNFP_DIR")
        with zipfile.ZipFile(wheels[0]) as wheel:
            for name in wheel.namelist():
                if name.startswith(RXNFP_FOLDER) and not name.endswith("/"):
                    (out / Path(name).name).write_bytes(wheel.read(name))


def _rxnfp_bert(spec: ModelSection, train_smiles: Sequence[str], seed: int):
    from transformers import BertModel

    from trainables.models.tokenizer import BERT_SPECIALS, smiles_tokenizer

    folder = Path(spec.path) if spec.path else rxnfp_bert_dir()
    tokenizer = smiles_tokenizer(folder / "vocab.txt", BERT_SPECIALS, min(spec.max_length, 512))
    return BertModel.from_pretrained(folder, add_pooling_layer=False), tokenizer


def _hf(spec: ModelSection, train_smiles: Sequence[str], seed: int):
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    assert spec.path is not None  # validated by ModelSpec
    kwargs = {"trust_remote_code": spec.trust_remote_code}
    tokenizer = AutoTokenizer.from_pretrained(spec.path, **kwargs)
    tokenizer.model_max_length = min(tokenizer.model_max_length, spec.max_length)
    config = AutoConfig.from_pretrained(spec.path, **kwargs)
    if hasattr(config, "deterministic_eval"):
        # MoLFormer's linear attention redraws its random features per forward unless told not to in
        # eval: valid/test and MC-dropout would then carry attention noise. Set before the model is built.
        config.deterministic_eval = True
    return AutoModel.from_pretrained(spec.path, config=config, **kwargs), tokenizer


BACKBONES.register("tiny-bert", Backbone(_tiny_bert),
                   help="2-layer BERT (hidden 64), random init, vocab from train SMILES; or model.path = a saved one")
BACKBONES.register("rxnfp-bert", Backbone(_rxnfp_bert), help="rxnfp MLM-pretrained BERT (12 layers, hidden 256), from PyPI wheel")
BACKBONES.register("hf", Backbone(_hf), help="any Hugging Face encoder: model.path = hub id or directory")

# The seq2seq models (retrosynthesis), imported on first use; trainables.retro.models registers them.
for _name, _help in (
    ("tiny-bart", "seq2seq: 2+2-layer BART (d_model 128, no dropout), random init (tests, smoke runs)"),
    ("chemformer-small", "seq2seq: BART shaped like Chemformer small (d_model 512, 6+6 layers, 8 heads, FFN 2048, "
                         "GELU); from scratch, or model.path = a Chemformer (molbart) .ckpt (vocabulary file beside "
                         "it) or a transformers dir / hub id"),
    ("rxnfp-bert2bert", "seq2seq: encoder-decoder warm-started from the rxnfp BERT on both sides (cross-attention new)"),
    ("hf-seq2seq", "seq2seq: any Hugging Face seq2seq model: model.path = hub id or directory"),
):
    BACKBONES.register_lazy(_name, "trainables.retro.models", help=_help)
del _name, _help
