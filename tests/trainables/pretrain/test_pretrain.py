"""The pretrain task's parts without Ray: span masking, the corpus report, the leakage guard, options, and a
pretrained folder loaded back by the property and retro backbones."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from studies.spec import parse_study
from tests.conftest import tiny_pretrain_study
from trainables import TASKS, NullReporter
from trainables.errors import DataError, StudyError
from trainables.pretrain.corpus import build_corpus, corpus_hash, held_out_molecules, read_corpus_file
from trainables.pretrain.task import span_mask
from trainables.spec import DatasetSpec, ModelSpec


def test_span_mask_replaces_each_span_by_one_mask_and_keeps_the_rest_in_order() -> None:
    tokens = list(range(10, 110))
    out = span_mask(tokens, 1, 0.1, 3.0, np.random.default_rng(0))
    kept = [t for t in out if t != 1]
    assert kept == sorted(kept) and set(kept) <= set(tokens)  # order kept, nothing invented
    masks = out.count(1)
    assert 0 < masks < 40 and len(kept) < len(tokens)  # some spans, and they removed tokens
    assert span_mask(tokens, 1, 0.0, 3.0, np.random.default_rng(0)) == tokens
    # prob 1 with span 0: a mask inserted before every token, none removed
    assert span_mask([5, 6], 1, 1.0, 0.0, np.random.default_rng(0)) == [1, 5, 1, 6]


def test_corpus_file_reports_bad_rows_with_line_numbers(tmp_path: Path) -> None:
    smi = tmp_path / "corpus.smi"
    smi.write_text("smiles\nCCO id1\nC1CC\n\nc1ccccc1\nnot_a_smiles\nOCC\n")
    corpus, report = read_corpus_file(smi)
    assert corpus.smiles == ["CCO", "c1ccccc1", "CCO"] and corpus.rows == [2, 5, 7]
    assert report.n_rows == 6 and report.issues["invalid SMILES"]["rows"] == [3, 6]
    assert report.issues["empty SMILES"]["rows"] == [4]
    csv = tmp_path / "corpus.csv"
    csv.write_text("name,smi\na,CCN\nb,xx\n")
    corpus, report = read_corpus_file(csv, "smi")
    assert corpus.smiles == ["CCN"] and report.issues["invalid SMILES"]["rows"] == [3]
    with pytest.raises(DataError, match="missing SMILES column"):
        read_corpus_file(csv, "smiles")


def test_leakage_guard_removes_and_counts_the_held_out_molecules(tmp_path: Path) -> None:
    lipo = DatasetSpec(name="lipophilicity", split="random", seed=0, limit=200)
    held = held_out_molecules(lipo)
    assert len(held["valid"]) == 20 and len(held["test"]) == 20
    splits, reports = build_corpus(DatasetSpec(name="corpus", split="random"), [lipo], [lipo])
    guard = reports[-1]
    assert guard.issues["leakage guard: in lipophilicity valid"]["count"] == 20
    assert guard.issues["leakage guard: in lipophilicity test"]["count"] == 20
    everything = set(splits.train) | set(splits.valid) | set(splits.test)
    assert len(everything) == 160 and not everything & (held["valid"] | held["test"])
    # another split seed of the fine-tuning study guards other molecules
    other = held_out_molecules(lipo.model_copy(update={"seed": 1}))
    assert other["test"] != held["test"]


def test_reaction_dataset_gives_train_products_and_reactants_and_guards_its_held_out(shared_data: Path) -> None:
    uspto = DatasetSpec(name="uspto50k", path=str(shared_data / "uspto50k"), limit=40)
    splits, reports = build_corpus(DatasetSpec(name="corpus", split="random"), [uspto], [uspto])
    guard = reports[-1]
    removed = sum(e["count"] for k, e in guard.issues.items() if k.startswith("leakage guard"))
    held = held_out_molecules(uspto)
    kept = set(splits.train) | set(splits.valid) | set(splits.test)
    assert not kept & (held["valid"] | held["test"])
    assert len(kept) + removed + guard.issues.get("duplicate molecule", {}).get("count", 0) == guard.n_rows
    assert splits.hash == corpus_hash(splits.train, splits.valid, splits.test)


def test_bad_options_name_the_key() -> None:
    with pytest.raises(StudyError, match="options.masking: unknown key"):
        parse_study(tiny_pretrain_study("tiny-bert", options={"masking": 1}))
    with pytest.raises(StudyError, match="the corpus is empty"):
        parse_study(tiny_pretrain_study("tiny-bert", options={}))
    with pytest.raises(StudyError, match="metric 'valid_rmse' is not one the pretrain task reports"):
        parse_study(tiny_pretrain_study("tiny-bert", metric="valid_rmse"))


@pytest.mark.parametrize("model", ["tiny-bert", "tiny-bart"])
def test_pretrained_folder_loads_back_as_the_fine_tuning_backbone(model: str, tmp_path: Path) -> None:
    spec = parse_study(tiny_pretrain_study(model, max_epochs=1))
    prepared = TASKS.get("pretrain").prepare(spec)
    reporter = NullReporter(keep_dir=tmp_path / "ckpt")
    final = TASKS.get("pretrain").train({"batch_size": 32, "lr": 1e-3}, prepared.payload, spec.trial_spec(), reporter)
    assert 0 <= final["test_token_acc"] <= 1 and final["train_tokens_per_s"] > 0
    folder = tmp_path / "ckpt" / "model"
    saved = torch.load(tmp_path / "ckpt" / "state.pt", weights_only=False)["model"]
    if model == "tiny-bert":
        from trainables.models.backbones import load_backbone

        encoder, tokenizer = load_backbone(ModelSpec(name="tiny-bert", path=str(folder), max_length=64), [], 0)
        key = "embeddings.word_embeddings.weight"
        assert torch.equal(encoder.state_dict()[key], saved[f"bert.{key}"])
    else:
        from trainables.retro.models import is_random_init, load_seq2seq

        assert not is_random_init(ModelSpec(name="tiny-bart", path=str(folder)))
        seq2seq, tokenizer = load_seq2seq(ModelSpec(name="tiny-bart", path=str(folder), max_length=64), [], 0)
        key = "model.encoder.layers.0.fc1.weight"
        assert torch.equal(seq2seq.state_dict()[key], saved[key])
    model_vocab = (encoder if model == "tiny-bert" else seq2seq).config.vocab_size
    assert tokenizer.mask_token is not None and len(tokenizer) == model_vocab


class _Killed(Exception):
    pass


class _DiesAfterFirstEpoch(NullReporter):
    def report(self, metrics, checkpoint_dir=None):  # noqa: ANN001 - the Reporter protocol
        super().report(metrics, checkpoint_dir)
        raise _Killed


def test_a_killed_pretrain_trial_resumes_from_its_checkpoint(tmp_path: Path) -> None:
    spec = parse_study(tiny_pretrain_study("tiny-bert", max_epochs=2, scheduler={"grace_period": 2}))
    prepared = TASKS.get("pretrain").prepare(spec)
    config = {"batch_size": 32, "lr": 1e-3}
    with pytest.raises(_Killed):
        TASKS.get("pretrain").train(config, prepared.payload, spec.trial_spec(), _DiesAfterFirstEpoch(tmp_path / "ck"))
    first = torch.load(tmp_path / "ck" / "state.pt", weights_only=False)
    assert first["epoch"] == 1
    resumed = NullReporter(resume_from=tmp_path / "ck")
    final = TASKS.get("pretrain").train(config, prepared.payload, spec.trial_spec(), resumed)
    assert [h["epoch"] for h in resumed.history] == [2] and "test_token_acc" in final
