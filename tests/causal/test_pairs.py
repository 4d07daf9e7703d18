"""The Tuebingen cause-effect pairs loader, on the real files (skipped when absent)."""

from __future__ import annotations

import tarfile

import numpy as np
import pytest

from edgecompress.causal import load_pairs
from edgecompress.causal.pairs import ARCHIVE
from edgecompress.errors import DataError, DataNotFoundError

MULTIVARIATE = {52, 53, 54, 55, 71}


def test_real_pairs(shared_data):
    root = shared_data("tuebingen_pairs")
    pairs = load_pairs(root)
    assert len(pairs) == 95
    assert {p.pair_id for p in pairs} == set(range(1, 101)) - MULTIVARIATE
    assert sum(p.weight for p in pairs) == pytest.approx(35.0, abs=0.01)
    assert all(0 < p.weight <= 1 for p in pairs)
    assert sum(p.direction == "x->y" for p in pairs) == 70
    first = pairs[0]
    assert (first.name, first.direction, len(first)) == ("pair0001", "x->y", 349)
    assert (first.x[0], first.y[0]) == (205.0, 9.7)
    assert next(p for p in pairs if p.pair_id == 50).direction == "y->x"
    # pair 81 has a third (flag) column with NaN: only columns 1 and 2 are read
    assert np.isfinite(next(p for p in pairs if p.pair_id == 81).x).all()
    packed = np.load(root / "tuebingen_bivariate.npz")
    for p in pairs[::10]:
        np.testing.assert_array_equal(packed[p.name], np.c_[p.x, p.y])


def test_extracted_folder_and_default_root(shared_data, tmp_path, monkeypatch):
    with tarfile.open(shared_data("tuebingen_pairs") / ARCHIVE) as tar:
        tar.extractall(tmp_path / "tuebingen_pairs", filter="data")
    monkeypatch.setenv("EDGECOMPRESS_DATA", str(tmp_path))
    pairs = load_pairs()  # $EDGECOMPRESS_DATA/tuebingen_pairs/tuebingen_pairs_v1.0/
    assert len(pairs) == 95 and pairs[-1].pair_id == 100


def test_missing_files_say_where_to_put_them(tmp_path):
    with pytest.raises(DataNotFoundError, match=f"(?s)files not found in {tmp_path}.*{ARCHIVE}"):
        load_pairs(tmp_path)


def test_bad_files(tmp_path):
    (tmp_path / "pairmeta.txt").write_text("0001 1 1 2 2 0.5\n0002 1 1 two 2 0.5\n")
    with pytest.raises(DataError, match="pairmeta.txt line 2"):
        load_pairs(tmp_path)
    (tmp_path / "pairmeta.txt").write_text("0001 1 1 2 2 0.5\n")
    (tmp_path / "pair0001.txt").write_text("1 2\n3 x\n")
    with pytest.raises(DataError, match="pair0001.txt line 2: expected two numbers"):
        load_pairs(tmp_path)
    (tmp_path / "pair0001.txt").write_text("1 2\n\n3 4\n")  # blank lines are skipped
    assert len(load_pairs(tmp_path)[0]) == 2
