"""What the CPU table benchmarks share (``paper_property_cpu.py``, ``lipo_quality_cpu.py``): a figure over seeds
as one cell, and the end of a run (the tables printed, the wall times, the tables written to ``--out``)."""

from __future__ import annotations

import statistics
from pathlib import Path

__all__ = ["finish", "mean_std"]


def mean_std(values: list[float]) -> str:
    """``mean ± std`` over the seeds (sample std), the bare mean for one seed, empty for none."""
    if not values:
        return ""
    mean = statistics.fmean(values)
    return f"{mean:.3f} ± {statistics.stdev(values):.3f}" if len(values) > 1 else f"{mean:.3f}"


def finish(text: str, walls: dict[str, float], out: Path | None) -> None:
    """Print the tables and each study's wall time (seconds, shown in minutes); write the tables to ``out``."""
    print(text)
    if walls:
        print("wall time (min): " + ", ".join(f"{k} {v / 60:.1f}" for k, v in walls.items()))
    if out:
        out.write_text(text)
