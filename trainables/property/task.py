"""Property regression: fine-tune a SMILES encoder with a regression head (full, BitFit, LoRA, IA3).

``train_property`` is the plain function core (no Ray needed); the study runner wraps it for Ray Tune.
"""

from __future__ import annotations

import copy
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch
from accelerate.utils import set_seed
from torch.utils.data import DataLoader

from trainables.base import TASKS, Prepared, Reporter, Task
from trainables.batching import length_grouped_loader, pad_batch, padded_batches
from trainables.data.chem import murcko_scaffold
from trainables.data.datasets import DATASETS
from trainables.data.report import DataReport
from trainables.data.splits import split_hash, split_indices
from trainables.data.tables import MoleculeTable, read_property_csv
from trainables.errors import DataError
from trainables.loop import EpochLoop
from trainables.methods import apply_method, count_parameters, export_backbone
from trainables.models.backbones import load_backbone
from trainables.models.regression import HeadConfig, RegressionModel
from trainables.property.augment import augmented_rows, save_tta, tta_predict
from trainables.property.data import METRICS, PropertyData, regression_metrics
from trainables.property.features import HeadFeaturizer
from trainables.property.knobs import DEFAULTS, LM_EXTRA_DEFAULTS, ArchKnobs, LMExtraKnobs, PropertyKnobs
from trainables.property.serving import PropertyPyfunc, load_saved_model, save_property_model
from trainables.schedules import lr_scheduler
from trainables.selection.base import SELECTORS, SelectionContext, Selector, check_selection, selection_summary
from trainables.selection.common import embed_ids

if TYPE_CHECKING:
    from trainables.spec import StudySchema, TrialSpec

__all__ = [
    "PropertyData", "PropertyKnobs", "LMExtraKnobs", "ArchKnobs", "PropertyTrainer", "prepare_property",
    "train_property", "regression_metrics",
]

def _empty_table() -> MoleculeTable:
    return MoleculeTable([], np.zeros(0), [], [])


def _exclude_held_out(pool: MoleculeTable, report: DataReport, valid: MoleculeTable, test: MoleculeTable,
                      split: str) -> MoleculeTable:
    """The pool less its molecules in valid or test and, under a scaffold split, less those whose Bemis-Murcko
    scaffold is a valid or test scaffold (the split keeps scaffolds apart; a pool must not carry them back into
    training). Each excluded row is counted in ``report`` with its line number."""
    held = set(valid.smiles) | set(test.smiles)
    scaffolds = {murcko_scaffold(s) for s in valid.smiles + test.smiles} if split == "scaffold" else set()
    keep = []
    for i, smiles in enumerate(pool.smiles):
        if smiles in held:
            report.add("in valid or test", pool.rows[i], smiles)
        elif scaffolds and (scaffold := murcko_scaffold(smiles)) in scaffolds:
            report.add("scaffold in valid or test", pool.rows[i], f"{smiles} (scaffold {scaffold or '(acyclic)'})")
        else:
            keep.append(i)
    return pool.subset(keep)


def prepare_property(spec: "StudySchema") -> Prepared:
    """Load, validate and split the study's molecules; raise before any trial on bad data."""
    ds = spec.dataset
    table, report = DATASETS.get(ds.name).load(ds)
    report.check(ds.max_bad_fraction)
    if ds.limit:
        table = table.subset(range(min(ds.limit, len(table))))
    parts = split_indices(table.smiles, ds.split, ds.fractions, ds.seed)
    splits = {name: table.subset(idx) for name, idx in parts.items()}
    reports = [report]
    if spec.pool is not None:
        pool, pool_report = read_property_csv(spec.pool.path, spec.pool.smiles_column, spec.pool.target_column)
        pool_report.check(ds.max_bad_fraction)
        splits["pool"] = _exclude_held_out(pool, pool_report, splits["valid"], splits["test"], ds.split)
        reports.append(pool_report)
    data = PropertyData(
        train=splits["train"], valid=splits["valid"], test=splits["test"], pool=splits.get("pool", _empty_table())
    )
    check_selection(spec, len(data.pool))  # top_k vs pool size etc., before any trial
    tags = {f"split_hash.{name}": split_hash(t.smiles, t.targets) for name, t in vars(data).items() if len(t)}
    summary = {f"n_{name}": len(t) for name, t in vars(data).items()}
    summary.update(selection_summary(spec, data.train.smiles))  # e.g. n_influence_target
    return Prepared(payload=data, reports=reports, tags=tags, summary=summary)


class PropertyTrainer(EpochLoop):
    """One configuration: model, candidate rows, selector; the epoch loop is :class:`EpochLoop`'s.

    Args:
        config: Hyperparameters (:class:`PropertyKnobs` and the method's and selector's knobs).
        data: The prepared splits.
        spec: The trial's view of the study (model, epochs, seed, metric).
    """

    def __init__(self, config: dict[str, Any], data: PropertyData, spec: "TrialSpec") -> None:
        self.config = {**DEFAULTS, **LM_EXTRA_DEFAULTS, **config}
        self.spec, self.data = spec, data
        self.seed = spec.seed
        self.epoch = 0  # 1-based epoch being trained (0: phase-1 training of a selector)
        # the typed knobs (validated, defaults filled in); methods and selectors read their own from config
        self.knobs, self.lm = PropertyKnobs.from_config(self.config), LMExtraKnobs.from_config(self.config)
        set_seed(self.seed)
        backbone, self.tokenizer = load_backbone(spec.model, data.train.smiles, self.seed)
        backbone = apply_method(self.knobs.method, backbone, self.config)
        y = data.train.targets
        # a hybrid head's features: normalized on train; a label computed from descriptors keeps them out
        self.featurizer = None if self.lm.head_features == "none" else HeadFeaturizer.fit(
            self.lm.head_features, data.train.smiles, DATASETS.get(spec.dataset.name).label_descriptors)
        head = HeadConfig(
            hidden_size=backbone.config.hidden_size,
            head_dropout=self.knobs.head_dropout,
            head_hidden=self.lm.head_hidden,
            pooling=self.lm.pooling,
            target_mean=float(y.mean()),
            target_std=float(y.std()) or 1.0,
            n_features=self.featurizer.size if self.featurizer else 0,
        )
        self.model = RegressionModel(backbone, head)
        self.n_trainable, self.n_total = count_parameters(self.model)
        self.setup_accelerator()
        # Candidate rows: train first, then pool; selectors index into this.
        self.candidates = MoleculeTable(
            data.train.smiles + data.pool.smiles,
            np.concatenate([data.train.targets, data.pool.targets]),
            data.train.ids + data.pool.ids,
            data.train.rows + data.pool.rows,
        )
        self.n_train = len(data.train)
        tables = {"candidates": self.candidates, "valid": data.valid, "test": data.test}
        self.ids = {name: self.encode(t.smiles) for name, t in tables.items()}
        # feature rows aligned with self.ids (training batches carry theirs); the model's table serves id-only calls
        self.feats = {name: self.featurize(t.smiles) for name, t in tables.items()}
        for name, rows in self.feats.items():
            if rows is not None:
                self.model.features.add(self.ids[name], rows)
        self.selector: Selector = SELECTORS.get(self.knobs.selection)(self.config)
        self._rows = np.arange(self.n_train)

    # -- data -----------------------------------------------------------------------------------
    def encode(self, smiles: list[str]) -> list[list[int]]:
        """Token ids (with special tokens), truncated to the model's maximum length."""
        if not smiles:
            return []
        return self.tokenizer(list(smiles), truncation=True, max_length=self.tokenizer.model_max_length)["input_ids"]

    def featurize(self, smiles: list[str]) -> np.ndarray | None:
        """A hybrid head's normalized feature rows of ``smiles`` (None for a plain head)."""
        return self.featurizer(smiles) if self.featurizer is not None else None

    def _collate(self, batch: list[tuple[list[int], float, np.ndarray | None]]) -> dict[str, torch.Tensor]:
        ids, mask = pad_batch([b[0] for b in batch], self.tokenizer.pad_token_id)
        out = {"input_ids": ids, "attention_mask": mask, "labels": torch.tensor([b[1] for b in batch], dtype=torch.float32)}
        if batch[0][2] is not None:  # a hybrid head: the molecular features travel with the batch
            out["features"] = torch.as_tensor(np.stack([b[2] for b in batch]), dtype=torch.float32)
        return out

    def rows_loader(self, rows: np.ndarray, epoch: int) -> DataLoader:
        """Length-grouped, dynamically padded batches of candidate ``rows`` (standardized labels)."""
        ids = self.ids["candidates"]
        z = self.unwrapped().standardize(self.candidates.targets)
        feats = self.feats["candidates"]
        items = [(ids[i], float(z[i]), None if feats is None else feats[i]) for i in rows]
        copies = self.lm.augment_copies
        if copies:  # fresh randomized SMILES of the epoch's rows, same (standardized) labels and features
            extra, labels = augmented_rows([self.candidates.smiles[i] for i in rows], z[rows], copies,
                                           self.seed * 1000 + epoch)
            extra_feats = self.featurize(extra)
            items += [(x, float(y), None if extra_feats is None else extra_feats[j])
                      for j, (x, y) in enumerate(zip(self.encode(extra), labels))]
        return length_grouped_loader(items, [len(x[0]) for x in items], self.knobs.batch_size,
                                     self._collate, self.seed * 1000 + epoch)

    def train_loader(self, epoch: int) -> DataLoader:
        self._rows = self.selector.indices(epoch)
        return self.rows_loader(self._rows, epoch)

    def epoch_rows(self) -> list[int]:
        # each row brings augment_copies randomized SMILES along: the schedule counts them too
        return [n * (1 + self.lm.augment_copies) for n in self.selector.epoch_sizes(self.spec.max_epochs)]

    @torch.no_grad()
    def predict_ids(self, ids: list[list[int]], features: np.ndarray | None = None, batch_size: int = 128) -> np.ndarray:
        """Predictions (in label units) for token-id sequences, dropout off; a hybrid head's ``features``
        rows (aligned with ``ids``) or, when None, those registered for the ids."""
        model = self.unwrapped()  # no DDP collectives: ranks may predict alone
        model.eval()
        out = np.empty(len(ids), dtype=np.float64)
        for chunk, input_ids, mask in padded_batches(ids, self.tokenizer.pad_token_id, batch_size, self.device):
            rows = None if features is None else torch.as_tensor(features[chunk]).to(self.device)
            with self.accelerator.autocast():
                z = model(input_ids, mask, rows)
            out[chunk] = model.unstandardize(z.float().cpu().numpy())
        return out

    @torch.no_grad()
    def embed_ids(self, ids: list[list[int]], batch_size: int = 128) -> torch.Tensor:
        """Pooled embeddings [N, H] (float32, CPU) of the current model, dropout off."""
        return embed_ids(self.unwrapped(), ids, self.tokenizer.pad_token_id, self.device, batch_size)

    def evaluate(self, split: str) -> tuple[dict[str, float], np.ndarray]:
        """Metrics and predictions on ``valid`` or ``test`` (the mean over ``tta`` SMILES when it is > 1)."""
        k = self.lm.tta
        if k > 1:
            pred = tta_predict(lambda s: self.predict_ids(self.encode(s), self.featurize(s)),
                               getattr(self.data, split).smiles, k, self.seed)
        else:
            pred = self.predict_ids(self.ids[split])
        return regression_metrics(getattr(self.data, split).targets, pred), pred

    def evaluate_valid(self, ckpt: Path) -> dict[str, float]:
        metrics, pred = self.evaluate("valid")
        self._write_predictions(ckpt / "valid_predictions.csv", self.data.valid, pred)
        return metrics

    def evaluate_test(self, ckpt: Path) -> dict[str, float]:
        metrics, pred = self.evaluate("test")
        self._write_predictions(ckpt / "test_predictions.csv", self.data.test, pred)
        return metrics

    # -- training -------------------------------------------------------------------------------
    def train_step(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, int]:
        pred = self.model(batch["input_ids"], batch["attention_mask"], batch.get("features"))
        return torch.nn.functional.mse_loss(pred.float(), batch["labels"]), len(batch["labels"])

    def make_optimizer(self) -> torch.optim.Optimizer:
        lr = self.knobs.lr
        named = [(n, p) for n, p in self.unwrapped().named_parameters() if p.requires_grad]
        # The freshly initialised head may want a larger step than the pretrained encoder.
        groups = [{"params": [p for n, p in named if not n.startswith("head.")], "lr": lr},
                  {"params": [p for n, p in named if n.startswith("head.")], "lr": lr * self.lm.head_lr_mult}]
        groups = [g for g in groups if g["params"]]
        if self.knobs.optimizer == "adam":  # the property report's runs: plain Adam, no weight decay
            return torch.optim.Adam(groups, lr=lr)
        return torch.optim.AdamW(groups, lr=lr, weight_decay=self.knobs.weight_decay)

    def make_scheduler(self, optimizer: torch.optim.Optimizer, total_steps: int) -> Any:
        return lr_scheduler(self.knobs.schedule, optimizer, total_steps=total_steps, warmup=self.knobs.warmup_ratio)

    def phase1(self, epochs: int, rows: np.ndarray | None = None) -> torch.nn.Module:
        """A copy of this trial's model trained ``epochs`` epochs on candidate ``rows`` (default: the train rows;
        influence phase 1, which holds its target rows out).

        Trains the trial's own (placed, prepared) model through the same loop, returns a copy and puts
        the initial weights back, so phase 3 starts from the same weights as a ``none`` trial.
        """
        initial = copy.deepcopy(self.unwrapped().state_dict())
        optimizer = self.make_optimizer()
        rows = np.arange(self.n_train) if rows is None else np.asarray(rows, dtype=np.int64)
        scheduler = self.make_scheduler(optimizer, max(self.schedule_steps([len(rows)] * epochs), 2))
        for epoch in range(epochs):
            self.train_epoch(self.rows_loader(rows, 10_000 + epoch), optimizer, scheduler)
        trained = self.copy_model().eval()
        self.unwrapped().load_state_dict(initial)
        return trained

    def selection_context(self) -> SelectionContext:
        """What a selector may see of this trial (read-only; no optimizer, no loader)."""
        return SelectionContext(
            candidates=self.candidates, n_train=self.n_train, ids=MappingProxyType(self.ids),
            valid=self.data.valid, pad_id=self.tokenizer.pad_token_id, max_epochs=self.spec.max_epochs,
            seed=self.seed, device=self.device, config=MappingProxyType(self.config),
            options=MappingProxyType(dict(self.spec.options)), model=self.unwrapped, predict=self.predict_ids,
            embed=self.embed_ids, phase1=self.phase1, split=self.spec.dataset.split, load_model=load_saved_model,
        )

    def before_training(self, reporter: Reporter, state: dict[str, Any]) -> None:
        self.selector.setup(self.selection_context(), reporter, state.get("selector"))

    def epoch_log(self, epoch: int) -> dict[str, Any]:
        return {"n_train_rows": len(self._rows), "trainable_params": self.n_trainable, "total_params": self.n_total,
                **self.selector.log()}

    def throughput(self, units: int, seconds: float) -> dict[str, float]:
        return {"samples_per_s": units / max(seconds, 1e-9)}

    def extra_state(self) -> dict[str, Any]:
        return {"selector": self.selector.state_dict()}

    def write_artifacts(self, ckpt: Path) -> None:
        self.selector.write_artifacts(ckpt, self.selection_context())

    # -- checkpoints and export -----------------------------------------------------------------
    @staticmethod
    def _write_predictions(path: Path, table: MoleculeTable, pred: np.ndarray) -> None:
        pd.DataFrame({"id": table.ids, "smiles": table.smiles, "target": table.targets, "prediction": pred}).to_csv(
            path, index=False
        )

    def export(self, path: Path) -> None:
        """A self-contained serving directory: merged backbone, tokenizer, head weights and config."""
        model = self.unwrapped()
        save_property_model(
            path, export_backbone(model.backbone), self.tokenizer, model.head, model.config,
            trust_remote_code=self.spec.model.trust_remote_code, featurizer=self.featurizer,
        )
        save_tta(path, self.lm.tta, self.seed)


def train_property(config: dict[str, Any], data: PropertyData, spec: "TrialSpec", reporter: Reporter) -> dict[str, float]:
    """Train and evaluate one configuration; the plain function core of the ``property`` task."""
    if config.get("arch", "lm") == "dmpnn":  # chemprop's D-MPNN instead of a language model
        from trainables.property.dmpnn import train_dmpnn

        return train_dmpnn(config, data, spec, reporter)
    return PropertyTrainer(config, data, spec).fit(reporter)


OPTIONS = {"base_model_uri": "phase-1 model of influence selection: a saved property model (MLflow URI or directory)"}


def _validate(spec: "StudySchema") -> None:
    unknown = sorted(set(spec.options) - set(OPTIONS))
    if unknown:
        raise ValueError(f"unknown property task option(s) {unknown}; the task takes {sorted(OPTIONS)}")
    if spec.pool is not None and not Path(spec.pool.path).is_file():
        raise DataError(f"{spec.pool.path}: pool file not found (pool.path)")
    check_selection(spec)


def _pyfunc() -> Any:
    return PropertyPyfunc()


TASKS.register(
    "property",
    Task(
        data_kind="molecules", metrics=METRICS, maximize=frozenset({"r2"}),
        prepare=prepare_property, train=train_property, validate=_validate, pyfunc=_pyfunc,
    ),
    help="molecular property regression (encoder + regression head)",
)
