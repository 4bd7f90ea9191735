"""Reading reactions: canonical sides, invalid lines counted with line numbers, augmentation."""

import random

import pandas as pd
import pytest

from studies.spec import DatasetSpec
from trainables.data.datasets import DATASETS
from trainables.errors import DataError
from trainables.retro.data import canonical_set, randomize_smiles, read_reaction_csv, read_smi

LINES = [
    "CCOC(C)=O >> OCC.CC(=O)O",         # 1 ok (fragments out of order)
    "",                                  # 2 blank: skipped, not a row
    "c1ccccc1Br >> Brc1ccccc1",          # 3 ok
    "C1CC >> CC",                        # 4 invalid product
    "CCN >> CC((N",                      # 5 invalid reactants
    "no separator here",                 # 6 malformed
    "CCO >>",                            # 7 malformed (empty side)
]


def test_canonical_set_sorts_fragments():
    assert canonical_set("OCC.CC(=O)O") == canonical_set("CC(O)=O.CCO") == "CC(=O)O.CCO"
    assert canonical_set("CCO.C1CC") is None
    assert canonical_set("") is None


def test_read_smi_reports_each_bad_line(tmp_path):
    path = tmp_path / "train.smi"
    path.write_text("\n".join(LINES) + "\n")
    reactions, report = read_smi(path, cache=False)
    assert reactions.products == ["CCOC(C)=O", "Brc1ccccc1"]
    assert reactions.reactants == ["CC(=O)O.CCO", "Brc1ccccc1"]
    assert reactions.rows == [1, 3]
    assert report.n_rows == 6 and report.n_excluded == 4
    assert report.issues["invalid product SMILES"]["rows"] == [4]
    assert report.issues["invalid reactants SMILES"]["rows"] == [5]
    assert report.issues["malformed line (want 'product >> reactants')"]["rows"] == [6, 7]
    with pytest.raises(DataError, match="66.7% of the rows are bad"):
        report.check(0.05)


def test_read_smi_cache_gives_the_same_result(tmp_path, monkeypatch):
    monkeypatch.setenv("CHEMTUNE_CACHE", str(tmp_path / "cache"))
    path = tmp_path / "x.smi"
    path.write_text("\n".join(LINES))
    first = read_smi(path)
    assert list((tmp_path / "cache" / "canonical").glob("*.pkl"))
    second = read_smi(path)
    assert second[0] == first[0] and second[1].issues == first[1].issues


def test_reaction_csv(tmp_path):
    path = tmp_path / "rxn.csv"
    pd.DataFrame({"rxn": ["OCC.CC(=O)O>>CCOC(C)=O", "CC>>", "CCO>C>CC(=O)O", "CC>>C1C"]}).to_csv(path, index=False)
    reactions, report = read_reaction_csv(path, "rxn")
    assert reactions.products == ["CCOC(C)=O", "CC(=O)O"] and reactions.rows == [2, 4]
    assert report.issues["malformed reaction (want 'reactants>>product')"]["rows"] == [3]
    assert report.issues["invalid product SMILES"]["rows"] == [5]
    with pytest.raises(DataError, match=r"missing reaction column \(dataset.smiles_column\) 'reaction'"):
        read_reaction_csv(path, "reaction")


def test_uspto50k_from_path_with_limit(tmp_path):
    for split in ("train", "valid", "test"):
        (tmp_path / f"{split}.smi").write_text("\n".join(LINES[:1] + LINES[2:3] * 3))
    assert DATASETS.get("uspto50k").kind == "reactions"
    splits, report = DATASETS.get("uspto50k").load(DatasetSpec(name="uspto50k", path=str(tmp_path), limit=2))
    assert [len(s) for s in (splits.train, splits.valid, splits.test)] == [2, 2, 2]
    assert report.n_rows == 12 and len(splits.reports) == 3
    with pytest.raises(DataError, match="train.smi: file not found"):
        DATASETS.get("uspto50k").load(DatasetSpec(name="uspto50k", path=str(tmp_path / "nowhere")))


def test_randomized_smiles_are_the_same_molecules():
    rng = random.Random(0)
    source = "CC(=O)Nc1ccc(O)cc1.ClCCl"
    outs = {randomize_smiles(source, rng) for _ in range(20)}
    assert len(outs) > 5  # really random
    assert {canonical_set(o) for o in outs} == {canonical_set(source)}
