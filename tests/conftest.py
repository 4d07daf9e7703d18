"""Fixtures shared by the whole suite.

Real datasets (``../shared/data`` beside the repository, or the folder named by the
``EDGECOMPRESS_TEST_DATA`` environment variable) are reached only through :func:`shared_data`:
a test that needs one is skipped, with the reason, in a plain clone that has no such folder. CI
sets ``EDGECOMPRESS_TEST_DATA``, and there a missing dataset is a failure, never a skip.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import pytest

ENV = "EDGECOMPRESS_TEST_DATA"
DEFAULT = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture
def shared_data() -> Callable[[str], Path]:
    """``shared_data("mnist")`` -> the folder of that real dataset, or skip when it is absent
    (fail instead when ``EDGECOMPRESS_TEST_DATA`` names a folder, as in CI)."""

    def find(name: str) -> Path:
        root = Path(os.environ[ENV]) if os.environ.get(ENV) else DEFAULT
        path = root / name
        if path.is_dir():
            return path
        if os.environ.get(ENV):
            pytest.fail(f"{ENV}={root} but the dataset folder {path} does not exist")
        pytest.skip(f"real dataset {name!r} not found at {path}; set {ENV} to the folder "
                    "holding it (../shared/data in the project workspace)")

    return find
