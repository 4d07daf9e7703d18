"""Word-level text corpora (ptb / text): reading, vocabulary, <eos>/<unk>, the batchified
windows language models train on, and bad input."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest
import torch

from edgecompress import data
from edgecompress.data import TokenStream, TokenWindows
from edgecompress.errors import DataError, DataNotFoundError, UnknownNameError


def write_splits(root: Path, train: str, test: str = "b a\n", valid: str = "a\n",
                 prefix: str = "", gz: bool = False) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for split, text in (("train", train), ("valid", valid), ("test", test)):
        name = f"{prefix}{split}.txt" + (".gz" if gz else "")
        raw = text.encode()
        (root / name).write_bytes(gzip.compress(raw) if gz else raw)
    return root


def test_eos_after_every_line_vocabulary_in_order_of_first_appearance(tmp_path):
    root = write_splits(tmp_path, "the cat sat\n\nthe  dog\n", test="the fish sat\n")
    train = data.load("text", root=root)
    assert train.vocab == ["the", "cat", "sat", "<eos>", "dog", "<unk>"]
    assert train.decode(train.tokens) == ["the", "cat", "sat", "<eos>", "<eos>", "the", "dog",
                                          "<eos>"]
    assert train.task == "language-modelling" and train.num_classes == 6
    assert train.input_shape == (1,) and len(train) == 8 and int(train[1]) == 1
    test = data.load("text", root=root, split="test")
    assert test.vocab == train.vocab
    assert test.decode(test.tokens) == ["the", "<unk>", "sat", "<eos>"]


def test_ptb_names_gzip_valid_split_and_unk_kept_once(tmp_path):
    root = write_splits(tmp_path, "a <unk> b\n", valid="b c\n", prefix="ptb.", gz=True)
    valid = data.load("ptb", root=root, split="valid")
    assert valid.vocab == ["a", "<unk>", "b", "<eos>"]
    assert valid.decode(valid.tokens) == ["b", "<unk>", "<eos>"]
    assert len(data.load("ptb", root=root, limit=2)) == 2


def test_windows_are_the_standard_batchify(tmp_path):
    stream = TokenStream(torch.arange(23), [str(i) for i in range(23)])
    windows = stream.windows(batch_size=3, bptt=3)
    # 23 // 3 = 7 columns: rows 0-6, 7-13, 14-20 (21, 22 dropped); 6 targets per row
    assert len(windows) == 2
    x0, y0 = windows[0]
    assert x0.tolist() == [[0, 1, 2], [7, 8, 9], [14, 15, 16]]
    assert y0.tolist() == [[1, 2, 3], [8, 9, 10], [15, 16, 17]]
    x1, y1 = windows[1]  # row r of window 1 continues row r of window 0
    assert x1.tolist() == [[3, 4, 5], [10, 11, 12], [17, 18, 19]]
    assert y1.tolist() == [[4, 5, 6], [11, 12, 13], [18, 19, 20]]
    with pytest.raises(IndexError):
        windows[2]


def test_each_process_takes_its_own_rows_of_the_same_grid():
    tokens = torch.arange(40)
    whole = TokenWindows(tokens, batch_size=4, bptt=4)
    parts = [TokenWindows(tokens, batch_size=4, bptt=4, rank=r, world_size=2) for r in (0, 1)]
    assert len(parts[0]) == len(parts[1]) == len(whole) == 3
    for i in range(len(whole)):
        for j in (0, 1):  # inputs, targets
            assert torch.equal(torch.cat([parts[0][i][j], parts[1][i][j]]), whole[i][j])
    assert parts[0][0][0][:, 0].tolist() == [0, 10] and parts[1][0][0][:, 0].tolist() == [20, 30]


def test_too_short_a_stream_for_the_batch_is_a_clear_error():
    stream = TokenStream(torch.arange(5), list("abcde"), source="tiny.txt")
    with pytest.raises(DataError, match="tiny.txt: 5 tokens are too few for 4 rows"):
        stream.windows(4, 2)


def test_missing_files_name_what_is_expected(tmp_path):
    with pytest.raises(DataNotFoundError) as info:
        data.load("ptb", root=tmp_path, split="test")
    message = str(info.value)
    assert "train.txt or ptb.train.txt" in message and "test.txt or ptb.test.txt" in message
    assert "vocabulary is built from it" in message and "valid" not in message
    (tmp_path / "train.txt").write_text("a b\n")
    with pytest.raises(DataNotFoundError, match="test.txt or ptb.test.txt"):
        data.load("text", root=tmp_path, split="test")


def test_bad_text_files_and_options(tmp_path):
    write_splits(tmp_path, "a b\n", test="")
    with pytest.raises(DataError, match="test.txt: the file is empty"):
        data.load("text", root=tmp_path, split="test")
    (tmp_path / "valid.txt").write_bytes(b"\xff\xfe bad")
    with pytest.raises(DataError, match="valid.txt: not a readable UTF-8 text file"):
        data.load("text", root=tmp_path, split="valid")
    with pytest.raises(TypeError, match=r"'text' got unexpected option\(s\) \['lower'\]"):
        data.load("text", root=tmp_path, lower=True)
    with pytest.raises(ValueError, match="defines no augmentation"):
        data.load("text", root=tmp_path, augment=True)
    with pytest.raises(UnknownNameError, match="unknown split 'dev' of dataset 'text'; "
                                               "available: train, valid, test"):
        data.load("text", root=tmp_path, split="dev")
    with pytest.raises(UnknownNameError, match="unknown split 'valid' of dataset "
                                               "'mnist-bundled'; available: train, test"):
        data.load("mnist-bundled", split="valid")


def test_real_penn_treebank(shared_data):
    """The Mikolov PTB: 10,000 words with <eos>; 929,589 / 73,760 / 82,430 tokens."""
    root = shared_data("ptb")
    train = data.load("ptb", root=root)
    assert train.num_classes == 10_000 and len(train) == 929_589
    assert len(data.load("ptb", root=root, split="valid")) == 73_760
    test = data.load("ptb", root=root, split="test")
    assert len(test) == 82_430 and test.decode(test.tokens[-1:]) == ["<eos>"]
    assert "<unk>" in train.vocab and "N" in train.vocab
