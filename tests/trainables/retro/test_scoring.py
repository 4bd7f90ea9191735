"""Top-k exact match of canonical reactant sets on hand-made cases."""

import pytest

from trainables.retro.scoring import rank_beams, score_topk


def test_reordered_fragments_and_other_smiles_of_the_same_molecules_match():
    target = "CC(=O)Cl.OCC"
    beams = [["OCC.CC(Cl)=O"]]  # both fragments reordered and written differently
    scored = score_topk(beams, [target], ks=(1,))
    assert scored.metrics["top1"] == 1.0
    assert scored.ranks.tolist() == [1]


def test_ranks_invalid_share_and_topk():
    targets = ["CCO", "c1ccccc1Br", "CC(=O)O", "CN"]
    beams = [
        ["CCO", "CCC"],                 # hit at 1
        ["C1CC", "c1ccccc1Cl", "Brc1ccccc1"],  # invalid top-1, hit at 3
        ["CC", "CCC", "CCCC", "CCCCC"],  # never
        ["not a smiles", "((", "NC"],    # two invalid, hit at 3
    ]
    scored = score_topk(beams, targets, ks=(1, 3, 5))
    assert scored.ranks.tolist() == [1, 3, 0, 3]
    assert scored.metrics["top1"] == pytest.approx(0.25)
    assert scored.metrics["top3"] == pytest.approx(0.75)
    assert scored.metrics["top5"] == pytest.approx(0.75)
    assert scored.metrics["invalid"] == pytest.approx(0.5)  # products 2 and 4 have an invalid first beam
    assert scored.metrics["invalid_beams"] == pytest.approx(3 / 12)


def test_duplicate_beams_are_dropped_only_with_dedupe():
    target = "CCN"
    beams = [["CCO", "OCC", "C(O)C", "NCC"]]  # three spellings of ethanol, then the answer
    assert score_topk(beams, [target], ks=(1, 2, 3), dedupe=True).ranks.tolist() == [2]
    paper = score_topk(beams, [target], ks=(1, 2, 3))  # the default: Chemformer's protocol, no deduplication
    assert paper.ranks.tolist() == [4]
    assert paper.metrics["top3"] == 0.0


def test_invalid_beams_keep_their_rank_and_never_match():
    assert rank_beams(["xx", "CCO", "xx", "OCC"], dedupe=True) == [None, "CCO", None]
    assert rank_beams(["xx", "CCO", "xx", "OCC"]) == [None, "CCO", None, "CCO"]


def test_lengths_must_agree():
    with pytest.raises(ValueError, match="2 predictions for 1 targets"):
        score_topk([["C"], ["C"]], ["C"])
