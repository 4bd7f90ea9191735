"""Model FLOPs utilization of one training step (GPU only): counted FLOPs / step time / the GPU's peak.

The peak is the dense bf16 tensor-core figure of the GPU's datasheet (``CHEMTUNE_PEAK_TFLOPS`` overrides it);
FLOPs are counted by ``torch.utils.flop_counter`` on one forward + backward of a real batch.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

import torch

__all__ = ["peak_tflops", "step_mfu", "train_step_mfu"]

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


def train_step_mfu(trainer, optimizer, batch: dict[str, torch.Tensor], label: str) -> None:  # noqa: ANN001
    """Print the FLOPs, time and MFU of one optimizer step of a chemtune trainer (property or retro) on ``batch``
    (already on the trainer's device): forward under the accelerator's autocast, backward, step."""

    def step() -> None:
        with trainer.accelerator.autocast():
            loss, _ = trainer.train_step(batch)
        trainer.accelerator.backward(loss)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    tflop, seconds, mfu = step_mfu(step)
    print(f"{label}: {tflop:.3f} TFLOP in {seconds * 1000:.1f} ms = {tflop / seconds:.1f} TFLOP/s, "
          f"MFU {'n/a (unknown GPU peak)' if mfu is None else f'{mfu:.1%}'}")
