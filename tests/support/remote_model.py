"""A tiny model folder that carries its own modelling code, shaped like MoLFormer-XL's hub folder.

``build_remote_model(folder)`` writes what ``ibm/MoLFormer-XL-both-10pct`` holds: a config.json with
``auto_map`` (a custom ``PretrainedConfig`` and ``PreTrainedModel`` in ``modeling_tinymol.py``), a regex
SMILES tokenizer in ``tokenization_tinymol.py`` (``auto_map`` in tokenizer_config.json) and weights. The
layer names follow MoLFormer's (BERT-like ``attention.self.query/key/value``, ``intermediate.dense``,
``output.dense``), its config has ``deterministic_eval``, and PEFT has no mapping for its model type, so
chemtune's own target search is what LoRA and (IA)^3 rely on. Only ``trust_remote_code`` loads it.
"""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from collections.abc import Sequence
from pathlib import Path

__all__ = ["build_remote_model", "MODEL_TYPE"]

MODEL_TYPE = "tinymol"

MODELING = '''
import math

import torch
from torch import nn
from transformers import PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import BaseModelOutput


class TinyMolConfig(PretrainedConfig):
    model_type = "tinymol"

    def __init__(self, vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                 intermediate_size=64, max_position_embeddings=130, hidden_dropout_prob=0.1,
                 deterministic_eval=False, pad_token_id=0, **kwargs):
        super().__init__(pad_token_id=pad_token_id, **kwargs)
        self.vocab_size, self.hidden_size = vocab_size, hidden_size
        self.num_hidden_layers, self.num_attention_heads = num_hidden_layers, num_attention_heads
        self.intermediate_size, self.max_position_embeddings = intermediate_size, max_position_embeddings
        self.hidden_dropout_prob, self.deterministic_eval = hidden_dropout_prob, deterministic_eval


class TinyMolSelfAttention(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.heads, self.size = config.num_attention_heads, config.hidden_size // config.num_attention_heads
        self.query = nn.Linear(config.hidden_size, config.hidden_size)
        self.key = nn.Linear(config.hidden_size, config.hidden_size)
        self.value = nn.Linear(config.hidden_size, config.hidden_size)

    def forward(self, hidden, mask):
        b, t, _ = hidden.shape
        split = lambda x: x.view(b, t, self.heads, self.size).transpose(1, 2)  # noqa: E731
        q, k, v = split(self.query(hidden)), split(self.key(hidden)), split(self.value(hidden))
        scores = q @ k.transpose(-1, -2) / math.sqrt(self.size)
        scores = scores.masked_fill(mask[:, None, None, :] == 0, torch.finfo(scores.dtype).min)
        return (scores.softmax(-1) @ v).transpose(1, 2).reshape(b, t, -1)


class TinyMolAttention(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.self = TinyMolSelfAttention(config)
        self.output = nn.Module()
        self.output.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.norm = nn.LayerNorm(config.hidden_size)

    def forward(self, hidden, mask):
        return self.norm(hidden + self.output.dense(self.self(hidden, mask)))


class TinyMolLayer(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.attention = TinyMolAttention(config)
        self.intermediate = nn.Module()
        self.intermediate.dense = nn.Linear(config.hidden_size, config.intermediate_size)
        self.output = nn.Module()
        self.output.dense = nn.Linear(config.intermediate_size, config.hidden_size)
        self.norm = nn.LayerNorm(config.hidden_size)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, hidden, mask):
        hidden = self.attention(hidden, mask)
        inner = torch.nn.functional.gelu(self.intermediate.dense(hidden))
        return self.norm(hidden + self.dropout(self.output.dense(inner)))


class TinyMolModel(PreTrainedModel):
    config_class = TinyMolConfig
    base_model_prefix = "tinymol"

    def __init__(self, config):
        super().__init__(config)
        self.word_embeddings = nn.Embedding(config.vocab_size, config.hidden_size, padding_idx=config.pad_token_id)
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        self.encoder = nn.Module()
        self.encoder.layer = nn.ModuleList(TinyMolLayer(config) for _ in range(config.num_hidden_layers))
        self.post_init()

    def _init_weights(self, module):
        if isinstance(module, (nn.Linear, nn.Embedding)):
            module.weight.data.normal_(0.0, 0.05)
        if isinstance(module, nn.Linear) and module.bias is not None:
            module.bias.data.zero_()

    def get_input_embeddings(self):
        return self.word_embeddings

    def set_input_embeddings(self, value):
        self.word_embeddings = value

    def forward(self, input_ids=None, attention_mask=None, **kwargs):
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        hidden = self.word_embeddings(input_ids) + self.position_embeddings(positions)[None]
        for layer in self.encoder.layer:
            hidden = layer(hidden, attention_mask)
        return BaseModelOutput(last_hidden_state=hidden)
'''

TOKENIZATION = r'''
import json
import os
import re

from transformers import PreTrainedTokenizer

PATTERN = r"(\[[^\]]+]|Br?|Cl?|N|O|S|P|F|I|b|c|n|o|s|p|\(|\)|\.|=|#|-|\+|\\|\/|:|~|@|\?|>|\*|\$|\%[0-9]{2}|[0-9])"


class TinyMolTokenizer(PreTrainedTokenizer):
    """MoLFormer-style regex SMILES tokenizer: <bos> tokens <eos>."""

    vocab_files_names = {"vocab_file": "vocab.json"}
    model_input_names = ["input_ids", "attention_mask"]

    def __init__(self, vocab_file, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>", unk_token="<unk>",
                 **kwargs):
        with open(vocab_file, encoding="utf-8") as f:
            self.vocab = json.load(f)
        self.ids_to_tokens = {i: t for t, i in self.vocab.items()}
        self.regex = re.compile(PATTERN)
        super().__init__(bos_token=bos_token, eos_token=eos_token, pad_token=pad_token, unk_token=unk_token,
                         **kwargs)

    @property
    def vocab_size(self):
        return len(self.vocab)

    def get_vocab(self):
        return dict(self.vocab)

    def _tokenize(self, text, **kwargs):
        return self.regex.findall(text)

    def _convert_token_to_id(self, token):
        return self.vocab.get(token, self.vocab[self.unk_token])

    def _convert_id_to_token(self, index):
        return self.ids_to_tokens.get(index, self.unk_token)

    def convert_tokens_to_string(self, tokens):
        return "".join(tokens)

    def build_inputs_with_special_tokens(self, token_ids_0, token_ids_1=None):
        return [self.bos_token_id] + token_ids_0 + [self.eos_token_id]

    def get_special_tokens_mask(self, token_ids_0, token_ids_1=None, already_has_special_tokens=False):
        return [1] + [0] * len(token_ids_0) + [1]

    def save_vocabulary(self, save_directory, filename_prefix=None):
        path = os.path.join(save_directory, (filename_prefix + "-" if filename_prefix else "") + "vocab.json")
        with open(path, "w", encoding="utf-8") as f:
            json.dump(self.vocab, f)
        return (path,)
'''

SPECIALS = ("<pad>", "<unk>", "<bos>", "<eos>")


def _import(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # custom_object_save finds the source file through the module
    spec.loader.exec_module(module)
    return module


def build_remote_model(folder: Path, smiles: Sequence[str], seed: int = 0) -> Path:
    """Write the model folder (vocabulary from ``smiles``' regex tokens) and return it."""
    import torch

    src = folder.parent / f"{folder.name}-src"
    src.mkdir(parents=True, exist_ok=True)
    (src / "modeling_tinymol.py").write_text(MODELING)
    (src / "tokenization_tinymol.py").write_text(TOKENIZATION)
    modeling = _import(src / "modeling_tinymol.py", "modeling_tinymol")
    tokenization = _import(src / "tokenization_tinymol.py", "tokenization_tinymol")
    tokens = sorted({t for s in smiles for t in re.findall(tokenization.PATTERN, s)})
    vocab = {t: i for i, t in enumerate([*SPECIALS, *tokens])}
    (src / "vocab.json").write_text(json.dumps(vocab))
    tokenizer = tokenization.TinyMolTokenizer(str(src / "vocab.json"), model_max_length=128)
    torch.manual_seed(seed)
    model = modeling.TinyMolModel(modeling.TinyMolConfig(vocab_size=len(vocab), pad_token_id=vocab["<pad>"]))
    # what a hub author does: the classes register for the Auto* API, save_pretrained writes auto_map + the code
    modeling.TinyMolConfig.register_for_auto_class()
    modeling.TinyMolModel.register_for_auto_class("AutoModel")
    tokenization.TinyMolTokenizer.register_for_auto_class("AutoTokenizer")
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    for name in ("modeling_tinymol", "tokenization_tinymol"):  # only the folder's own copy may serve later
        sys.modules.pop(name, None)
    return folder
