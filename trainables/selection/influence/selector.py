"""``selection: influence``: phase-1 model, influence of every pool molecule, train on the most helpful.

See :mod:`trainables.selection.influence` for the method; the math is in :mod:`.ihvp`, the parameter
subsets in :mod:`.subsets`. The selector sees a :class:`~trainables.selection.base.SelectionContext`: phase 1
is the trial's own loop (``ctx.phase1``), never an optimizer rebuilt here.
"""

from __future__ import annotations

import copy
import hashlib
import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from trainables.batching import model_device, to_device
from trainables.cache import cache_dir
from trainables.errors import StudyError
from trainables.io import atomic_path
from trainables.selection.base import SELECTORS
from trainables.selection.common import embed_ids, write_selection_csv
from trainables.selection.influence.ihvp import (
    EXACT_MAX_PARAMS,
    _same,
    influence_scores,
    per_sample_dots,
    per_sample_dots_vmap,
)
from trainables.selection.influence.subsets import SUBSETS, FlatModule, PackedRegression, check_packed
from trainables.selection.knobs import InfluenceKnobs, influence_target

if TYPE_CHECKING:
    from trainables.base import Reporter
    from trainables.models.regression import RegressionModel
    from trainables.selection.base import SelectionContext

__all__ = ["InfluenceKnobs", "InfluenceSelector", "influence_target"]


def _content_key(tensors: list[torch.Tensor], settings: dict[str, Any]) -> str:
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode())
    for t in tensors:
        digest.update(str(tuple(t.shape)).encode())
        digest.update(t.detach().reshape(-1).contiguous().cpu().view(torch.uint8).numpy().tobytes())  # any dtype
    return digest.hexdigest()[:32]


class InfluenceSelector:
    """Phase 1 model, influence scores of the pool, then train on train + top-k (or top-k only)."""

    knobs = InfluenceKnobs
    check_study = InfluenceKnobs.check_study

    def __init__(self, config: dict[str, Any]) -> None:
        self.knobs = InfluenceKnobs.from_config(config, where="selection 'influence'")
        self.n_train = 0
        self.target = np.zeros(0, dtype=np.int64)  # candidate rows (train) the influence is taken on
        self.selected = np.zeros(0, dtype=np.int64)
        self.scores = np.zeros(0)
        self.stats: dict[str, float] = {}

    def setup(self, ctx: "SelectionContext", reporter: "Reporter", state: dict[str, Any] | None = None) -> None:
        self.n_train = ctx.n_train
        if state is not None:
            self.load_state_dict(state)
            return
        n_pool = ctx.n_pool
        if n_pool == 0:
            raise StudyError("selection 'influence': the pool is empty")
        if self.knobs.top_k > n_pool:
            raise StudyError(f"selection 'influence': top_k {self.knobs.top_k} is larger than the pool ({n_pool})")
        cand = ctx.candidates
        self.target = influence_target(cand.smiles[: ctx.n_train], self.knobs.influence_target_fraction, ctx.split,
                                       ctx.seed)
        # A pool copy of a target molecule would be "most helpful" by construction and train on the target.
        held = {cand.smiles[i] for i in self.target}
        in_target = np.asarray([s in held for s in cand.smiles[ctx.n_train :]], dtype=bool)
        if self.knobs.top_k > n_pool - in_target.sum():
            raise StudyError(f"selection 'influence': top_k {self.knobs.top_k} is larger than the pool less the "
                             f"{int(in_target.sum())} molecules in the influence target ({n_pool - int(in_target.sum())})")
        model = ctx.model()
        self._subset_names(model)  # a subset that does not apply fails now, before phase 1 trains
        if SUBSETS.get(self.knobs.influence_params).encoder and not ctx.options.get("base_model_uri"):
            check_packed(model, ctx.ids["valid"][:4], ctx.pad_id, self.knobs.influence_params)
        tic = time.perf_counter()
        model, inputs = self._phase1(ctx)
        phase1 = time.perf_counter() - tic
        scores, hit, n_params = self._scores(ctx, model, inputs)
        ranked = np.where(in_target, np.inf, scores)
        order = np.argsort(ranked, kind="stable")[: self.knobs.top_k]  # most negative: most helpful
        self.selected = (ctx.n_train + order).astype(np.int64)
        self.scores = scores[order]
        self.stats = {
            "influence_seconds": time.perf_counter() - tic, "influence_phase1_seconds": phase1,
            "influence_cache_hit": float(hit),
            "influence_top_k": float(self.knobs.top_k), "influence_pool": float(n_pool),
            "influence_target_rows": float(len(self.target)), "influence_train_rows": float(len(self.train_rows())),
            "influence_pool_in_target": float(in_target.sum()),
            "influence_params": float(n_params),
            "influence_selected_mean_score": float(self.scores.mean()),
            "influence_pool_mean_score": float(scores.mean()),
        }

    def _subset_names(self, model: "RegressionModel") -> list[str]:
        """The subset's parameter names in ``model``; checks that it applies and fits the solver."""
        subset = SUBSETS.get(self.knobs.influence_params)
        if subset.encoder and model.config.n_features:
            raise StudyError(f"influence_params {self.knobs.influence_params!r} runs the encoder on packed token ids, "
                             "which carry no molecular features: with head_features, use 'head' or 'head_out'")
        names = subset.names(model, self.knobs)
        wanted = set(names)
        size = sum(p.numel() for n, p in model.named_parameters() if n in wanted)
        if self.knobs.influence_solver == "exact" and size > EXACT_MAX_PARAMS:
            raise StudyError(
                f"influence_solver 'exact': influence_params {self.knobs.influence_params!r} has {size} parameters, "
                f"more than the {EXACT_MAX_PARAMS} an explicit Hessian allows; use 'lissa' or 'head_out'"
            )
        return names

    def train_rows(self) -> np.ndarray:
        """The train rows phase 1 and phase 3 train on: the train split less the influence target."""
        return np.setdiff1d(np.arange(self.n_train), self.target)

    def _phase1(self, ctx: "SelectionContext") -> tuple[nn.Module, dict[str, list[list[int]]]]:
        """The phase-1 model and the token ids it reads (train less target, target, pool); the trial's own
        model is left as it was."""
        uri = ctx.options.get("base_model_uri")
        cand = ctx.candidates
        train = self.train_rows()
        if uri:
            if ctx.load_model is None:
                raise StudyError("selection 'influence': task option base_model_uri is set, but this task serves no "
                                 "saved model to start from")
            predictor = ctx.load_model(uri)
            enc, encode = predictor.tokenizer, predictor.encode  # registers a hybrid head's features
            inputs = {"train": encode([cand.smiles[i] for i in train]),
                      "target": encode([cand.smiles[i] for i in self.target]),
                      "pool": encode(cand.smiles[ctx.n_train :])}
            model = predictor.model.to(ctx.device)
            if SUBSETS.get(self.knobs.influence_params).encoder:  # the loaded encoder, not the trial's
                check_packed(model, inputs["target"][:4], enc.pad_token_id, self.knobs.influence_params)
            return model, {**inputs, "pad": [[enc.pad_token_id]]}
        ids = ctx.ids["candidates"]
        inputs = {"train": [ids[i] for i in train], "target": [ids[i] for i in self.target],
                  "pool": ids[ctx.n_train :], "pad": [[ctx.pad_id]]}
        return ctx.phase1(self.knobs.influence_epochs, train), inputs

    def _scores(self, ctx: "SelectionContext", model: nn.Module,
                inputs: dict[str, Any]) -> tuple[np.ndarray, bool, int]:
        """Influence of every pool molecule (cached by content), whether the cache had it, subset size."""
        pad = inputs["pad"][0][0]
        names = self._subset_names(model)
        device = model_device(model)
        z = lambda y: torch.as_tensor(model.standardize(np.asarray(y)), dtype=torch.float32, device=device)  # noqa: E731
        cand = ctx.candidates
        targets = {"train": z(cand.targets[self.train_rows()]), "target": z(cand.targets[self.target]),
                   "pool": z(cand.targets[ctx.n_train :])}
        order = np.arange(len(inputs["pool"]))
        if SUBSETS.get(self.knobs.influence_params).encoder:
            # SDPA has no forward-mode AD (LiSSA's Hessian-vector products): score with eager attention
            if hasattr(model.backbone, "set_attn_implementation"):
                model.backbone.set_attn_implementation("eager")
            flat = FlatModule(PackedRegression(model).eval(), [f"model.{n}" for n in names])
            order = np.argsort([len(x) for x in inputs["pool"]], kind="stable")  # chunks of similar length
            feats = {k: to_device(PackedRegression.pack(inputs[k], pad), device) for k in ("train", "target")}
            feats["pool"] = to_device(PackedRegression.pack([inputs["pool"][i] for i in order], pad), device)
            targets["pool"] = targets["pool"][torch.as_tensor(order, device=device)]
            content = list(model.state_dict().values())  # the frozen weights shape the scores too
            # about one training batch of activations, and at most ~256 MB of per-sample gradients
            prepare, chunk = PackedRegression.trim, min(64, max(8, 2**26 // flat.theta.numel()))
            dots = per_sample_dots_vmap  # measured faster than forward mode through the encoder
        else:
            with torch.no_grad():
                feats = {k: embed_ids(model, inputs[k], pad, device).float().cpu() for k in ("train", "target", "pool")}
            targets = {k: t.cpu() for k, t in targets.items()}
            flat = FlatModule(copy.deepcopy(model.head).float().cpu().eval(), [n.removeprefix("head.") for n in names])
            content, prepare, chunk = [flat.theta], _same, 512  # features already hold the frozen encoder
            dots = per_sample_dots  # ~30x faster than vmap(grad) on the head (bench_selection [1])
        lissa = self.knobs.lissa(ctx.seed)
        settings: dict[str, Any] = {"subset": self.knobs.influence_params, "solver": self.knobs.influence_solver,
                                    "layers": self.knobs.influence_layers, "damping": lissa.damping,
                                    "curvature": lissa.curvature}
        if self.knobs.influence_solver == "lissa":  # LiSSA-only knobs must not split the exact solver's cache
            settings.update(vars(lissa))
        key = _content_key([flat.theta, *content, *feats.values(), *targets.values()], settings)
        path = cache_dir() / "influence" / f"{key}.npy"
        if path.is_file():
            return np.load(path), True, flat.theta.numel()
        sorted_scores = influence_scores(
            flat, flat.theta, (feats["train"], targets["train"]), (feats["target"], targets["target"]),
            (feats["pool"], targets["pool"]), solver=self.knobs.influence_solver, lissa=lissa, chunk=chunk,
            prepare=prepare, dots=dots)
        scores = np.empty_like(sorted_scores)
        scores[order] = sorted_scores
        with atomic_path(path) as tmp, open(tmp, "wb") as fh:
            np.save(fh, scores)
        return scores, False, flat.theta.numel()

    def indices(self, epoch: int) -> np.ndarray:
        if self.knobs.influence_train_on == "topk":
            return self.selected
        return np.concatenate([self.train_rows(), self.selected])

    def epoch_sizes(self, epochs: int) -> list[int]:
        return [len(self.indices(0))] * epochs

    def log(self) -> dict[str, float]:
        return dict(self.stats)

    def write_artifacts(self, path: Path, ctx: "SelectionContext") -> None:
        """``selection.csv``: the chosen pool molecules, their influence scores and ranks;
        ``influence_target.csv``: the train rows held out as the target."""
        if len(self.selected):
            write_selection_csv(path / "selection.csv", ctx, self.selected,
                                {"influence": self.scores, "rank": np.arange(1, len(self.selected) + 1)})
        if len(self.target):
            write_selection_csv(path / "influence_target.csv", ctx, self.target, {})

    def state_dict(self) -> dict[str, Any]:
        return {"n_train": self.n_train, "target": self.target.tolist(), "selected": self.selected.tolist(),
                "scores": self.scores.tolist(), "stats": self.stats}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.n_train = int(state["n_train"])
        self.target = np.asarray(state.get("target", []), dtype=np.int64)
        self.selected = np.asarray(state["selected"], dtype=np.int64)
        self.scores = np.asarray(state["scores"], dtype=np.float64)
        self.stats = dict(state["stats"])


SELECTORS.register("influence", InfluenceSelector,
                   help="influence functions (LiSSA): train + the top_k pool molecules that most lower the loss on "
                        "a target held out of train")
