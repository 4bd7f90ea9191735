"""List the failed and errored tests of the pytest JUnit XML reports in a folder, one line each with the
first line of the message, and the tests that passed only when rerun (``reruns.txt``, tests/conftest.py):
``tests/install-and-run.sh`` prints it after both pytest passes, so the tail of a CI log names every failure
and every flake even when a pass's own summary scrolled out of view. It also writes ``summary.txt`` in the
folder: the same on one line (test names only), which ``.ci/run`` prints as its very last line, since a CI
record may keep only that.

    python tests/support/failures.py FOLDER
"""

from __future__ import annotations

import sys
import xml.etree.ElementTree as ET
from pathlib import Path

__all__ = ["failures", "one_line"]


def failures(report: Path) -> list[str]:
    """``FAILED|ERROR classname::name: first line of the message`` for each such test case in ``report``."""
    out = []
    for case in ET.parse(report).getroot().iter("testcase"):
        for kind in ("failure", "error"):
            node = case.find(kind)
            if node is not None:
                message = (node.get("message") or node.text or "").strip().splitlines()
                out.append(f"{'FAILED' if kind == 'failure' else 'ERROR'} {case.get('classname')}::{case.get('name')}: "
                           f"{message[0][:300] if message else ''}")
    return out


def _dotted(nodeid: str) -> str:
    """``tests/a/test_b.py::test_c[x]`` as JUnit names it: ``tests.a.test_b::test_c[x]``."""
    path, _, name = nodeid.partition("::")
    return f"{path.removesuffix('.py').replace('/', '.')}::{name}"


def _short(line: str) -> str:
    """``FAILED tests.a.test_b::test_c[x]: message`` -> ``test_b::test_c[x]`` (the name, without the message)."""
    name = line.split(" ", 1)[1].split(": ", 1)[0]
    path, _, test = name.partition("::")
    short = f"{path.replace('/', '.').removesuffix('.py').rsplit('.', 1)[-1]}::{test}"
    return short if len(short) <= 200 else f"{short[:200]}...({len(short):,} characters)"


def one_line(lines: list[str], reruns: list[str]) -> str:
    """Every failure and flake by name on one line: ``failed 1: test_b::test_c | passed only when rerun 0``."""
    return (f"failed {len(lines)}: {', '.join(map(_short, lines)) or '-'} | "
            f"passed only when rerun {len(reruns)}: {', '.join(map(_short, reruns)) or '-'}")


def main(folder: Path) -> None:
    lines = [line for path in sorted(folder.glob("*.xml")) for line in failures(path)]
    reruns = (folder / "reruns.txt").read_text().splitlines() if (folder / "reruns.txt").is_file() else []
    failed = {line.split(" ", 1)[1].split(": ", 1)[0] for line in lines}
    reruns = [r for r in reruns if _dotted(r.split(" ", 1)[1].split(": ", 1)[0]) not in failed]  # flakes only
    print(f"tests failed or errored: {len(lines)}; passed only when rerun: {len(reruns)}"
          + "".join(f"\n  {line}" for line in lines + reruns))
    (folder / "summary.txt").write_text(one_line(lines, reruns) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
