"""Shared suite: no tensor reaches a model without being placed on the model's device (a GPU bug, caught on CPU).

On a CPU-only machine every tensor is on the one device, so a batch built on the CPU and handed to a model
that Accelerate moved to the GPU goes unnoticed until the first CUDA step. What differs on a GPU is whether
a tensor was *moved*, so this suite tracks the moves: while it runs, ``Tensor.to(device)``/``.cpu()`` mark
their result (a tensor subclass that ops propagate), and every outermost model call (and ``generate``)
checks that each tensor input carries the mark and sits on the model's device. Tensors a model builds
inside itself are not inputs and are not checked; inputs inside ``torch.func`` transforms are checked for
their device only (the transform's wrapper hides the mark; their placement happened before it).

Each registered task trains and evaluates a trial (beam search included), each registered selector runs a
tiny selection trial (influence phase 1 and scoring, MC dropout, curriculum), and the saved models serve.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import torch
import torch._C._functorch as functorch
from torch import nn
from torch.utils._pytree import tree_flatten, tree_map
from transformers.generation.utils import GenerationMixin

from search_spaces import SPACES
from studies.spec import parse_study
from tests.conftest import TINY_STUDIES, tiny_selection_study
from trainables import TASKS, NullReporter
from trainables.selection.base import SELECTORS


class _Placed(torch.Tensor):
    """A tensor that went through an explicit device move (ops on it keep the mark)."""

    def __deepcopy__(self, memo: dict[int, Any]) -> torch.Tensor:
        return self.as_subclass(torch.Tensor).clone().as_subclass(_Placed)


@dataclass
class _Tracker:
    depth: int = 0
    generating: int = 0
    moving_module: int = 0
    calls: int = 0
    bad: list[str] = field(default_factory=list)

    def check(self, where: str, module: Any, args: Any, kwargs: Any) -> None:
        params = next(module.parameters(), None) if isinstance(module, nn.Module) else None
        device = params.device if params is not None else None
        self.calls += 1
        for value in tree_flatten((args, kwargs))[0]:
            if not isinstance(value, torch.Tensor):
                continue
            if device is not None and value.device != device:
                self.bad.append(f"{where}: input on {value.device}, model on {device}")
            wrapped = functorch.is_functorch_wrapped_tensor(value)
            if not wrapped and not isinstance(value, _Placed):
                self.bad.append(f"{where}: a {tuple(value.shape)} input never moved to the model's device")


def _plain(tree: Any) -> Any:
    return tree_map(lambda v: v.as_subclass(torch.Tensor) if isinstance(v, _Placed) else v, tree)


def _has_device(args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
    if kwargs.get("device") is not None:
        return True
    return any(isinstance(a, (str, torch.device, torch.Tensor)) for a in args)


@pytest.fixture
def placement(monkeypatch: pytest.MonkeyPatch) -> Iterator[_Tracker]:
    tracker = _Tracker()
    to, cpu = torch.Tensor.to, torch.Tensor.cpu
    call, generate, apply = nn.Module.__call__, GenerationMixin.generate, nn.Module._apply

    def mark(out: torch.Tensor) -> torch.Tensor:
        return out if isinstance(out, _Placed) or tracker.moving_module else out.as_subclass(_Placed)

    def placed_to(self: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        out = to(self, *args, **kwargs)
        return mark(out) if _has_device(args, kwargs) else out

    def placed_cpu(self: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        return mark(cpu(self, *args, **kwargs))

    def module_apply(self: nn.Module, *args: Any, **kwargs: Any) -> Any:
        tracker.moving_module += 1  # a module's own weights are not inputs: leave them plain
        try:
            return apply(self, *args, **kwargs)
        finally:
            tracker.moving_module -= 1

    def checked_call(self: nn.Module, *args: Any, **kwargs: Any) -> Any:
        if tracker.depth == 0 and not tracker.generating:
            tracker.check(type(self).__name__, self, args, kwargs)
            args, kwargs = _plain((args, kwargs))  # checked: the model computes at full speed
        tracker.depth += 1
        try:
            return call(self, *args, **kwargs)
        finally:
            tracker.depth -= 1

    def checked_generate(self: Any, *args: Any, **kwargs: Any) -> Any:
        if not tracker.generating:
            tracker.check(f"{type(self).__name__}.generate", self, args, kwargs)
            args, kwargs = _plain((args, kwargs))
        tracker.generating += 1  # generate builds its decoder inputs itself
        try:
            return generate(self, *args, **kwargs)
        finally:
            tracker.generating -= 1

    monkeypatch.setattr(torch.Tensor, "to", placed_to)
    monkeypatch.setattr(torch.Tensor, "cpu", placed_cpu)
    monkeypatch.setattr(nn.Module, "__call__", checked_call)
    monkeypatch.setattr(GenerationMixin, "generate", checked_generate)
    monkeypatch.setattr(nn.Module, "_apply", module_apply)
    yield tracker


def _assert_placed(tracker: _Tracker) -> None:
    assert tracker.calls > 0, "no model call was seen: the tracker is not wired"
    assert not tracker.bad, f"{len(tracker.bad)} unplaced model input(s), e.g.:\n" + "\n".join(
        sorted(set(tracker.bad))[:8])


def test_the_tracker_sees_an_unplaced_batch(placement: _Tracker) -> None:
    model = nn.Linear(3, 1)
    model(torch.ones(2, 3).to("cpu"))
    assert not placement.bad
    model(torch.ones(2, 3))  # built on the host and never moved: the bug this suite is for
    assert len(placement.bad) == 1 and "never moved" in placement.bad[0]


def _serve(task: str, model_dir: Path) -> None:
    if task == "property":
        from trainables.property.serving import PropertyPredictor

        out = PropertyPredictor.load(model_dir).predict(["CCO", "c1ccccc1O"])
        assert out["prediction"].notna().all()
    elif task == "retro":
        from trainables.retro.predictor import RetroPredictor

        out = RetroPredictor.load(model_dir).predict(["CCOC(C)=O"], num_beams=2, top_k=2)
        assert len(out) == 1
    elif task == "pretrain":  # a registered pretrained checkpoint serves embeddings
        from trainables.pretrain.serving import PretrainedEncoder

        out = PretrainedEncoder(model_dir).predict(["CCO", "c1ccccc1O"])
        assert (out["error"] == "").all() and out["embedding"].str.startswith("[").all()
    else:
        raise AssertionError(f"add a serving path for the {task!r} task to this suite")


@pytest.mark.parametrize("task", TASKS.names())
def test_task_trial_and_serving_place_every_batch(task: str, placement: _Tracker, tmp_path: Path) -> None:
    study = dict(TINY_STUDIES[task], max_epochs=1)
    if task == "retro":
        # short outputs: an untrained decoder rarely stops, and beam search is most of the time
        study["options"] = {**study["options"], "beam_size": 10, "val_subset": 2, "test_limit": 2}
        study["model"] = {**study["model"], "max_length": 40}
    spec = parse_study(study)
    definition = TASKS.get(task)
    prepared = definition.prepare(spec)
    config = SPACES.get(spec.search_space).sample(seed=0, fixed=spec.fixed)
    definition.train(config, prepared.payload, spec, NullReporter(keep_dir=tmp_path / "ckpt"))
    _serve(task, tmp_path / "ckpt" / "model")
    _assert_placed(placement)


SELECTION_CASES = {  # study-fixed knobs per case; every registered selector but "none" has one
    "influence": {"top_k": 16, "influence_params": "head", "influence_curvature": "gauss_newton"},
    "influence-encoder": {"selection": "influence", "top_k": 16, "influence_params": "last_layers",
                          "influence_layers": 1, "influence_curvature": "gauss_newton", "method": "full"},
    "active": {"n_select": 16, "rounds": 1, "acquisition": "uncertainty", "mc_passes": 5},
    "curriculum": {},
    # hybrid heads: molecular features beside the embedding, through MC dropout and per-sample head gradients
    "active-hybrid": {"selection": "active", "n_select": 16, "rounds": 1, "acquisition": "uncertainty",
                      "mc_passes": 5, "config": {"head_features": "both"}},
    "influence-hybrid": {"selection": "influence", "top_k": 16, "influence_params": "head",
                         "influence_curvature": "gauss_newton", "config": {"head_features": "descriptors"}},
}
FAST = {"batch_size": 32, "lissa_depth": 5, "lissa_batch": 32}  # below the space's ranges: set in the config


def test_every_selector_has_a_case() -> None:
    assert set(SELECTORS.names()) - {"none"} <= set(SELECTION_CASES)


@pytest.mark.parametrize("case", SELECTION_CASES)
def test_selection_trial_places_every_batch(case: str, placement: _Tracker) -> None:
    fixed = dict(SELECTION_CASES[case])
    selection, extra = fixed.pop("selection", case), fixed.pop("config", {})  # extra: knobs outside the space
    spec = parse_study(tiny_selection_study(selection, limit=200, max_epochs=2, **fixed))
    prepared = TASKS.get("property").prepare(spec)
    config = {**SPACES.get(spec.search_space).sample(seed=0, fixed=spec.fixed), **FAST, **extra}
    final = TASKS.get("property").train(config, prepared.payload, spec, NullReporter())
    assert "test_rmse" in final
    _assert_placed(placement)
