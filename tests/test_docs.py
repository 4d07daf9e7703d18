"""Docs that cannot rot: every code block and CLI line of README.md and docs/*.md runs, on small
settings (see tests/docs_runner.py); a broken example fails with its document and line."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from .conftest import ENV, DEFAULT
from .docs_runner import (ROOT, DATA_FOLDERS, DocExampleError, blocks, data_dir, run_document,
                          small_training)

DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

#: blocks that cannot run inside a test, and what runs them instead
ALLOWED_SKIPS = {
    "README.md": 2,  # set-up + test commands (CI runs them); torchrun (tests/test_cli.py)
}


def shared_root() -> Path | None:
    root = Path(os.environ[ENV]) if os.environ.get(ENV) else DEFAULT
    return root if root.is_dir() else None


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    for shipped in ("recipes", "examples"):
        (tmp_path / shipped).symlink_to(ROOT / shipped)
    monkeypatch.setenv("EDGECOMPRESS_DATA", str(data_dir(tmp_path, shared_root())))
    small_training(monkeypatch)
    return tmp_path


def have(name: str) -> bool:
    shared = shared_root()
    if name not in DATA_FOLDERS:
        raise DocExampleError(f"doc-test needs unknown dataset {name!r}; known: "
                              f"{', '.join(DATA_FOLDERS)}")
    present = shared is not None and (shared / DATA_FOLDERS[name]).is_dir()
    if not present and os.environ.get(ENV):
        pytest.fail(f"{ENV}={os.environ[ENV]} but it has no {DATA_FOLDERS[name]} folder")
    return present


@pytest.mark.slow
@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_every_example_of_the_document_runs(doc, workdir):
    skipped = run_document(doc, workdir, have)
    assert len(skipped) <= ALLOWED_SKIPS.get(doc.name, 0), skipped


def _assert_fails(doc: Path, text: str, match: str) -> None:
    """A document of ``text`` at ``doc`` fails to run with a DocExampleError matching ``match``."""
    doc.write_text(text)
    with pytest.raises(DocExampleError, match=match):
        run_document(doc, doc.parent, lambda name: True)


def test_a_broken_python_example_fails_naming_its_line(tmp_path, monkeypatch):
    _assert_fails(tmp_path / "broken.md",
                  "# Title\n\n```python\nimport edgecompress\n```\n\ntext\n\n```python\n"
                  "edgecompress.models.create('no-such-model')\n```\n",
                  r"broken.md:9: python example failed: UnknownNameError")


def test_a_broken_cli_line_fails_naming_its_line(tmp_path):
    _assert_fails(tmp_path / "broken.md",
                  "```bash\nedgecompress list          # fine\n"
                  "edgecompress summary no-such-model\n```\n",
                  r"broken.md:3: `edgecompress summary no-such-model` exited with status 2")


def test_a_shell_line_that_is_not_edgecompress_must_be_marked(tmp_path):
    doc = tmp_path / "doc.md"
    _assert_fails(doc, "```bash\nrm -rf runs\n```\n",
                  r"doc.md:2: 'rm' is not an edgecompress command")
    doc.write_text("<!-- doc-test: skip CI runs this -->\n```bash\nrm -rf runs\n```\n")
    assert run_document(doc, tmp_path, lambda name: True) == [f"{doc}:2: CI runs this"]


def test_directives_are_checked(tmp_path):
    doc = tmp_path / "doc.md"
    doc.write_text("<!-- doc-test: skip -->\n```bash\nedgecompress list\n```\n")
    with pytest.raises(DocExampleError, match="skip without a reason"):
        blocks(doc)
    doc.write_text("<!-- doc-test: needs mnist -->\nsome text\n```bash\nedgecompress list\n```\n")
    with pytest.raises(DocExampleError, match="doc.md:1: doc-test directive not followed"):
        blocks(doc)
    doc.write_text("<!-- doc-test: needs mnist -->\n```python\nx = 1\n```\n")
    with pytest.raises(pytest.skip.Exception, match="needs the real dataset"):
        run_document(doc, tmp_path, lambda name: False)
    doc.write_text("```python\nx = 1\n")
    with pytest.raises(DocExampleError, match="never closed"):
        blocks(doc)
