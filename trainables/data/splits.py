"""Seeded random and Bemis-Murcko scaffold splits into train / valid / test (/ pool)."""

from __future__ import annotations

import hashlib
from collections import defaultdict

import numpy as np

from trainables.data.chem import murcko_scaffold
from trainables.errors import DataError
from trainables.registry import Registry

__all__ = ["SPLITTERS", "split_indices", "split_hash"]

SPLITTERS: Registry = Registry("split")
_ORDER = ("train", "valid", "test", "pool")


def _sizes(n: int, fractions: dict[str, float]) -> dict[str, int]:
    sizes = {k: int(round(fractions.get(k, 0.0) * n)) for k in _ORDER[1:]}
    sizes["train"] = n - sum(sizes.values())
    return sizes


@SPLITTERS.register("random", help="seeded random permutation")
def random_split(smiles: list[str], fractions: dict[str, float], seed: int) -> dict[str, np.ndarray]:
    n = len(smiles)
    order = np.random.default_rng(seed).permutation(n)
    sizes, out, start = _sizes(n, fractions), {}, 0
    for name in ("valid", "test", "pool", "train"):
        out[name] = np.sort(order[start : start + sizes[name]])
        start += sizes[name]
    return out


@SPLITTERS.register("scaffold", help="Bemis-Murcko scaffold groups never straddle two splits")
def scaffold_split(smiles: list[str], fractions: dict[str, float], seed: int) -> dict[str, np.ndarray]:
    # Balanced scaffold split (as in chemprop): groups larger than half a held-out split go to
    # train first so they cannot swamp valid/test; the rest are shuffled with the seed.
    groups: dict[str, list[int]] = defaultdict(list)
    for i, s in enumerate(smiles):
        groups[murcko_scaffold(s)].append(i)
    sizes = _sizes(len(smiles), fractions)
    held_out = [k for k in ("valid", "test", "pool") if sizes[k] > 0]
    half = min((sizes[k] for k in held_out), default=len(smiles)) / 2
    sets = list(groups.values())
    big = [g for g in sets if len(g) > half]
    small = [g for g in sets if len(g) <= half]
    rng = np.random.default_rng(seed)
    rng.shuffle(big)
    rng.shuffle(small)
    out: dict[str, list[int]] = {k: [] for k in _ORDER}
    for group in big + small:
        for name in held_out:
            if len(out[name]) + len(group) <= sizes[name]:
                out[name].extend(group)
                break
        else:
            out["train"].extend(group)
    return {k: np.sort(np.asarray(v, dtype=np.int64)) for k, v in out.items()}


def split_indices(smiles: list[str], method: str, fractions: dict[str, float], seed: int) -> dict[str, np.ndarray]:
    """Split row indices; every non-empty requested split must end up non-empty."""
    parts = SPLITTERS.get(method)(smiles, fractions, seed)
    for name in _ORDER:
        if (name == "train" or fractions.get(name, 0.0) > 0) and len(parts[name]) == 0:
            raise DataError(
                f"{method} split of {len(smiles)} molecules left {name!r} empty; "
                "use more data or larger fractions"
            )
    return parts


def split_hash(smiles: list[str], targets: np.ndarray) -> str:
    """Content hash of a split (order-independent): equal hashes mean identical data."""
    digest = hashlib.sha256()
    for s, y in sorted(zip(smiles, targets.tolist())):
        digest.update(f"{s}\t{y:.6g}\n".encode())
    return digest.hexdigest()[:16]
