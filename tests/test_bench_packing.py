"""The packing benchmark's studies ask the shares they claim, and its busy-share sampler measures."""

from __future__ import annotations

import argparse
import importlib.util
import time

from studies.spec import parse_study
from tests.conftest import ROOT

_spec = importlib.util.spec_from_file_location("bench_packing", ROOT / "benchmarks" / "bench_packing.py")
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)
ARGS = argparse.Namespace(limit=100, epochs=2, batch_size=16, model="tiny-bert")


def test_packed_trials_share_one_device():
    gpu = parse_study(bench.study(ARGS, 4, gpu=True, cpus=16)).resources
    assert (gpu.gpus_per_trial, gpu.cpus_per_trial, gpu.max_concurrent_trials) == (0.25, 4, 4)
    cpu = parse_study(bench.study(ARGS, 4, gpu=False, cpus=2)).resources
    assert (cpu.gpus_per_trial, cpu.cpus_per_trial, cpu.max_concurrent_trials) == (0, 0.5, 4)
    alone = parse_study(bench.study(ARGS, 1, gpu=False, cpus=2))
    assert alone.resources.cpus_per_trial == 2 and alone.num_trials == 1
    assert alone.scheduler.grace_period == alone.max_epochs == 2  # no early stop: equal work per trial
    assert alone.baselines.enabled("property") == []  # nothing but the trials on the device


def test_busy_sampler_sees_a_busy_cpu():
    with bench.BusySampler(gpu=False, every=0.05) as busy:
        end = time.perf_counter() + 0.5
        while time.perf_counter() < end:
            pass
    assert len(busy.samples) >= 3 and 0.0 < busy.mean <= 1.0
