"""The whole seq2seq path (tokenizer, training, beam search, canonical scoring) memorizes 64 reactions."""

from pathlib import Path

import pytest

from studies.spec import parse_study
from trainables import NullReporter
from trainables.models.tokenizer import split_smiles
from trainables.retro.task import prepare_retro, train_retro

N, COPIES, MAX_TOKENS = 64, 16, 30


def _short_reactions(source: Path) -> list[str]:
    """The first 64 USPTO-50K train reactions whose sides have at most 30 tokens (keeps CPU time low)."""
    out = []
    for line in source.read_text().splitlines():
        product, _, reactants = line.partition(" >> ")
        if len(split_smiles(product)) <= MAX_TOKENS and len(split_smiles(reactants)) <= MAX_TOKENS:
            out.append(line)
        if len(out) == N:
            return out
    raise AssertionError("not enough short reactions")


@pytest.mark.long  # ~55 s; CI trains retro in test_retro_study_e2e and the paper smoke studies
def test_tiny_bart_overfits_64_reactions(shared_data: Path, tmp_path: Path) -> None:
    lines = _short_reactions(shared_data / "uspto50k" / "train.smi")
    # An epoch is COPIES passes over the 64 reactions, so the per-epoch greedy check runs less often.
    (tmp_path / "train.smi").write_text("\n".join(lines * COPIES) + "\n")
    for split in ("valid", "test"):
        (tmp_path / f"{split}.smi").write_text("\n".join(lines) + "\n")
    spec = parse_study({
        "name": "overfit", "task": "retro", "dataset": {"name": "uspto50k", "path": str(tmp_path)},
        "model": {"name": "tiny-bart", "max_length": 64}, "search_space": "retro",
        "fixed": {"gamma": 0, "treatment": "full"},
        "max_epochs": 12, "metric": "valid_top1", "seed": 0,
        "options": {"val_subset": 8, "beam_size": 10, "eval_batch_size": 64},
    })
    prepared = prepare_retro(spec)
    assert prepared.summary == {"n_train": N * COPIES, "n_valid": N, "n_test": N}
    reporter = NullReporter(keep_dir=tmp_path / "ckpt")
    final = train_retro({"lr": 1e-3, "batch_size": 16, "treatment": "full"}, prepared.payload, spec, reporter)
    assert len(reporter.history) == 12
    assert reporter.history[-1]["valid_token_acc"] > reporter.history[0]["valid_token_acc"]
    # test = the 64 training reactions, scored with beam 10 on canonical reactant sets
    assert final["test_top1"] >= 0.9, final
    assert final["test_top10"] >= final["test_top5"] >= final["test_top3"] >= final["test_top1"]
    assert (tmp_path / "ckpt" / "test_predictions.csv").is_file()
    assert (tmp_path / "ckpt" / "model" / "retro.json").is_file()
