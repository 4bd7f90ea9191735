from __future__ import annotations

import http.server
import threading
from pathlib import Path

import pytest

from studies.spec import DatasetSpec
from trainables.cache import download
from trainables.data.datasets import DATASETS
from trainables.errors import DataError


def test_lipophilicity_from_data_dir(shared_data: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHEMTUNE_DATA_DIR", str(shared_data))
    table, report = DATASETS.get("lipophilicity").load(DatasetSpec(name="lipophilicity"))
    assert report.n_rows == 4200
    assert len(table) == report.n_kept and report.n_kept > 4100
    assert table.ids[0].startswith("CHEMBL")
    assert -2.0 < table.targets.mean() < 4.5


def test_lipophilicity_row_count_is_checked(tmp_path: Path) -> None:
    bad = tmp_path / "Lipophilicity.csv"
    bad.write_text("CMPD_CHEMBLID,exp,smiles\nX1,1.0,CCO\n")
    with pytest.raises(DataError, match="expected the 4200 rows"):
        DATASETS.get("lipophilicity").load(DatasetSpec(name="lipophilicity", path=str(bad)))


def test_nci_logp_labels_are_crippen_logp() -> None:
    from rdkit import Chem
    from rdkit.Chem import Crippen

    table, report = DATASETS.get("nci-logp").load(DatasetSpec(name="nci-logp"))
    assert report.n_kept == len(table) > 4800
    assert report.issues["invalid SMILES"]["count"] > 0  # RDKit's file has a few; they are reported
    for s, y in zip(table.smiles[:20], table.targets[:20]):
        assert y == pytest.approx(Crippen.MolLogP(Chem.MolFromSmiles(s)), abs=1e-9)


def test_download_once_into_the_cache(tmp_path: Path) -> None:
    served = tmp_path / "srv"
    served.mkdir()
    (served / "x.csv").write_text("smiles,y\nCCO,1\n")
    hits = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a, **kw):
            super().__init__(*a, directory=str(served), **kw)

        def log_message(self, *args) -> None:
            hits.append(args)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/x.csv"
        dest = tmp_path / "cache" / "x.csv"
        assert download(url, dest).read_text() == "smiles,y\nCCO,1\n"
        download(url, dest)
        assert len(hits) == 1  # the second call is served from the cache
        assert [p.name for p in dest.parent.iterdir()] == ["x.csv"]  # no temp file left behind
    finally:
        server.shutdown()
