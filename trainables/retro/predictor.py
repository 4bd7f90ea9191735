"""Beam search over batches of products, and the saved retro model directory with its predictor."""

from __future__ import annotations

import json
from collections.abc import Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import nn
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

from trainables.batching import model_device, padded_batches
from trainables.retro import chemformer as _chemformer  # noqa: F401  (registers model_type "chemformer")
from trainables.retro.data import canonical_set
from trainables.serving import row_errors

__all__ = ["generate", "save_retro_model", "RetroPredictor"]


def _decode(tokenizer: Any, ids: torch.Tensor) -> list[str]:
    # SMILES have no spaces; word-level SMILES tokenizers decode with spaces between tokens.
    return [s.replace(" ", "") for s in tokenizer.batch_decode(ids, skip_special_tokens=True)]


@torch.no_grad()
def generate(model: nn.Module, tokenizer: Any, inputs: Sequence[Sequence[int]], num_beams: int = 10,
             top_k: int = 10, batch_size: int = 64, max_length: int = 256, sort: bool = True,
             autocast: Any = None, device: torch.device | str | None = None) -> list[list[str]]:
    """Beam search (greedy when ``num_beams`` is 1) on token-id inputs, batched and length-sorted.

    Args:
        model: Anything with a transformers ``generate`` (a :class:`Seq2SeqModel` included).
        tokenizer: Decodes the outputs.
        inputs: Encoded products (with special tokens).
        num_beams: Beam width.
        top_k: Sequences returned per product (at most ``num_beams``).
        batch_size: Products per ``generate`` call (beams multiply the work).
        max_length: Longest output in tokens.
        sort: Batch products of similar length together (less padding); results keep input order.
        autocast: A context manager factory for mixed precision (``accelerator.autocast``).
        device: Where the inputs go (default: the model's parameters' device).

    Returns:
        Per product, the decoded sequences, best first.
    """
    model.eval()
    top_k = min(top_k, num_beams)
    out: list[list[str]] = [[] for _ in inputs]
    batches = padded_batches(inputs, tokenizer.pad_token_id, batch_size, device or model_device(model), sort=sort)
    for chunk, ids, mask in batches:
        with autocast() if autocast else nullcontext():
            seqs = model.generate(
                input_ids=ids, attention_mask=mask, num_beams=num_beams,
                num_return_sequences=top_k, max_length=max_length, do_sample=False,
                early_stopping=True if num_beams > 1 else False,
            )
        texts = _decode(tokenizer, seqs)
        for j, i in enumerate(chunk):
            out[i] = texts[j * top_k : (j + 1) * top_k]
    return out


def save_retro_model(path: Path, model: nn.Module, tokenizer: Any, adapters: nn.Module | None,
                     num_beams: int = 10) -> None:
    """Write a serving directory: the transformers model and tokenizer, adapters and ``retro.json``."""
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    meta = {"adapters": adapters.spec() if adapters is not None else None, "num_beams": num_beams}
    if adapters is not None:
        torch.save(adapters.state_dict(), path / "adapters.pt")
    (path / "retro.json").write_text(json.dumps(meta, indent=2))


class RetroPredictor:
    """Predicts reactants for products with a saved retro model directory."""

    def __init__(self, model: nn.Module, tokenizer: Any, num_beams: int = 10) -> None:
        self.model, self.tokenizer, self.num_beams = model.eval(), tokenizer, num_beams

    @classmethod
    def load(cls, path: str | Path) -> "RetroPredictor":
        from trainables.retro.adapters import Seq2SeqModel

        path = Path(path)
        meta = json.loads((path / "retro.json").read_text())
        wrapped = Seq2SeqModel(AutoModelForSeq2SeqLM.from_pretrained(path))
        if meta["adapters"]:
            spec = meta["adapters"]
            wrapped.add_adapters(set(spec["where"]), spec["dim"], spec.get("kind", "bottleneck"))
            wrapped.adapters.load_state_dict(torch.load(path / "adapters.pt", map_location="cpu"))
        return cls(wrapped, AutoTokenizer.from_pretrained(path), meta["num_beams"])

    def predict(self, products: Sequence[str], num_beams: int | None = None, top_k: int = 10,
                batch_size: int = 64) -> pd.DataFrame:
        """Columns ``product, canonical_product, prediction_1..k, error``; invalid products get a reason.

        Args:
            products: Product SMILES.
            num_beams: Beam width (default: the width the model was evaluated with).
            top_k: Predictions returned per product.
            batch_size: Products per batch.
        """
        beams = num_beams or self.num_beams
        top_k = min(top_k, beams)
        canonical = [canonical_set(p) for p in products]
        ok = [i for i, c in enumerate(canonical) if c is not None]
        preds: list[list[str]] = [[""] * top_k for _ in products]
        if ok:
            ids = self.tokenizer([canonical[i] for i in ok], truncation=True,
                                 max_length=self.tokenizer.model_max_length)["input_ids"]
            outs = generate(self.model, self.tokenizer, ids, beams, top_k, batch_size,
                            max_length=self.tokenizer.model_max_length)
            for i, out in zip(ok, outs):
                preds[i] = list(out) + [""] * (top_k - len(out))
        frame = pd.DataFrame({"product": list(products), "canonical_product": canonical})
        for k in range(top_k):
            frame[f"prediction_{k + 1}"] = [p[k] for p in preds]
        frame["error"] = row_errors(canonical)
        return frame
