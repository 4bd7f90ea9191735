"""Every learning-rate schedule of every task works for any number of steps, one included.

A OneCycleLR whose warm-up rounded to zero steps raised ZeroDivisionError in a small retro trial
(300 reactions, 2 epochs); these sweep the tiny counts where such rounding bites.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from studies.spec import parse_study
from trainables import NullReporter
from trainables.property.knobs import LMExtraKnobs, PropertyKnobs
from trainables.property.task import PropertyTrainer
from trainables.retro.knobs import RetroKnobs
from trainables.retro.task import RetroTrainer, prepare_retro, train_retro
from trainables.schedules import SCHEDULES, lr_scheduler

STEPS = [1, 2, 3, 4, 5, 7, 10, 11, 19]
WARMUPS = [0.0, 0.01, 0.1, 0.5, 0.9]


def _optimizer(lr: float = 1e-3) -> torch.optim.Optimizer:
    weight = torch.nn.Parameter(torch.zeros(2))
    head = torch.nn.Parameter(torch.zeros(1))
    return torch.optim.Adam([{"params": [weight], "lr": lr}, {"params": [head], "lr": 10 * lr}])


def _run(scheduler: object, optimizer: torch.optim.Optimizer, steps: int) -> list[list[float]]:
    seen = []
    for _ in range(steps):
        optimizer.step()
        scheduler.step()
        seen.append([g["lr"] for g in optimizer.param_groups])
    return seen


@pytest.mark.parametrize("name", SCHEDULES)
@pytest.mark.parametrize("steps", STEPS)
@pytest.mark.parametrize("warmup", WARMUPS)
def test_schedule_runs_every_step_with_finite_rates_at_most_the_peak(name: str, steps: int, warmup: float) -> None:
    optimizer = _optimizer()
    seen = _run(lr_scheduler(name, optimizer, total_steps=steps, warmup=warmup, cycles=2), optimizer, steps)
    assert len(seen) == steps
    for head, body in [(s[1], s[0]) for s in seen]:
        assert 0 <= body <= 1e-3 * (1 + 1e-9) and 0 <= head <= 1e-2 * (1 + 1e-9)  # each group keeps its own peak


def test_constant_is_constant_and_cyclic_rises_and_falls() -> None:
    optimizer = _optimizer()
    assert {s[0] for s in _run(lr_scheduler("constant", optimizer, total_steps=6, warmup=0.1), optimizer, 6)} == {1e-3}
    optimizer = _optimizer()
    body = [s[0] for s in _run(lr_scheduler("cyclic", optimizer, total_steps=40, warmup=0.0, cycles=2), optimizer, 40)]
    assert max(body) == pytest.approx(1e-3) and min(body) == pytest.approx(1e-4)
    peaks = [i for i in range(1, 39) if body[i - 1] < body[i] > body[i + 1]]
    assert len(peaks) >= 2  # two triangles, not one ramp


def test_unknown_schedule_names_the_choices() -> None:
    with pytest.raises(ValueError, match="one_cycle"):
        lr_scheduler("cosine", _optimizer(), total_steps=3, warmup=0.1)


@pytest.mark.parametrize(("trainer", "config"), [
    (PropertyTrainer, {"schedule": "linear", "warmup_ratio": 0.06}),
    (PropertyTrainer, {"schedule": "constant", "warmup_ratio": 0.06}),
    (RetroTrainer, {"schedule": "one_cycle", "warmup": 0.1}),
    (RetroTrainer, {"schedule": "cyclic", "warmup": 0.1, "lr_cycles": 4}),
])
@pytest.mark.parametrize("steps", [1, 2, 3, 10])
def test_each_tasks_make_scheduler_follows_its_schedule_knob(trainer: type, config: dict, steps: int) -> None:
    optimizer = _optimizer()
    knobs = (PropertyKnobs if trainer is PropertyTrainer else RetroKnobs).from_config(config)
    scheduler = trainer.make_scheduler(SimpleNamespace(config=config, knobs=knobs), optimizer, steps)
    assert len(_run(scheduler, optimizer, steps)) == steps
    kind = {"linear": torch.optim.lr_scheduler.LambdaLR, "constant": torch.optim.lr_scheduler.LambdaLR,
            "one_cycle": torch.optim.lr_scheduler.OneCycleLR, "cyclic": torch.optim.lr_scheduler.CyclicLR}
    assert isinstance(scheduler, kind[config["schedule"]])


def test_property_adam_knob_gives_plain_adam() -> None:
    model = SimpleNamespace(named_parameters=lambda: [("enc.w", torch.nn.Parameter(torch.zeros(1))),
                                                      ("head.w", torch.nn.Parameter(torch.zeros(1)))])
    config = {"lr": 1e-4, "head_lr_mult": 1.0, "weight_decay": 0.01, "optimizer": "adam"}
    me = SimpleNamespace(config=config, knobs=PropertyKnobs.from_config(config), lm=LMExtraKnobs.from_config(config),
                         unwrapped=lambda: model)
    optimizer = PropertyTrainer.make_optimizer(me)
    assert type(optimizer) is torch.optim.Adam and optimizer.param_groups[0]["weight_decay"] == 0


def test_small_retro_trial_trains_with_a_warmup_that_rounds_to_zero_steps(shared_data: Path, tmp_path: Path) -> None:
    """The reported crash: few reactions, 2 epochs, the default 10% warm-up = 0 whole steps."""
    lines = [ln for ln in (shared_data / "uspto50k" / "train.smi").read_text().splitlines() if len(ln) < 60][:90]
    for split, rows in (("train", lines[:80]), ("valid", lines[80:85]), ("test", lines[85:90])):
        (tmp_path / f"{split}.smi").write_text("\n".join(rows) + "\n")
    spec = parse_study({
        "name": "tiny-steps", "task": "retro", "dataset": {"name": "uspto50k", "path": str(tmp_path)},
        "model": {"name": "tiny-bart", "max_length": 64}, "search_space": "retro",
        "fixed": {"gamma": 0, "treatment": "full"}, "max_epochs": 2, "metric": "valid_top1", "seed": 0,
        "options": {"val_subset": 5, "beam_size": 10, "eval_batch_size": 8},
    })
    prepared = prepare_retro(spec)
    reporter = NullReporter(keep_dir=tmp_path / "ckpt")
    final = train_retro({"lr": 1e-3, "batch_size": 16, "treatment": "full", "warmup": 0.1}, prepared.payload, spec,
                        reporter)  # 5 steps an epoch, 10 in all: OneCycleLR's warm-up phase was 10 * 0.1 - 1 = 0 steps long
    assert len(reporter.history) == 2 and 0 <= final["test_top1"] <= 1
