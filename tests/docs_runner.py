"""Test helper: run the code examples of a Markdown document, so a doc example that breaks fails.

Every fenced block is run, in the order of the document:

- ``python`` blocks are executed in one namespace per document (a later block may use the names
  an earlier one defined);
- ``bash`` blocks are run line by line; a line is an ``edgecompress ...`` command (the text after
  ``#`` is a comment), run in this process through :func:`edgecompress.cli.main`;
- other fences (``text``, ``yaml``, no language) are output or file listings, not run.

A directive in an HTML comment (invisible once rendered) on the line before a fence changes that:

- ``<!-- doc-test: needs mnist cifar10 -->``: the block reads these real datasets (folders of
  ``../shared/data``); where one is absent the block is not run (nor should any block using its
  names: mark those too), and once the rest has run the document is reported skipped, with the
  reason;
- ``<!-- doc-test: skip REASON -->``: not run; the reason says what runs it instead (only for
  commands that cannot run inside a test, e.g. the set-up script or torchrun).

Small settings: while the examples run, every :class:`~edgecompress.train.Trainer` trains one
epoch on at most ``TRAIN_LIMIT`` samples, and ``$EDGECOMPRESS_DATA`` points at the real datasets
by the names the loaders use. Files the examples write go to the working directory, a temporary
one, where ``recipes/`` and ``examples/`` are the repository's.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shlex
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest

ROOT = Path(__file__).resolve().parents[1]
TRAIN_LIMIT = 256

#: dataset name the loaders use -> folder name in ../shared/data
DATA_FOLDERS = {"mnist": "mnist", "cifar10": "cifar10_subset", "fsdd": "fsdd", "ptb": "ptb"}

_FENCE = re.compile(r"^```(\S*)\s*$")
_DIRECTIVE = re.compile(r"^<!--\s*doc-test:\s*(needs|skip)\b(.*?)-->\s*$")


class DocExampleError(AssertionError):
    """A doc example that failed: names the document, line and example."""


@dataclass
class Block:
    """One fenced code block of a document."""

    doc: Path
    line: int  # of the opening fence, 1-based
    language: str
    code: str
    needs: tuple[str, ...] = ()
    skip: str | None = None

    @property
    def where(self) -> str:
        return f"{self.doc.relative_to(ROOT) if self.doc.is_relative_to(ROOT) else self.doc}:" \
               f"{self.line}"


def blocks(doc: Path) -> list[Block]:
    """The fenced blocks of ``doc`` with their directives; an unclosed fence or a directive with
    no block after it is an error (a typo would otherwise hide an example)."""
    lines = doc.read_text().splitlines()
    found: list[Block] = []
    directive: tuple[str, str, int] | None = None
    i = 0
    while i < len(lines):
        text = lines[i]
        match = _DIRECTIVE.match(text.strip())
        if match:
            directive = (match.group(1), match.group(2).strip(), i + 1)
            i += 1
            continue
        fence = _FENCE.match(text)
        if fence:
            start = i
            i += 1
            while i < len(lines) and not lines[i].startswith("```"):
                i += 1
            if i == len(lines):
                raise DocExampleError(f"{doc}:{start + 1}: code block never closed")
            block = Block(doc, start + 1, fence.group(1), "\n".join(lines[start + 1:i]) + "\n")
            if directive is not None:
                kind, value, _ = directive
                if kind == "needs":
                    block.needs = tuple(value.split())
                elif not value:
                    raise DocExampleError(f"{block.where}: doc-test skip without a reason")
                else:
                    block.skip = value
                directive = None
            found.append(block)
        elif directive is not None and text.strip():
            raise DocExampleError(f"{doc}:{directive[2]}: doc-test directive not followed by a "
                                  f"code block")
        i += 1
    return found


def commands(block: Block) -> list[tuple[int, list[str]]]:
    """The ``edgecompress`` command lines of a bash block, as argument lists with their line
    numbers; any other command is an error (mark the block with a skip directive instead)."""
    found = []
    for offset, text in enumerate(block.code.splitlines(), start=1):
        words = shlex.split(text, comments=True)
        if not words:
            continue
        if words[0] != "edgecompress":
            raise DocExampleError(f"{block.doc}:{block.line + offset}: {words[0]!r} is not an "
                                  f"edgecompress command: the docs test cannot run it (give its "
                                  f"block a `doc-test: skip REASON` directive)")
        found.append((block.line + offset, words[1:]))
    return found


def small_training(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make every Trainer train one epoch on at most TRAIN_LIMIT samples."""
    from edgecompress.train import Trainer

    init = Trainer.__init__

    def capped(self, model, train_set, test_set=None, config=None, *args, **kwargs):
        if config is not None:
            config = dataclasses.replace(config, epochs=min(config.epochs, 1))
        if len(train_set) > TRAIN_LIMIT:
            train_set = train_set.limit(TRAIN_LIMIT)
        init(self, model, train_set, test_set, config, *args, **kwargs)

    monkeypatch.setattr(Trainer, "__init__", capped)


def data_dir(tmp: Path, shared: Path | None) -> Path:
    """A ``$EDGECOMPRESS_DATA`` folder: each loader's name linked to its real dataset."""
    root = tmp / "_data"
    root.mkdir()
    if shared is not None:
        for name, folder in DATA_FOLDERS.items():
            if (shared / folder).is_dir():
                (root / name).symlink_to(shared / folder)
    return root


def run_cli(args: list[str], where: str) -> None:
    from edgecompress.cli import main

    try:
        main(args)
    except SystemExit as exc:
        if exc.code not in (0, None):
            raise DocExampleError(f"{where}: `edgecompress {shlex.join(args)}` exited with "
                                  f"status {exc.code}") from None


def run_document(doc: Path, workdir: Path, have: Callable[[str], bool]) -> list[str]:
    """Run every block of ``doc`` in ``workdir``; return the reasons of the blocks skipped by a
    directive. ``have(name)`` says whether a dataset is available; blocks needing an absent one
    are not run, and once the others have, pytest.skip names them."""
    namespace: dict[str, object] = {"__name__": f"doc:{doc.name}"}
    skipped, no_data = [], []
    old = Path.cwd()
    os.chdir(workdir)
    try:
        for block in blocks(doc):
            if block.skip is not None:
                skipped.append(f"{block.where}: {block.skip}")
                continue
            missing = [n for n in block.needs if not have(n)]
            if missing:
                no_data.append(f"{block.where} needs the real dataset(s) {', '.join(missing)}")
                continue
            if block.language == "python":
                try:
                    exec(compile(block.code, block.where, "exec"), namespace)
                except Exception as exc:
                    raise DocExampleError(
                        f"{block.where}: python example failed: {type(exc).__name__}: {exc}\n"
                        + traceback.format_exc()) from None
            elif block.language in ("bash", "sh", "console"):
                for line, args in commands(block):
                    run_cli(args, f"{block.doc}:{line}")
    finally:
        os.chdir(old)
    if no_data:
        pytest.skip("; ".join(no_data))
    return skipped
