"""The one way data reaches a model: length-sorted, dynamically padded batches, placed on the model's device.

Every forward of every task goes through here: training (:func:`length_grouped_loader` + :func:`to_device`),
evaluation, influence phase 1 and scoring, MC-dropout passes, beam search and serving
(:func:`padded_batches`). Keeping placement in one function is what makes a trial correct on a GPU:
a batch built on the CPU and handed to a model that Accelerate moved to the GPU fails there, and on a
CPU-only machine nothing shows it (``tests/trainables/test_devices.py`` tracks the moves instead).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, TypeVar

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader
from transformers.trainer_pt_utils import LengthGroupedSampler

__all__ = ["pad_batch", "seq2seq_batch", "to_device", "model_device", "sorted_chunks", "padded_batches", "length_grouped_loader",
           "placed", "steps_per_epoch"]

T = TypeVar("T")


def pad_batch(sequences: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Dynamic padding (right): pad to the longest sequence of this batch only. Returns ``(ids, mask)``."""
    # One vectorised fill (row-major order = the concatenation's order), not a tensor copy per row: it runs on
    # every training step, in the loop's critical path.
    lengths = np.fromiter((len(s) for s in sequences), dtype=np.int64, count=len(sequences))
    keep = np.arange(int(lengths.max())) < lengths[:, None]
    ids = np.full(keep.shape, pad_id, dtype=np.int64)
    ids[keep] = np.fromiter((t for s in sequences for t in s), dtype=np.int64, count=int(lengths.sum()))
    return torch.from_numpy(ids), torch.from_numpy(keep.astype(np.int64))


def seq2seq_batch(pairs: Sequence[tuple[Sequence[int], Sequence[int]]], pad_id: int, start_id: int
                  ) -> dict[str, torch.Tensor]:
    """``(source ids, label ids)`` pairs as one seq2seq batch: dynamic padding; the decoder input is the
    labels shifted right behind the start token; padded label positions are -100 (ignored by the loss)."""
    input_ids, attention_mask = pad_batch([p[0] for p in pairs], pad_id)
    decoder_input_ids, decoder_attention_mask = pad_batch([[start_id, *p[1][:-1]] for p in pairs], pad_id)
    labels, label_mask = pad_batch([p[1] for p in pairs], pad_id)
    labels = labels.masked_fill(label_mask == 0, -100)
    return {"input_ids": input_ids, "attention_mask": attention_mask, "decoder_input_ids": decoder_input_ids,
            "decoder_attention_mask": decoder_attention_mask, "labels": labels}


def to_device(obj: T, device: torch.device | str) -> T:
    """``obj`` (a tensor, or a dict/list/tuple of them) on ``device``; other values pass through."""
    if isinstance(obj, torch.Tensor):
        return obj.to(device, non_blocking=True)  # type: ignore[return-value]
    if isinstance(obj, Mapping):
        return type(obj)({k: to_device(v, device) for k, v in obj.items()})  # type: ignore[call-arg]
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_device(v, device) for v in obj)  # type: ignore[return-value]
    return obj


def model_device(model: nn.Module) -> torch.device:
    """Where ``model``'s parameters live (the device its inputs must be on)."""
    return next(model.parameters()).device


def placed(batches: Iterable[T], device: torch.device | str) -> Iterator[T]:
    """``batches`` moved to ``device`` one at a time (a training loader's batches)."""
    for batch in batches:
        yield to_device(batch, device)


def sorted_chunks(lengths: Sequence[int], batch_size: int) -> Iterator[np.ndarray]:
    """Index chunks of at most ``batch_size``, in order of length (stable): less padding per batch."""
    order = np.argsort(np.asarray(lengths), kind="stable")
    for start in range(0, len(order), batch_size):
        yield order[start : start + batch_size]


def padded_batches(sequences: Sequence[Sequence[int]], pad_id: int, batch_size: int, device: torch.device | str,
                   sort: bool = True) -> Iterator[tuple[np.ndarray, torch.Tensor, torch.Tensor]]:
    """``(indices, ids, mask)`` over ``sequences``: length-sorted chunks, padded, on ``device``.

    ``indices`` say which input rows a batch holds, so callers scatter results back in input order.
    """
    chunks = (sorted_chunks([len(s) for s in sequences], batch_size) if sort
              else (np.arange(s, min(s + batch_size, len(sequences))) for s in range(0, len(sequences), batch_size)))
    for chunk in chunks:
        ids, mask = pad_batch([sequences[i] for i in chunk], pad_id)
        yield chunk, to_device(ids, device), to_device(mask, device)


def length_grouped_loader(items: Sequence[Any], lengths: Sequence[int], batch_size: int,
                          collate: Callable[[list[Any]], dict[str, torch.Tensor]], seed: int) -> DataLoader:
    """Shuffled, length-grouped training batches (CPU); the epoch loop places them (:func:`placed`).

    ``LengthGroupedSampler`` groups items of similar length within random mega-batches, so batches
    are shuffled every epoch (``seed``) yet padded little.
    """
    generator = torch.Generator().manual_seed(seed)
    sampler = LengthGroupedSampler(batch_size, lengths=list(lengths), generator=generator)
    return DataLoader(items, batch_size=batch_size, sampler=sampler, collate_fn=collate)


def steps_per_epoch(rows: int, batch_size: int, grad_accum: int = 1) -> int:
    """Optimizer steps one epoch over ``rows`` takes (what a learning-rate schedule counts)."""
    return max(1, -(-(-(-rows // batch_size)) // grad_accum))
