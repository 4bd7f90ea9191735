"""The ``pretrain`` task: masked-language modelling for encoders, denoising for seq2seq models.

The objective follows the backbone: an encoder (``tiny-bert``, ``rxnfp-bert``, ``hf``) learns BERT's
masked-language modelling (transformers' ``DataCollatorForLanguageModeling``: 15% of tokens, 80% [MASK],
10% random, 10% kept); a seq2seq model (``tiny-bart``, ``chemformer-small``, ...) learns Chemformer's
denoising: spans of the SMILES (Poisson lengths) each become one mask token and the decoder writes the
whole SMILES back. Every epoch reports ``valid_token_acc`` (masked tokens / reconstructed tokens),
``valid_loss`` and ``valid_exact`` (molecules with every masked token right / greedy reconstruction equal
to the SMILES) on a fixed held-out share of the corpus; the end of a trial reports the same on test. The
checkpoint's ``model/`` is a transformers ``save_pretrained`` folder with its tokenizer, which a property
or retro study loads as ``model.path`` (or through ``model.pretrain``, ``studies.pretraining``).
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from accelerate.utils import set_seed
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from torch import nn
from transformers import DataCollatorForLanguageModeling, get_linear_schedule_with_warmup

from trainables.base import TASKS, Prepared, Reporter, Task
from trainables.batching import length_grouped_loader, model_device, pad_batch, seq2seq_batch, sorted_chunks, to_device
from trainables.data.chem import canonicalize
from trainables.errors import StudyError
from trainables.knobs import format_errors
from trainables.loop import EpochLoop
from trainables.models.backbones import BACKBONES, load_backbone
from trainables.pretrain.corpus import CorpusSplits, build_corpus
from trainables.pretrain.knobs import DEFAULTS, PretrainKnobs
from trainables.retro.data import randomize_smiles
from trainables.retro.models import SEQ2SEQ, decoder_start_id, load_seq2seq
from trainables.retro.predictor import generate
from trainables.spec import DatasetSpec

if TYPE_CHECKING:
    from trainables.spec import StudySpec, TrialSpec

__all__ = ["PretrainOptions", "PretrainKnobs", "MLMTrainer", "DenoisingTrainer", "prepare_pretrain",
           "train_pretrain", "objective_of", "span_mask", "masked_lm_head", "METRICS", "PRETRAIN_JSON"]

METRICS = ("token_acc", "loss", "exact")
PRETRAIN_JSON = "pretrain.json"  # in the exported folder: objective, backbone, corpus hash


class PretrainOptions(BaseModel):
    """Task options of a pretrain study (the study's ``options:`` section)."""

    model_config = ConfigDict(extra="forbid")

    draw_from: list[DatasetSpec] = Field(
        default_factory=list, description="registered datasets whose molecules join the corpus: a reaction "
        "dataset's TRAIN products and reactants, every molecule of a molecule dataset")
    exclude: list[DatasetSpec] = Field(
        default_factory=list, description="leakage guard: the datasets the checkpoint will be fine-tuned on, split "
        "as those studies split them; their valid and test molecules are removed from the corpus (and counted)")
    val_subset: int = Field(2000, ge=1, description="held-out molecules scored every epoch")
    test_limit: int | None = Field(None, ge=1, description="score only the first N test molecules (smoke runs)")
    eval_batch_size: int = Field(128, ge=1, description="molecules per evaluation batch")
    max_grad_norm: float = Field(1.0, gt=0, description="gradient clipping norm")


def parse_options(options: dict[str, Any]) -> PretrainOptions:
    """Validate a study's ``options``; errors name the key (``options.<key>``)."""
    try:
        return PretrainOptions.model_validate(options)
    except ValidationError as err:
        raise StudyError(format_errors(err, "options")) from None


def objective_of(model_name: str) -> str:
    """``"denoise"`` for a seq2seq backbone, ``"mlm"`` for an encoder."""
    return "denoise" if model_name in SEQ2SEQ else "mlm"


def prepare_pretrain(spec: "StudySpec") -> Prepared:
    """Build the corpus (canonical, deduplicated, leakage-guarded) and split off its held-out shares."""
    opts = parse_options(spec.options)
    splits, reports = build_corpus(spec.dataset, opts.draw_from, opts.exclude)
    guard = reports[-1]
    summary: dict[str, Any] = {f"n_{n}": len(getattr(splits, n)) for n in ("train", "valid", "test")}
    summary["n_duplicates"] = guard.issues.get("duplicate molecule", {}).get("count", 0)
    summary["n_leakage_removed"] = sum(e["count"] for k, e in guard.issues.items() if k.startswith("leakage guard"))
    tags = {"chemtune.corpus_hash": splits.hash, "chemtune.objective": objective_of(spec.model.name)}
    return Prepared(payload=splits, reports=reports, tags=tags, summary=summary)


def span_mask(tokens: list[int], mask_id: int, prob: float, span: float, rng: np.random.Generator) -> list[int]:
    """Chemformer's span masking: a span starts at a position with probability ``prob``; its length is
    Poisson(``span``); the whole span becomes one ``mask_id`` (a length-0 span inserts a mask)."""
    starts = rng.random(len(tokens)) < prob
    out: list[int] = []
    i = 0
    while i < len(tokens):
        if starts[i]:
            out.append(mask_id)
            length = int(rng.poisson(span))
            if length == 0:  # an inserted mask; the token itself stays
                out.append(tokens[i])
                length = 1
            i += length
        else:
            out.append(tokens[i])
            i += 1
    return out


@dataclass
class _Scores:
    """Running sums of a token-level evaluation."""

    loss: float = 0.0
    right: int = 0
    tokens: int = 0
    exact: int = 0
    rows: int = 0

    def add(self, logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mask = labels != -100
        self.loss += float(F.cross_entropy(logits.float()[mask], labels[mask], reduction="sum"))
        right = (logits.argmax(-1) == labels) & mask
        self.right += int(right.sum())
        self.tokens += int(mask.sum())
        has = mask.any(1)
        self.exact += int(((right == mask).all(1) & has).sum())
        self.rows += int(has.sum())
        return right, mask

    def metrics(self) -> dict[str, float]:
        return {"token_acc": self.right / max(self.tokens, 1), "loss": self.loss / max(self.tokens, 1),
                "exact": self.exact / max(self.rows, 1)}


class _PretrainLoop(EpochLoop):
    """What both objectives share: corpus, enumeration, schedule, token counts, export."""

    objective: str

    def __init__(self, config: dict[str, Any], data: CorpusSplits, spec: "TrialSpec") -> None:
        self.config = {**DEFAULTS, **config}
        self.knobs = PretrainKnobs.from_config(self.config)
        self.spec, self.data, self.seed = spec, data, spec.seed
        self.opts = parse_options(spec.options)
        self.max_grad_norm = self.opts.max_grad_norm
        set_seed(self.seed)
        self.model, self.tokenizer = self.load()
        self.setup_accelerator()
        self.max_length = int(self.tokenizer.model_max_length)
        self.valid = data.valid[: self.opts.val_subset]
        self.test = data.test[: self.opts.test_limit] if self.opts.test_limit else data.test
        # Tokenized once, as a Trainer's dataset is before training: epochs re-tokenize only enumerated SMILES.
        self.train_ids = self.encode(data.train)
        self._tokens = 0  # non-pad tokens the model read this epoch (the throughput figure)

    def load(self) -> tuple[nn.Module, Any]:
        raise NotImplementedError

    def encode(self, smiles: list[str]) -> list[list[int]]:
        return self.tokenizer(list(smiles), truncation=True, max_length=self.max_length)["input_ids"]

    def epoch_ids(self, epoch: int) -> list[list[int]]:
        """Token ids of ``epoch``'s train molecules: a seeded share ``enumerate_prob`` as RDKit randomized SMILES
        (tokenized now), the rest the corpus' ids tokenized once."""
        p = self.knobs.enumerate_prob
        if p <= 0:
            return self.train_ids
        rng = random.Random(self.seed * 100_003 + epoch)
        drawn = {i: randomize_smiles(s, rng) for i, s in enumerate(self.data.train) if rng.random() < p}
        ids = list(self.train_ids)
        for i, row in zip(drawn, self.encode(list(drawn.values())) if drawn else []):
            ids[i] = row
        return ids

    def epoch_rows(self) -> list[int]:
        return [len(self.data.train)] * self.spec.max_epochs

    def make_scheduler(self, optimizer: torch.optim.Optimizer, total_steps: int) -> Any:
        return get_linear_schedule_with_warmup(optimizer, int(round(self.knobs.warmup_ratio * total_steps)), total_steps)

    def logits(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return model(**{k: v for k, v in batch.items() if k != "labels"}).logits

    def train_step(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, int]:
        labels = batch["labels"]
        loss = F.cross_entropy(self.logits(self.model, batch).float().flatten(0, 1), labels.flatten(), ignore_index=-100)
        self._tokens += int(batch["attention_mask"].sum()) + int(batch.get("decoder_attention_mask", labels[:0]).sum())
        return loss, int((labels != -100).sum())

    def throughput(self, units: int, seconds: float) -> dict[str, float]:
        tokens, self._tokens = self._tokens, 0
        return {"train_tokens_per_s": tokens / max(seconds, 1e-9), "train_predicted_per_s": units / max(seconds, 1e-9)}

    @torch.no_grad()
    def score(self, batches: list[dict[str, torch.Tensor]]) -> tuple[_Scores, list[tuple[torch.Tensor, torch.Tensor]]]:
        """Teacher-forced token scores of fixed batches; also each batch's (right, predicted) masks."""
        model = self.unwrapped().eval()
        scores, marks = _Scores(), []
        for batch in batches:
            placed = to_device(batch, self.device)
            with self.accelerator.autocast():
                logits = self.logits(model, placed)
            right, mask = scores.add(logits, placed["labels"])
            marks.append((right.cpu(), mask.cpu()))
        return scores, marks

    def export(self, path: Path) -> None:
        """A transformers folder: the model with its pretraining head, the tokenizer, ``pretrain.json``."""
        path.mkdir(parents=True, exist_ok=True)
        self.unwrapped().save_pretrained(path)
        self.tokenizer.save_pretrained(path)
        if self.objective == "mlm":  # BERT-style loaders (rxnfp-bert) read vocab.txt
            vocab = sorted(self.tokenizer.get_vocab().items(), key=lambda kv: kv[1])
            (path / "vocab.txt").write_text("".join(f"{tok}\n" for tok, _ in vocab))
        (path / PRETRAIN_JSON).write_text(json.dumps({
            "objective": self.objective, "model": self.spec.model.name, "max_length": self.max_length,
            "corpus_hash": self.data.hash, "config": {k: self.config[k] for k in DEFAULTS}}, indent=1))


def masked_lm_head(model: nn.Module, probe: list[list[int]], pad_id: int) -> nn.Module | None:
    """The vocabulary head of a ``*ForMaskedLM`` (BERT's ``cls``, RoBERTa's ``lm_head``): the model's one child
    besides its encoder, used only if ``head(encoder(x)[0])`` gives the model's own logits on the ``probe``
    rows (a remote-code model may do more between the two); else ``None``."""
    base = getattr(model, "base_model", model)
    others = [child for child in model.children() if child is not base]
    if base is model or len(others) != 1 or not probe:
        return None
    ids, attention = pad_batch(probe, pad_id)
    inputs = to_device({"input_ids": ids, "attention_mask": attention}, model_device(model))
    training = model.training
    try:
        with torch.no_grad():
            model.eval()
            full = model(**inputs).logits
            split = others[0](base(**inputs)[0])
    except Exception:  # noqa: BLE001 - any failure just means: keep the model's own forward
        return None
    finally:
        model.train(training)
    same = full.shape == split.shape and torch.allclose(full, split, atol=1e-5, rtol=1e-4)
    return others[0] if same else None


class MLMTrainer(_PretrainLoop):
    """Masked-language modelling of an encoder (BERT masking by transformers' collator)."""

    objective = "mlm"

    def load(self) -> tuple[nn.Module, Any]:
        """The study's encoder under a masked-LM head (kept from the folder when it has one)."""
        from transformers import AutoModelForMaskedLM

        encoder, tokenizer = load_backbone(self.spec.model, self.data.train, self.seed)
        if tokenizer.mask_token is None:
            raise StudyError(f"model {self.spec.model.name!r}: its tokenizer has no mask token; MLM needs one")
        folder = getattr(encoder, "name_or_path", "") or ""
        if folder and Path(folder).is_dir():
            mlm = AutoModelForMaskedLM.from_pretrained(folder, config=encoder.config,  # rxnfp's lacks model_type
                                                       trust_remote_code=self.spec.model.trust_remote_code)
        else:  # a random-init encoder: its own weights under a new head (same seed, same init)
            mlm = AutoModelForMaskedLM.from_config(encoder.config)
            mlm.base_model.load_state_dict(encoder.state_dict())
        probe = tokenizer(list(self.data.train[:2]), truncation=True, max_length=tokenizer.model_max_length)["input_ids"]
        self.head = masked_lm_head(mlm, probe, tokenizer.pad_token_id)
        return mlm, tokenizer

    def collator(self, seed: int) -> DataCollatorForLanguageModeling:
        return DataCollatorForLanguageModeling(self.tokenizer, mlm_probability=self.knobs.mask_prob, seed=seed)

    def collate_fn(self, seed: int) -> Callable[[list[list[int]]], dict[str, torch.Tensor]]:
        """Batches of token-id rows masked by transformers' collator (:meth:`collator`, same draws for the same
        seed); only its padding is done here, vectorised (:func:`pad_batch`; the collator pads row by row
        through the tokenizer), with the special-token mask it would build per row taken in one ``isin``."""
        collator = self.collator(seed)
        collator.create_rng("pt")  # what the collator's own call does first when it has a seed
        specials = torch.as_tensor(self.tokenizer.all_special_ids)
        pad = self.tokenizer.pad_token_id

        def collate(rows: list[list[int]]) -> dict[str, torch.Tensor]:
            ids, attention = pad_batch(rows, pad)
            ids, labels = collator.torch_mask_tokens(ids, special_tokens_mask=torch.isin(ids, specials))
            return {"input_ids": ids, "attention_mask": attention, "labels": labels}
        return collate

    def masked(self, smiles: list[str], seed: int) -> list[dict[str, torch.Tensor]]:
        """Held-out batches masked once (a fixed seed): every epoch is scored on the same masks."""
        ids = self.encode(smiles)
        collate = self.collate_fn(seed)
        return [{**collate([ids[i] for i in chunk]), "rows": torch.as_tensor(chunk)}
                for chunk in sorted_chunks([len(x) for x in ids], self.opts.eval_batch_size)]

    def logits(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits

    def train_step(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, int]:
        """Cross-entropy over the masked positions only: the encoder runs on every token, the vocabulary head
        (BERT's transform + projection, and the softmax) only on the ~15% masked ones, whose loss is all
        there is (a ``*ForMaskedLM`` forward projects every position). Falls back to the full forward when
        the head cannot be split off (:func:`masked_lm_head`) or DDP wraps the model (its forward must run)."""
        head = self.head if self.model is self.unwrapped() else None
        if head is None:
            return super().train_step(batch)
        labels = batch["labels"]
        picked = labels != -100
        hidden = self.model.base_model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])[0]
        logits = head(hidden[picked])
        self._tokens += int(batch["attention_mask"].sum())
        if not logits.shape[0]:  # nothing masked in this batch (a short last batch): no loss, no units
            return logits.sum() * 0.0, 0
        return F.cross_entropy(logits.float(), labels[picked]), int(logits.shape[0])

    def train_loader(self, epoch: int) -> Any:
        ids = self.epoch_ids(epoch)
        return length_grouped_loader(ids, [len(x) for x in ids], self.knobs.batch_size,
                                     self.collate_fn(self.seed * 1000 + epoch), self.seed * 1000 + epoch)

    def evaluate_valid(self, ckpt: Path) -> dict[str, float]:
        if not hasattr(self, "_valid_batches"):
            self._valid_batches = self.masked(self.valid, self.seed + 1)
        return self.score(self._valid_batches)[0].metrics()

    def evaluate_test(self, ckpt: Path) -> dict[str, float]:
        batches = self.masked(self.test, self.seed + 2)
        scores, marks = self.score(batches)
        masked, right = np.zeros(len(self.test), int), np.zeros(len(self.test), int)
        for batch, (ok, mask) in zip(batches, marks):
            masked[batch["rows"].numpy()] = mask.sum(1).numpy()
            right[batch["rows"].numpy()] = ok.sum(1).numpy()
        pd.DataFrame({"smiles": self.test, "masked": masked, "right": right}).to_csv(ckpt / "test_predictions.csv",
                                                                                    index=False)
        return scores.metrics()


class DenoisingTrainer(_PretrainLoop):
    """Denoising of a seq2seq model: span-masked SMILES in, the whole SMILES out."""

    objective = "denoise"

    def load(self) -> tuple[nn.Module, Any]:
        model, tokenizer = load_seq2seq(self.spec.model, self.data.train, self.seed)
        if tokenizer.mask_token is None:
            raise StudyError(f"model {self.spec.model.name!r}: its tokenizer has no mask token; denoising needs one")
        self.start_id = decoder_start_id(model)
        return model, tokenizer

    def pairs(self, rows: list[list[int]], rng: np.random.Generator) -> list[tuple[list[int], list[int]]]:
        """``(masked source, labels)`` of token-id rows: specials kept around the masked inner tokens; labels
        end with EOS."""
        out = []
        mask_id, k = self.tokenizer.mask_token_id, self.knobs
        for ids in rows:
            inner = ids[1:-1]
            source = [ids[0], *span_mask(inner, mask_id, k.mask_prob, k.span_length, rng), ids[-1]]
            out.append((source[: self.max_length], ids[1:] if ids[0] == self.start_id else ids))
        return out

    def collate(self, batch: list[tuple[list[int], list[int]]]) -> dict[str, torch.Tensor]:
        return seq2seq_batch(batch, self.tokenizer.pad_token_id, self.start_id)

    def train_loader(self, epoch: int) -> Any:
        items = self.pairs(self.epoch_ids(epoch), np.random.default_rng([self.seed, epoch]))
        return length_grouped_loader(items, [len(s) + len(t) for s, t in items], self.knobs.batch_size,
                                     self.collate, self.seed * 1000 + epoch)

    def held_out(self, smiles: list[str], seed: int) -> tuple[list[tuple[list[int], list[int]]], list[dict]]:
        pairs = self.pairs(self.encode(smiles), np.random.default_rng([self.seed, seed, 7]))
        batches = [self.collate([pairs[i] for i in chunk])
                   for chunk in sorted_chunks([len(s) + len(t) for s, t in pairs], self.opts.eval_batch_size)]
        return pairs, batches

    def reconstruct(self, pairs: list[tuple[list[int], list[int]]]) -> list[str]:
        """Greedy reconstructions of the masked sources."""
        out = generate(self.unwrapped(), self.tokenizer, [s for s, _ in pairs], num_beams=1, top_k=1,
                       batch_size=self.opts.eval_batch_size, max_length=self.max_length,
                       autocast=self.accelerator.autocast, device=self.device)
        return [b[0] if b else "" for b in out]

    def _evaluate(self, smiles: list[str], seed: int) -> tuple[dict[str, float], list[str], list[bool]]:
        if seed not in getattr(self, "_held", {}):
            self._held = {**getattr(self, "_held", {}), seed: self.held_out(smiles, seed)}
        pairs, batches = self._held[seed]
        metrics = self.score(batches)[0].metrics()
        recon = self.reconstruct(pairs)
        exact = [canonicalize(r) == s for r, s in zip(recon, smiles)]  # smiles are canonical
        metrics["exact"] = float(np.mean(exact)) if exact else 0.0
        return metrics, recon, exact

    def evaluate_valid(self, ckpt: Path) -> dict[str, float]:
        return self._evaluate(self.valid, 1)[0]

    def evaluate_test(self, ckpt: Path) -> dict[str, float]:
        metrics, recon, exact = self._evaluate(self.test, 2)
        masked = self.tokenizer.batch_decode([s for s, _ in self._held[2][0]], skip_special_tokens=False)
        pd.DataFrame({"smiles": self.test, "masked": [m.replace(" ", "") for m in masked],
                      "reconstruction": recon, "exact": exact}).to_csv(ckpt / "test_predictions.csv", index=False)
        return metrics


def train_pretrain(config: dict[str, Any], data: CorpusSplits, spec: "TrialSpec", reporter: Reporter) -> dict[str, float]:
    """Pretrain one configuration; the plain function core of the ``pretrain`` task."""
    trainer = DenoisingTrainer if objective_of(spec.model.name) == "denoise" else MLMTrainer
    return trainer(config, data, spec).fit(reporter)


def _validate(spec: "StudySpec") -> None:
    opts = parse_options(spec.options)
    BACKBONES.check(spec.model.name)
    if not spec.dataset.path and not opts.draw_from:
        raise StudyError("dataset: the corpus is empty; give dataset.path (a SMILES file or CSV) or options.draw_from")
    if getattr(spec.model, "pretrain", None):
        raise StudyError("model.pretrain: a pretrain study continues from model.path, not from another stage")


def pretrain_pyfunc() -> Any:
    """The MLflow pyfunc that serves a pretrained folder (embeddings; imported only when logging)."""
    from trainables.pretrain.serving import PretrainPyfunc

    return PretrainPyfunc()


TASKS.register(
    "pretrain",
    Task(data_kind="corpus", metrics=METRICS, maximize=frozenset({"token_acc", "exact"}),
         prepare=prepare_pretrain, train=train_pretrain, validate=_validate, pyfunc=pretrain_pyfunc),
    help="pretraining: masked-language modelling (encoders) or denoising (seq2seq) on a SMILES corpus",
)
