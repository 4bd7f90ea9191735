"""The failure list printed at the end of the test command (tests/support/failures.py)."""

import os
from pathlib import Path

import pytest

from tests.support.failures import failures

REPORT = """<?xml version="1.0" encoding="utf-8"?><testsuites><testsuite name="pytest" errors="1" failures="1" tests="3">
<testcase classname="tests.a" name="test_ok" time="0.1"/>
<testcase classname="tests.a" name="test_bad" time="0.1"><failure message="assert 1 == 2&#10;more">trace</failure></testcase>
<testcase classname="tests.b" name="test_setup" time="0.1"><error message="fixture 'x' not found">trace</error></testcase>
</testsuite></testsuites>"""


def test_failures_lists_each_failed_and_errored_case_with_its_first_message_line(tmp_path: Path) -> None:
    report = tmp_path / "r.xml"
    report.write_text(REPORT)
    assert failures(report) == ["FAILED tests.a::test_bad: assert 1 == 2", "ERROR tests.b::test_setup: fixture 'x' not found"]


def test_main_lists_failures_and_only_the_reruns_that_then_passed(tmp_path: Path, capsys) -> None:
    from tests.support.failures import main

    (tmp_path / "parallel.xml").write_text(REPORT)
    (tmp_path / "reruns.txt").write_text("RERUN tests/a.py::test_bad: E assert 1 == 2\n"
                                         "RERUN tests/c/d.py::test_flaky[x]: E timeout\n")
    main(tmp_path)
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "tests failed or errored: 2; passed only when rerun: 1"
    assert out[1:] == ["  FAILED tests.a::test_bad: assert 1 == 2", "  ERROR tests.b::test_setup: fixture 'x' not found",
                       "  RERUN tests/c/d.py::test_flaky[x]: E timeout"]
    assert (tmp_path / "summary.txt").read_text() == (
        "failed 2: a::test_bad, b::test_setup | passed only when rerun 1: d::test_flaky[x]\n")


def test_summary_line_says_none_when_all_passed(tmp_path: Path) -> None:
    from tests.support.failures import main

    (tmp_path / "serial.xml").write_text(REPORT.replace("<failure", "<skipped").replace("</failure>", "</skipped>")
                                         .replace("<error", "<skipped").replace("</error>", "</skipped>"))
    main(tmp_path)
    assert (tmp_path / "summary.txt").read_text() == "failed 0: - | passed only when rerun 0: -\n"


def test_a_huge_test_name_is_cut_in_the_summary_line() -> None:
    """A 10 MB parameter once became a 10 MB test id and filled the CI record's one kept line."""
    from tests.support.failures import one_line

    line = one_line([f"FAILED tests.a::test_x[{'C' * 10_000}]: assert 0"], [])
    assert line.startswith("failed 1: a::test_x[CCC") and len(line) < 300
    assert line.count("C") == 200 - len("a::test_x[") and "...(10,011 characters)" in line


@pytest.mark.parametrize("value", ["C" * 101, b"C" * 10_000_000, "short"])
def test_long_parameters_get_short_ids_on_every_pytest_version(value: str | bytes, request) -> None:
    """tests/conftest.py's ``pytest_make_parametrize_id``: older pytest put the whole value in the id."""
    test_id = request.node.callspec.id
    assert test_id == ("short" if value == "short" else f"value-{len(value)}-long")
    assert len(os.environ["PYTEST_CURRENT_TEST"]) < 1000  # a child process can still be started
