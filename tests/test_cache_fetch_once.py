"""trainables.cache.fetch_once: a cache folder is filled once however many processes ask for it at once
(on a fresh machine the test workers and Ray trials all ask for rxnfp-bert together)."""

import multiprocessing as mp
import time
from pathlib import Path

import pytest

from trainables.cache import fetch_once


def _fill(out: Path) -> None:
    log = out.parent / "fills.log"
    with log.open("a") as handle:
        handle.write("x")
    time.sleep(0.5)  # long enough that every process arrives while the first one fills
    (out / "weights.bin").write_text("w")
    (out / "config.json").write_text("{}")


def _ask(target: str) -> str:
    folder = fetch_once(Path(target), _fill)
    return (folder / "weights.bin").read_text()


def test_four_processes_asking_at_once_fill_the_folder_once_and_all_read_it(tmp_path: Path) -> None:
    target = tmp_path / "models" / "m"
    with mp.get_context("spawn").Pool(4) as pool:
        got = pool.map(_ask, [str(target)] * 4)
    assert got == ["w"] * 4
    assert (tmp_path / "models" / "fills.log").read_text() == "x"


def test_a_failed_fill_leaves_nothing_and_the_next_call_fills(tmp_path: Path) -> None:
    target = tmp_path / "m"

    def broken(out: Path) -> None:
        (out / "partial").write_text("p")
        raise RuntimeError("download failed")

    with pytest.raises(RuntimeError, match="download failed"):
        fetch_once(target, broken)
    assert not target.exists()
    fetch_once(target, _fill)
    assert (target / "weights.bin").read_text() == "w"
