"""ASHA's first rung vs. data selection (issue 10, item 7): a study whose trials could be stopped before their
selection acts is refused when it is read, with a message that names the keys to change."""

from __future__ import annotations

import math

import pytest

from studies.spec import load_study, parse_study
from tests.conftest import ROOT, tiny_selection_study
from trainables.errors import StudyError
from trainables.selection.active import acquisition_epochs
from trainables.selection.curriculum import PACINGS, full_data_epoch

ONE_SCHEDULE = {"curriculum_bins": 5, "curriculum_pacing": "linear", "curriculum_difficulty": "smiles_length"}


def study(selection: str, grace: int, epochs: int = 6, ranges: dict | None = None, **fixed):
    data = tiny_selection_study(selection, limit=200, max_epochs=epochs, **fixed)
    data["scheduler"] = {"grace_period": grace}
    if ranges:
        data["ranges"] = ranges
        if "selection" in ranges:
            data["fixed"].pop("selection")
    return parse_study(data)


@pytest.mark.parametrize(("rounds", "epochs", "first"), [(1, 6, 4), (2, 6, 3), (3, 8, 3), (1, 2, 2)])
def test_active_needs_the_first_rung_after_the_first_acquisition(rounds, epochs, first):
    assert acquisition_epochs(rounds, epochs)[0] + 1 == first  # 0-based acquisition epoch, trained as the next
    with pytest.raises(StudyError, match=(rf"scheduler.grace_period {first - 1} .* rounds {rounds} and max_epochs "
                                          rf"{epochs} .* epoch {first}\): set scheduler.grace_period to at least {first}")):
        study("active", first - 1, epochs, rounds=rounds, n_select=8)
    assert study("active", first, epochs, rounds=rounds, n_select=8).scheduler.grace_period == first
    study("active", 100, epochs, rounds=rounds, n_select=8)  # above max_epochs: no early stopping at all


def test_a_rounds_range_is_judged_by_its_fewest_rounds():
    # 1 round acquires at epoch 6 // 2 = 3 (trained as epoch 4); 3 rounds would acquire first at epoch 1
    with pytest.raises(StudyError, match="rounds 1 and max_epochs 6 .* at least 4"):
        study("active", 3, ranges={"rounds": [1, 3]}, n_select=8)
    study("active", 3, ranges={"rounds": [2, 3]}, n_select=8)


def test_a_searched_rounds_knob_is_judged_by_the_space_range():
    # rounds not fixed: the space samples 1..4; 4 rounds need 5 epochs, 1 round its first rung at epoch 4
    with pytest.raises(StudyError, match="rounds 4 must be below max_epochs 4"):
        study("active", 4, epochs=4, n_select=8)
    with pytest.raises(StudyError, match="rounds 1 and max_epochs 6 .* at least 4"):
        study("active", 3, n_select=8)


def test_a_curriculum_mixed_with_other_selections_needs_the_first_rung_at_its_full_data_epoch():
    with pytest.raises(StudyError) as err:
        study("curriculum", 5, ranges={"selection": ["none", "curriculum"]}, **ONE_SCHEDULE)
    message = str(err.value)
    assert "scheduler.grace_period 5" in message and "all of train only from epoch 6 of max_epochs 6" in message
    assert "trials of selection none" in message and "set scheduler.grace_period to 6" in message
    study("curriculum", 6, ranges={"selection": ["none", "curriculum"]}, **ONE_SCHEDULE)


def test_a_curriculum_searching_its_schedule_is_refused_but_one_schedule_may_stop_early():
    with pytest.raises(StudyError, match="another curriculum schedule.*curriculum_pacing"):
        study("curriculum", 2, ranges={"curriculum_pacing": ["linear", "root"]},
              **{k: v for k, v in ONE_SCHEDULE.items() if k != "curriculum_pacing"})
    with pytest.raises(StudyError, match="another curriculum schedule"):
        study("curriculum", 2, curriculum_bins=5)  # pacing and difficulty searched
    assert study("curriculum", 1, **ONE_SCHEDULE).scheduler.grace_period == 1  # every trial alike at every rung


def test_the_whole_selection_space_needs_no_early_stopping_before_the_last_epoch():
    data = tiny_selection_study("none", limit=200, max_epochs=6)
    data["fixed"] = {"n_select": 8}
    for grace, error in ((4, "selection 'curriculum' trains on all of train only from epoch 6"), (6, None)):
        data["scheduler"] = {"grace_period": grace}
        if error:
            with pytest.raises(StudyError, match=error):
                parse_study(data)
        else:
            parse_study(data)


def test_full_data_epoch_is_the_first_epoch_whose_threshold_reaches_d_max():
    assert {full_data_epoch(PACINGS.get(p), 7) for p in PACINGS.names()} == {7}
    assert full_data_epoch(lambda f: min(1.0, 2 * f), 10) == 5  # a pacing that saturates halfway
    assert full_data_epoch(lambda f: math.sqrt(f), 1) == 1


PROPERTY_PAPERS = sorted((ROOT / "studies" / "papers").glob("property_*.yaml"))


@pytest.mark.parametrize("path", PROPERTY_PAPERS, ids=[p.stem for p in PROPERTY_PAPERS])
def test_property_paper_studies_parse_and_the_rung_check_guards_them(path):
    spec = load_study(path)
    guarded = {"active", "curriculum"} & set(spec.ranges.get("selection", [spec.fixed.get("selection")]))
    if guarded and spec.max_epochs > 1:
        data = spec.model_dump(exclude_none=True)
        data["scheduler"]["grace_period"] = 1
        with pytest.raises(StudyError, match="scheduler.grace_period 1 lets ASHA stop trials after epoch 1"):
            parse_study(data)
