"""Where dataset files are looked for, and the error raised when they are absent.

Kept apart from :mod:`edgecompress.data` (whose loaders return torch datasets) so that the
numpy-only parts, such as the cause-effect pairs of :mod:`edgecompress.causal`, find their files
the same way without importing torch.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

from .errors import DataNotFoundError


def default_root(name: str) -> Path:
    """``$EDGECOMPRESS_DATA/<name>`` if that variable is set, else ``~/.edgecompress/data/<name>``."""
    base = os.environ.get("EDGECOMPRESS_DATA")
    return (Path(base).expanduser() if base else Path.home() / ".edgecompress" / "data") / name


def missing_files_error(name: str, root: Path, expected: Sequence[str]) -> DataNotFoundError:
    """The error raised when dataset files are absent (one line): what is expected in which
    directory, and how to point edgecompress elsewhere. Downloads are never attempted."""
    state = "" if root.is_dir() else " (this directory does not exist)"
    return DataNotFoundError(
        f"dataset {name!r}: files not found in {root}{state}; expected there: "
        f"{'; '.join(expected)}. Put the files there, or pass root=<directory> (--data-root on "
        f"the command line), or set EDGECOMPRESS_DATA to a directory containing '{name}/'. "
        f"edgecompress never downloads data."
    )
