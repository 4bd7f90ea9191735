"""A study launched on a thread: the driver runs beside the test, which acts on the cluster mid-study."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

__all__ = ["StudyThread"]


class StudyThread:
    """``launch(spec, address=..., root=...)`` on a daemon thread; its error is re-raised by :meth:`check`."""

    def __init__(self, spec: Any, address: str, root: Path) -> None:
        from studies.runner import launch

        self.outcome: dict[str, Any] = {}

        def run() -> None:
            try:
                self.outcome["result"] = launch(spec, address=address, root=root)
            except BaseException as err:  # noqa: BLE001 - re-raised by check()
                self.outcome["error"] = err

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()

    def check(self) -> None:
        """Re-raise the driver's error, if it failed."""
        if "error" in self.outcome:
            raise self.outcome["error"]
