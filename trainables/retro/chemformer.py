"""Chemformer (molbart) checkpoints as a transformers seq2seq model.

molbart's ``BARTModel`` is a PyTorch Lightning module: a shared token embedding ``emb`` scaled by
``sqrt(d_model)``, a sinusoidal ``pos_emb`` buffer (sin and cos interleaved), pre-norm
``nn.TransformerEncoder``/``nn.TransformerDecoder`` stacks with a final ``norm``, and an untied output
projection ``token_fc`` with bias; its vocabulary is a separate file (one token a line, ``<PAD> ? ^ &
<MASK> <SEP>`` first). transformers' mBART has the same pre-norm layers; :class:`ChemformerForConditionalGeneration`
is mBART with the differences made exact: no embedding LayerNorm, a fixed sinusoidal position table
(a buffer, never trained), an untied output projection whose bias trains. It saves and loads like any
transformers model (``model_type: chemformer``; importing this module registers it with the Auto classes),
so beam search, PEFT and serving work unchanged.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import (
    AutoConfig,
    AutoModelForSeq2SeqLM,
    MBartConfig,
    MBartForConditionalGeneration,
    PreTrainedTokenizerFast,
)

from trainables.errors import StudyError
from trainables.models.tokenizer import smiles_tokenizer

__all__ = [
    "ChemformerConfig", "ChemformerForConditionalGeneration", "MOLBART_SPECIALS", "sinusoidal_table",
    "convert_molbart_checkpoint", "molbart_state_dict", "load_molbart_vocab", "find_vocab", "is_molbart_checkpoint",
]

# molbart's MolEncTokeniser defaults.
MOLBART_SPECIALS = {"pad": "<PAD>", "unk": "?", "bos": "^", "eos": "&", "mask": "<MASK>"}
_VOCAB_NAMES = ("bart_vocab.txt", "bart_vocab_downstream.txt", "vocab.txt", "bart_vocab.json")


class ChemformerConfig(MBartConfig):
    model_type = "chemformer"


def sinusoidal_table(max_len: int, d_model: int) -> torch.Tensor:
    """molbart's ``_positional_embs``: ``[sin(p/w_0), cos(p/w_0), sin(p/w_1), ...]`` with ``w_i = 10000^(2i/d)``."""
    rates = 10000 ** torch.tensor([dim / d_model for dim in range(0, d_model, 2)])  # float32, as molbart
    pos = torch.arange(max_len, dtype=torch.float32)[:, None]
    return torch.stack([torch.sin(pos / rates), torch.cos(pos / rates)], dim=2).flatten(1)[:, :d_model]


class _SinusoidalPositions(nn.Module):
    """The fixed table as a buffer (saved with the model, never trained), called like mBART's learned positions."""

    def __init__(self, max_len: int, d_model: int) -> None:
        super().__init__()
        self.register_buffer("table", sinusoidal_table(max_len, d_model))

    def forward(self, input_ids: torch.Tensor, past_key_values_length: int = 0,
                position_ids: torch.Tensor | None = None) -> torch.Tensor:
        if position_ids is None:
            bsz, seq_len = input_ids.shape[:2]
            position_ids = torch.arange(past_key_values_length, past_key_values_length + seq_len,
                                        device=self.table.device).expand(bsz, -1)
        else:
            position_ids = position_ids.unsqueeze(0)
        return self.table[position_ids]


class ChemformerForConditionalGeneration(MBartForConditionalGeneration):
    """mBART made to compute exactly what molbart's ``BARTModel`` computes (see the module docstring)."""

    config_class = ChemformerConfig
    # ``tie_word_embeddings`` ties the encoder's and decoder's embeddings to ``shared`` (molbart's one
    # ``emb``); the output projection stays its own matrix (molbart's ``token_fc``).
    _tied_weights_keys = None

    def __init__(self, config: ChemformerConfig) -> None:
        super().__init__(config)
        for stack in (self.model.encoder, self.model.decoder):
            stack.layernorm_embedding = nn.Identity()
            stack.embed_positions = _SinusoidalPositions(config.max_position_embeddings, config.d_model)
        bias = self.final_logits_bias.detach().clone()
        del self.final_logits_bias
        self.final_logits_bias = nn.Parameter(bias)  # token_fc.bias trains in molbart


AutoConfig.register("chemformer", ChemformerConfig)
AutoModelForSeq2SeqLM.register(ChemformerConfig, ChemformerForConditionalGeneration)


def load_molbart_vocab(path: str | Path, max_length: int) -> PreTrainedTokenizerFast:
    """A fast tokenizer over molbart's vocabulary file (text: one token a line; JSON: a list or token -> id)."""
    path = Path(path)
    if path.suffix == ".json":
        data = json.loads(path.read_text())
        data = data.get("vocabulary", data) if isinstance(data, dict) else data
        vocab = dict(data) if isinstance(data, dict) else {tok: i for i, tok in enumerate(data)}
    else:
        vocab = {tok: i for i, tok in enumerate(path.read_text().splitlines()) if tok}
    missing = [t for t in MOLBART_SPECIALS.values() if t not in vocab]
    if missing:
        raise StudyError(f"{path}: not a molbart vocabulary, it lacks the special tokens {missing}")
    return smiles_tokenizer(vocab, MOLBART_SPECIALS, max_length)


def find_vocab(ckpt: Path) -> Path:
    """The vocabulary beside a checkpoint: ``<stem>.vocab.txt`` or one of molbart's file names."""
    for candidate in (ckpt.with_suffix(".vocab.txt"), *(ckpt.parent / n for n in _VOCAB_NAMES)):
        if candidate.is_file():
            return candidate
    names = ", ".join((ckpt.with_suffix(".vocab.txt").name, *_VOCAB_NAMES))
    raise StudyError(f"model.path {ckpt}: no molbart vocabulary beside the checkpoint (looked for {names})")


def _hparams(ckpt: dict[str, Any], state: dict[str, torch.Tensor]) -> dict[str, Any]:
    hp = dict(ckpt.get("hyper_parameters") or {})
    n_layers = 1 + max(int(k.split(".")[2]) for k in state if k.startswith("encoder.layers."))
    vocab, d_model = state["emb.weight"].shape
    heads = hp.get("num_heads")
    if heads is None:
        raise StudyError("Chemformer checkpoint: hyper_parameters.num_heads is missing (heads cannot be read off weights)")
    return {
        "vocab_size": vocab, "d_model": d_model, "layers": hp.get("num_layers", n_layers), "heads": int(heads),
        "ffn": state["encoder.layers.0.linear1.weight"].shape[0], "max_len": state["pos_emb"].shape[0]
        if "pos_emb" in state else int(hp["max_seq_len"]), "activation": hp.get("activation", "gelu"),
        "dropout": float(hp.get("dropout", 0.1)), "pad": int(hp.get("pad_token_idx", 0)),
    }


# molbart layer key -> mBART layer key (attention in_proj is split separately).
_ENC = {"self_attn.out_proj": "self_attn.out_proj", "linear1": "fc1", "linear2": "fc2",
        "norm1": "self_attn_layer_norm", "norm2": "final_layer_norm"}
_DEC = {"self_attn.out_proj": "self_attn.out_proj", "multihead_attn.out_proj": "encoder_attn.out_proj",
        "linear1": "fc1", "linear2": "fc2", "norm1": "self_attn_layer_norm", "norm2": "encoder_attn_layer_norm",
        "norm3": "final_layer_norm"}
_ATTN = {"self_attn": "self_attn", "multihead_attn": "encoder_attn"}


def _key_map(n_layers: int) -> dict[str, str]:
    """molbart key -> transformers key for every tensor except the packed in_proj."""
    out = {"emb.weight": "model.shared.weight", "token_fc.weight": "lm_head.weight",
           "token_fc.bias": "final_logits_bias", "encoder.norm.weight": "model.encoder.layer_norm.weight",
           "encoder.norm.bias": "model.encoder.layer_norm.bias", "decoder.norm.weight": "model.decoder.layer_norm.weight",
           "decoder.norm.bias": "model.decoder.layer_norm.bias"}
    for stack, table in (("encoder", _ENC), ("decoder", _DEC)):
        for i in range(n_layers):
            for src, dst in table.items():
                for leaf in ("weight", "bias"):
                    out[f"{stack}.layers.{i}.{src}.{leaf}"] = f"model.{stack}.layers.{i}.{dst}.{leaf}"
    return out


def convert_molbart_checkpoint(path: str | Path, max_length: int = 512,
                               vocab: str | Path | None = None) -> tuple[ChemformerForConditionalGeneration, PreTrainedTokenizerFast]:
    """Read a molbart Lightning ``.ckpt`` and its vocabulary into a transformers model and tokenizer.

    Every tensor of the checkpoint must be used and every parameter of the model filled; anything
    else is an error naming the keys (a checkpoint of another architecture is refused, not half-loaded).
    """
    path = Path(path)
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    state = ckpt.get("state_dict", ckpt) if isinstance(ckpt, dict) else None
    if not isinstance(state, dict) or "emb.weight" not in state or "token_fc.weight" not in state:
        raise StudyError(f"model.path {path}: not a molbart checkpoint (no state_dict with emb.weight and token_fc.weight)")
    hp = _hparams(ckpt, state)
    if hp["activation"] != "gelu":
        raise StudyError(f"model.path {path}: activation {hp['activation']!r} is not supported (gelu only)")
    tokenizer = load_molbart_vocab(vocab or find_vocab(path), min(max_length, hp["max_len"]))
    if len(tokenizer) != hp["vocab_size"]:
        raise StudyError(f"model.path {path}: the vocabulary has {len(tokenizer)} tokens, the checkpoint {hp['vocab_size']}")
    config = ChemformerConfig(
        vocab_size=hp["vocab_size"], d_model=hp["d_model"], encoder_layers=hp["layers"], decoder_layers=hp["layers"],
        encoder_attention_heads=hp["heads"], decoder_attention_heads=hp["heads"], encoder_ffn_dim=hp["ffn"],
        decoder_ffn_dim=hp["ffn"], activation_function="gelu", max_position_embeddings=hp["max_len"],
        dropout=hp["dropout"], attention_dropout=hp["dropout"], activation_dropout=hp["dropout"],
        scale_embedding=True, tie_word_embeddings=True, pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        decoder_start_token_id=tokenizer.bos_token_id, forced_bos_token_id=None, forced_eos_token_id=None,
    )
    model = ChemformerForConditionalGeneration(config)
    new: dict[str, torch.Tensor] = {}
    used = {"pos_emb"}
    table = state["pos_emb"].float() if "pos_emb" in state else sinusoidal_table(hp["max_len"], hp["d_model"])
    new["model.encoder.embed_positions.table"] = new["model.decoder.embed_positions.table"] = table
    for src, dst in _key_map(hp["layers"]).items():
        if src in state:
            new[dst] = state[src].reshape(1, -1) if dst == "final_logits_bias" else state[src]
            used.add(src)
    for stack in ("encoder", "decoder"):
        for i in range(hp["layers"]):
            for src, dst in _ATTN.items():
                if stack == "encoder" and src == "multihead_attn":
                    continue
                prefix = f"{stack}.layers.{i}.{src}"
                for leaf in ("weight", "bias"):
                    packed = state.get(f"{prefix}.in_proj_{leaf}")
                    if packed is None:
                        continue
                    used.add(f"{prefix}.in_proj_{leaf}")
                    for part, chunk in zip(("q_proj", "k_proj", "v_proj"), packed.chunk(3, dim=0)):
                        new[f"model.{stack}.layers.{i}.{dst}.{part}.{leaf}"] = chunk
    new["model.encoder.embed_tokens.weight"] = new["model.decoder.embed_tokens.weight"] = new["model.shared.weight"]
    unused = sorted(set(state) - used)
    if unused:
        raise StudyError(f"model.path {path}: checkpoint keys not in molbart's BARTModel layout: {unused[:8]}")
    missing = sorted(set(model.state_dict()) - set(new))
    if missing:
        raise StudyError(f"model.path {path}: the checkpoint lacks {missing[:8]}")
    model.load_state_dict(new, strict=True)
    if not torch.allclose(table, sinusoidal_table(hp["max_len"], hp["d_model"]), atol=1e-4):
        raise StudyError(f"model.path {path}: pos_emb is not molbart's sinusoidal table")
    for cfg in (model.config, model.generation_config):
        cfg.decoder_start_token_id, cfg.eos_token_id, cfg.pad_token_id = (
            tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id)
    model.generation_config.forced_bos_token_id = None
    model.generation_config.forced_eos_token_id = None
    return model, tokenizer


def molbart_state_dict(model: ChemformerForConditionalGeneration) -> dict[str, torch.Tensor]:
    """The inverse of the conversion: the model's weights in molbart's key layout (``pos_emb`` included)."""
    state = model.state_dict()
    n_layers = model.config.encoder_layers
    out = {src: state[dst].reshape(-1) if dst == "final_logits_bias" else state[dst]
           for src, dst in _key_map(n_layers).items()}
    for stack in ("encoder", "decoder"):
        for i in range(n_layers):
            for src, dst in _ATTN.items():
                if stack == "encoder" and src == "multihead_attn":
                    continue
                for leaf in ("weight", "bias"):
                    parts = [state[f"model.{stack}.layers.{i}.{dst}.{p}.{leaf}"] for p in ("q_proj", "k_proj", "v_proj")]
                    out[f"{stack}.layers.{i}.{src}.in_proj_{leaf}"] = torch.cat(parts, dim=0)
    out["pos_emb"] = state["model.encoder.embed_positions.table"]
    return out


def is_molbart_checkpoint(path: str | Path | None) -> bool:
    return bool(path) and Path(str(path)).suffix == ".ckpt"

