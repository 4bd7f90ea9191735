"""Model FLOPs utilization of one training step (GPU only): counted FLOPs / step time / the GPU's peak.

The peak is the dense bf16 tensor-core figure of the GPU's datasheet (``CHEMTUNE_PEAK_TFLOPS`` overrides it);
FLOPs are counted by ``torch.utils.flop_counter`` on one forward + backward of a real batch.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

import torch

__all__ = ["peak_tflops", "step_mfu"]

_PEAK_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L4": 121.0, "A10": 125.0, "L40": 181.0}


def peak_tflops() -> float | None:
    """Dense bf16 peak of this GPU in TFLOP/s, or ``None`` (no GPU, or a GPU not in the table)."""
    if os.environ.get("CHEMTUNE_PEAK_TFLOPS"):
        return float(os.environ["CHEMTUNE_PEAK_TFLOPS"])
    if not torch.cuda.is_available():
        return None
    name = torch.cuda.get_device_name()
    return next((v for k, v in _PEAK_BF16_TFLOPS.items() if k in name), None)


def step_mfu(step: Callable[[], None], repeats: int = 5) -> tuple[float, float, float | None]:
    """``(TFLOP per step, seconds per step, MFU)`` of ``step`` (forward + backward + optimizer step)."""
    from torch.utils.flop_counter import FlopCounterMode

    step()  # warm-up (kernels, allocator)
    counter = FlopCounterMode(display=False)
    with counter:
        step()
    flops = counter.get_total_flops()
    torch.cuda.synchronize()
    tic = time.perf_counter()
    for _ in range(repeats):
        step()
    torch.cuda.synchronize()
    seconds = (time.perf_counter() - tic) / repeats
    peak = peak_tflops()
    return flops / 1e12, seconds, (flops / seconds / (peak * 1e12)) if peak else None
