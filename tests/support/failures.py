"""List the failed and errored tests of the pytest JUnit XML reports in a folder, one line each with the
first line of the message, and the tests that passed only when rerun (``reruns.txt``, tests/conftest.py):
``tests/install-and-run.sh`` prints it after both pytest passes, so the tail of a CI log names every failure
and every flake even when a pass's own summary scrolled out of view.

    python tests/support/failures.py FOLDER
"""

from __future__ import annotations

import sys
import xml.etree.ElementTree as ET
from pathlib import Path

__all__ = ["failures"]


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


def main(folder: Path) -> None:
    lines = [line for path in sorted(folder.glob("*.xml")) for line in failures(path)]
    reruns = (folder / "reruns.txt").read_text().splitlines() if (folder / "reruns.txt").is_file() else []
    failed = {line.split(" ", 1)[1].split(": ", 1)[0] for line in lines}
    reruns = [r for r in reruns if _dotted(r.split(" ", 1)[1].split(": ", 1)[0]) not in failed]  # flakes only
    print(f"tests failed or errored: {len(lines)}; passed only when rerun: {len(reruns)}"
          + "".join(f"\n  {line}" for line in lines + reruns))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
