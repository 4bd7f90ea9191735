"""The fault suite's long variants (``@pytest.mark.faults_long``) run only with ``CHEMTUNE_FAULTS_LONG=1``
(``python benchmarks/fault_figures.py`` sets it); CI runs the short variant of every scenario."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

LONG = os.environ.get("CHEMTUNE_FAULTS_LONG") == "1"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if item.get_closest_marker("faults_long") and not LONG:
            item.add_marker(pytest.mark.skipif(not LONG, reason="long fault variant: set CHEMTUNE_FAULTS_LONG=1 "
                                                                "(benchmarks/fault_figures.py)"))


def record_figures(scenario: str, **figures: Any) -> None:
    """Append a scenario's figures to ``$CHEMTUNE_FAULT_FIGURES`` (JSON lines) for fault_figures.py."""
    path = os.environ.get("CHEMTUNE_FAULT_FIGURES")
    if path:
        with Path(path).open("a") as f:
            f.write(json.dumps({"scenario": scenario, **figures}) + "\n")
