"""The Tuebingen cause-effect pairs (Mooij et al., "Distinguishing cause from effect using
observational data: methods and benchmarks", JMLR 17(32), 2016), v1.0 with 100 pairs.

:func:`load_pairs` reads them from the release tarball ``tuebingen_pairs_v1.0.tar.gz`` or its
extracted folder, in ``root`` or by default ``$EDGECOMPRESS_DATA/tuebingen_pairs`` (else
``~/.edgecompress/data/tuebingen_pairs``). ``pairmeta.txt`` gives each pair's cause and effect
columns and its weight (pairs from one source dataset share a total weight of 1, so that
weighted accuracy does not favour the sources with many pairs). The multivariate pairs (a
cause or effect of several columns: 52-55 and 71 in v1.0) are skipped as the benchmark does;
``x`` and ``y`` are data columns 1 and 2, the ground truth says which one is the cause. Files are
never downloaded.
"""

from __future__ import annotations

import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from ..datapaths import default_root, missing_files_error
from ..errors import DataError
from .result import X_TO_Y, Y_TO_X

NAME = "tuebingen_pairs"
ARCHIVE = "tuebingen_pairs_v1.0.tar.gz"
FOLDER = "tuebingen_pairs_v1.0"
META = "pairmeta.txt"


@dataclass(frozen=True)
class CausePair:
    """One bivariate pair: samples ``x``, ``y``, the true ``direction`` ("x->y" or "y->x") and
    the benchmark ``weight``."""

    pair_id: int
    x: np.ndarray
    y: np.ndarray
    direction: str
    weight: float

    @property
    def name(self) -> str:
        return f"pair{self.pair_id:04d}"

    def __len__(self) -> int:
        return len(self.x)


def _reader(root: Path) -> tuple[Callable[[str], str], str]:
    """A function reading a member file by name, and where it reads from."""
    for folder in (root, root / FOLDER):
        if (folder / META).is_file():
            return (lambda name: (folder / name).read_text(errors="replace")), str(folder)
    archive = root / ARCHIVE
    if archive.is_file():
        try:
            with tarfile.open(archive) as tar:
                texts = {Path(m.name).name: tar.extractfile(m).read().decode(errors="replace")
                         for m in tar.getmembers() if m.isfile() and m.name.endswith(".txt")}
        except (tarfile.TarError, OSError, EOFError) as exc:
            raise DataError(f"{archive}: not a readable tar.gz archive ({exc})") from None

        def read(name: str) -> str:
            if name not in texts:
                raise DataError(f"{archive}: has no {name}; is it the v1.0 release?")
            return texts[name]

        return read, str(archive)
    raise missing_files_error(NAME, root, [f"{ARCHIVE} (the release tarball), or",
                                           f"its extracted files ({META}, pair0001.txt, ...) "
                                           f"directly or in {FOLDER}/"])


def _parse_meta(text: str, where: str) -> list[tuple[int, str, float]]:
    """(pair id, direction, weight) of every bivariate pair in ``pairmeta.txt``."""
    pairs = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        fields = line.split()
        try:
            pair_id, c1, c2, e1, e2 = (int(f) for f in fields[:5])
            weight = float(fields[5])
        except (ValueError, IndexError):
            raise DataError(f"{where}/{META} line {number}: expected 'id cause_first cause_last "
                            f"effect_first effect_last weight', got {line.strip()!r}") from None
        if c1 == c2 and e1 == e2 and {c1, e1} == {1, 2}:
            pairs.append((pair_id, X_TO_Y if c1 == 1 else Y_TO_X, weight))
    return pairs


def _parse_data(text: str, where: str) -> np.ndarray:
    """Columns 1 and 2 of a whitespace table (extra columns and blank lines ignored)."""
    rows = []
    for number, line in enumerate(text.splitlines(), 1):
        fields = line.split()
        if not fields:
            continue
        try:
            rows.append((float(fields[0]), float(fields[1])))
        except (ValueError, IndexError):
            raise DataError(f"{where} line {number}: expected two numbers, got "
                            f"{line.strip()[:60]!r}") from None
    data = np.array(rows, dtype=float).reshape(-1, 2)
    if not np.isfinite(data).all():
        raise DataError(f"{where}: non-finite values in columns 1-2")
    return data


def load_pairs(root: str | Path | None = None) -> list[CausePair]:
    """The bivariate pairs, in id order, from ``root`` (module docstring). Missing files raise
    :class:`~edgecompress.errors.DataNotFoundError` saying what to put where."""
    directory = Path(root).expanduser() if root is not None else default_root(NAME)
    read, where = _reader(directory)
    pairs = []
    for pair_id, direction, weight in _parse_meta(read(META), where):
        name = f"pair{pair_id:04d}.txt"
        data = _parse_data(read(name), f"{where}/{name}")
        pairs.append(CausePair(pair_id=pair_id, x=data[:, 0], y=data[:, 1],
                               direction=direction, weight=weight))
    return pairs
