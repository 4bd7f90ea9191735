"""Top-k exact match of canonical reactant sets, share of invalid SMILES, duplicate beams."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from trainables.retro.data import canonical_set

__all__ = ["TOPK", "Scored", "score_topk", "rank_beams"]

TOPK = (1, 3, 5, 10)


@dataclass
class Scored:
    """Scores of a set of beam-search predictions.

    Attributes:
        metrics: ``top{k}`` for each k, ``invalid`` (share of invalid top-1 predictions) and
            ``invalid_beams`` (share of invalid predictions over all returned beams).
        ranks: Per product, the 1-based rank of the first correct beam (0 when none is correct).
        beams: Per product, the canonical beams after deduplication (``None`` for an invalid one).
    """

    metrics: dict[str, float]
    ranks: np.ndarray
    beams: list[list[str | None]]


def rank_beams(beams: Sequence[str], dedupe: bool = False) -> list[str | None]:
    """Canonicalize beams in order; with ``dedupe`` a beam equal to an earlier valid one is dropped.

    Invalid beams keep their place (they are wrong answers that occupy a rank).
    """
    out: list[str | None] = []
    seen: set[str] = set()
    for beam in beams:
        can = canonical_set(beam)
        if can is not None and dedupe:
            if can in seen:
                continue
            seen.add(can)
        out.append(can)
    return out


def score_topk(predictions: Sequence[Sequence[str]], targets: Sequence[str], ks: Sequence[int] = TOPK,
               dedupe: bool = False) -> Scored:
    """Top-k accuracy of beam predictions against reactant sets.

    Args:
        predictions: Per product, the beams in the model's order (best first).
        targets: Per product, the true reactants (any SMILES; canonicalized here).
        ks: The k of the reported ``top{k}`` metrics.
        dedupe: Drop beams that canonicalize to an earlier beam's molecule set before ranking
            (off by default: Chemformer does not deduplicate, and deduplication raises top-3/5).

    Returns:
        A :class:`Scored` with the metrics, the rank of the first hit and the ranked beams.
    """
    if len(predictions) != len(targets):
        raise ValueError(f"{len(predictions)} predictions for {len(targets)} targets")
    ranks = np.zeros(len(targets), dtype=np.int64)
    ranked, n_beams, n_invalid_beams, n_invalid_top1 = [], 0, 0, 0
    for i, (beams, target) in enumerate(zip(predictions, targets)):
        truth = canonical_set(target)
        can = rank_beams(beams, dedupe)
        ranked.append(can)
        n_beams += len(beams)
        n_invalid_beams += sum(canonical_set(b) is None for b in beams)
        n_invalid_top1 += not can or can[0] is None
        for r, c in enumerate(can, start=1):
            if c is not None and c == truth:
                ranks[i] = r
                break
    n = max(len(targets), 1)
    metrics = {f"top{k}": float(np.sum((ranks > 0) & (ranks <= k)) / n) for k in ks}
    metrics["invalid"] = n_invalid_top1 / n
    metrics["invalid_beams"] = n_invalid_beams / max(n_beams, 1)
    return Scored(metrics, ranks, ranked)
