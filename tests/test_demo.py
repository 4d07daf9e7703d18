"""`edgecompress demo --json`: the five rows (float and four binarizations), each with accuracy,
packed size and MACs by precision.

The demo's smallest budget is one epoch, which still trains five MLPs on 6,000 images (about half
a minute on two cores); the test keeps the demo's model, methods and CLI path and only limits the
bundled data to 200 images per split, so it runs in a few seconds."""

from __future__ import annotations

import json

import pytest

from edgecompress import demo
from edgecompress.cli import main

LABELS = ["float", "bnn W1A32", "bnn++ W1A32", "bnn W1A1", "bnn++ W1A1"]

# MLP 784-512-512-10 (Linear without bias before BatchNorm1d); the first and last layers stay
# float in every compressed model, the 512x512 middle one is binarized.
FIRST, MIDDLE, LAST = 784 * 512, 512 * 512, 512 * 10
PARAMS = FIRST + 2 * 512 + MIDDLE + 2 * 512 + LAST + 10
FLOAT_BYTES = 4 * PARAMS
BINARY_BYTES = FLOAT_BYTES - 4 * MIDDLE + MIDDLE // 8  # the middle weights at 1 bit


@pytest.fixture
def small_demo(monkeypatch):
    monkeypatch.setattr(demo, "BASE", {**demo.BASE, "data": {**demo.BASE["data"], "limit": 200}})


def test_demo_json_has_the_five_rows(small_demo, tmp_path, capsys):
    path = tmp_path / "demo.json"
    main(["demo", "--epochs", "1", "--no-progress", "--json", str(path)])
    out = capsys.readouterr().out
    payload = json.loads(path.read_text())
    assert payload["epochs"] == 1 and payload["seed"] == 0
    rows = payload["rows"]
    assert [r["label"] for r in rows] == LABELS
    for row in rows:
        assert {"top1", "bytes", "macs"} <= set(row)
        assert 0 <= row["top1"] <= 100
        assert row["label"] in out  # the printed table has the same rows
    float_row, *binary = rows
    assert float_row["bytes"] == FLOAT_BYTES and float_row["macs"] == {
        "w32a32": FIRST + MIDDLE + LAST}
    for row in binary:
        kind = "w1a1" if row["label"].endswith("W1A1") else "w1a32"
        assert row["macs"] == {kind: MIDDLE, "w32a32": FIRST + LAST}
        assert row["bytes"] == BINARY_BYTES
        assert row["compression"] == pytest.approx(FLOAT_BYTES / BINARY_BYTES)
