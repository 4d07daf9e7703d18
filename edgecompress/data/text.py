"""Word-level text corpora for language modelling (the Mikolov Penn Treebank and its format).

A corpus is a folder holding ``{train,valid,test}.txt`` or ``ptb.{train,valid,test}.txt`` (each
optionally gzipped): one sentence per line, tokens separated by spaces. Every line becomes its
words followed by ``<eos>``; the vocabulary is built from the training file in order of first
appearance (plus ``<unk>`` if the training file has none), and a word of another split that is
not in it is read as ``<unk>``. A split loads as a :class:`TokenStream`, the whole split as one
stream of word indices.

For training, :meth:`TokenStream.windows` lays the stream out the standard way ("batchify"):
cut into ``batch_size`` equal rows, read in consecutive windows of ``bptt`` columns, so row ``r``
of window ``i + 1`` continues row ``r`` of window ``i`` and a recurrent state can be carried from
one window to the next (truncated back-propagation through time). Under ``torchrun`` every
process takes its own block of rows of the same grid; nothing is shuffled.
"""

from __future__ import annotations

import gzip
import math
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import Tensor
from torch.utils.data import Dataset

from ..errors import DataError
from .base import check_limit, check_split, missing_files_error

SPLITS = ("train", "valid", "test")
EOS, UNK = "<eos>", "<unk>"
_STEMS = ("{split}.txt", "ptb.{split}.txt")


def split_file(root: Path, split: str) -> Path | None:
    """The file of ``split`` in ``root`` (``<split>.txt``, ``ptb.<split>.txt``, or either
    gzipped), or None."""
    if not root.is_dir():
        return None
    for stem in _STEMS:
        for name in (stem.format(split=split), stem.format(split=split) + ".gz"):
            if (root / name).is_file():
                return root / name
    return None


def read_words(path: Path) -> list[str]:
    """Every word of ``path`` (plain or gzipped UTF-8 text), with ``<eos>`` after each line."""
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
        text = raw.decode("utf-8")
    except (OSError, EOFError, gzip.BadGzipFile, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: not a readable UTF-8 text file (truncated or corrupt?): "
                        f"{type(exc).__name__}: {exc}") from None
    words: list[str] = []
    for line in text.splitlines():
        words.extend(line.split())
        words.append(EOS)
    return words


def build_vocabulary(words: Sequence[str]) -> list[str]:
    """The distinct ``words`` in order of first appearance, ``<unk>`` appended if absent."""
    vocab = list(dict.fromkeys(words))
    if UNK not in vocab:
        vocab.append(UNK)
    return vocab


class TokenStream(Dataset):
    """One split of a corpus as a stream of word indices (int64), with its vocabulary.

    Item ``i`` is the ``i``-th token. ``num_classes`` is the vocabulary size (the output layer of
    a language model) and ``input_shape`` is ``(1,)``: a sample is one token, so a model summary
    counts MACs per token. Training and evaluation read the stream through :meth:`windows`.
    """

    task = "language-modelling"

    def __init__(self, tokens: Tensor, vocab: Sequence[str], *, source: str = "") -> None:
        if tokens.dim() != 1 or tokens.dtype != torch.int64:
            raise DataError(f"{source}: tokens must be int64 (N,), got {tokens.dtype} "
                            f"{tuple(tokens.shape)}")
        if len(tokens) and (int(tokens.min()) < 0 or int(tokens.max()) >= len(vocab)):
            raise DataError(f"{source}: token indices must be in 0..{len(vocab) - 1}, found "
                            f"{int(tokens.min())}..{int(tokens.max())}")
        self.tokens = tokens
        self.vocab = list(vocab)
        self.num_classes = len(self.vocab)
        self.input_shape: tuple[int, ...] = (1,)
        self.source = source
        self.augment = False

    @property
    def can_augment(self) -> bool:
        return False

    def __len__(self) -> int:
        return len(self.tokens)

    def __getitem__(self, index: int) -> Tensor:
        return self.tokens[index]

    def limit(self, n: int | None) -> "TokenStream":
        """Keep only the first ``n`` tokens (in place); returns self. ``None`` keeps all."""
        n = check_limit(n)
        if n is not None:
            self.tokens = self.tokens[:n]
        return self

    def decode(self, tokens: Tensor | Sequence[int]) -> list[str]:
        """The words of token indices."""
        return [self.vocab[int(t)] for t in tokens]

    def windows(self, batch_size: int, bptt: int, rank: int = 0,
                world_size: int = 1) -> "TokenWindows":
        """This stream batchified into ``batch_size`` rows, read ``bptt`` columns at a time;
        process ``rank`` of ``world_size`` keeps its own contiguous block of rows."""
        return TokenWindows(self.tokens, batch_size, bptt, rank, world_size, source=self.source)

    def __repr__(self) -> str:
        return (f"TokenStream({len(self)} tokens, vocabulary {self.num_classes}, "
                f"source={self.source!r})")


class TokenWindows(Dataset):
    """Consecutive (inputs, targets) windows of a batchified token stream.

    The first ``batch_size * (len(tokens) // batch_size)`` tokens form a ``(batch_size, C)`` grid
    whose row ``r`` is the ``r``-th slice of the stream; window ``i`` is ``inputs =
    grid[:, i*bptt : i*bptt + n]`` and ``targets`` the same columns shifted by one, with
    ``n = min(bptt, C - 1 - i*bptt)`` (the last window may be shorter). Process ``rank`` of
    ``world_size`` keeps rows ``tensor_split(range(batch_size), world_size)[rank]``.
    Read it with ``DataLoader(windows, batch_size=None)``, in order.
    """

    def __init__(self, tokens: Tensor, batch_size: int, bptt: int, rank: int = 0,
                 world_size: int = 1, *, source: str = "") -> None:
        if batch_size < 1 or bptt < 1:
            raise ValueError(f"batch_size and bptt must be >= 1, got {batch_size} and {bptt}")
        columns = len(tokens) // batch_size
        if columns < 2:
            raise DataError(f"{source or 'token stream'}: {len(tokens)} tokens are too few for "
                            f"{batch_size} rows of at least 2 tokens each; use a smaller batch "
                            f"size (or more data)")
        grid = tokens[:columns * batch_size].view(batch_size, columns)
        rows = torch.tensor_split(torch.arange(batch_size), world_size)[rank]
        self.grid = grid[rows]
        self.bptt = bptt
        self.columns = columns

    def __len__(self) -> int:
        return math.ceil((self.columns - 1) / self.bptt) if len(self.grid) else 0

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        if not 0 <= index < len(self):
            raise IndexError(f"window {index} out of range (0..{len(self) - 1})")
        start = index * self.bptt
        n = min(self.bptt, self.columns - 1 - start)
        return self.grid[:, start:start + n], self.grid[:, start + 1:start + 1 + n]


def load_text(name: str, root: Path, split: str, **options: Any) -> TokenStream:
    """The ``split`` ("train", "valid" or "test") of the word-level corpus in ``root``."""
    if options:
        raise TypeError(f"dataset {name!r} got unexpected option(s) {sorted(options)}; "
                        f"data.load() accepts root, split and limit")
    check_split(split, name, SPLITS)
    train_file, file = split_file(root, "train"), split_file(root, split)
    if train_file is None or file is None:
        needed = ["train"] if split == "train" else ["train", split]
        raise missing_files_error(name, root, [
            f"{s}.txt or ptb.{s}.txt (or either .gz): one sentence per line, words separated "
            f"by spaces" + (" (the vocabulary is built from it)" if s == "train" != split else "")
            for s in needed])
    vocab = build_vocabulary(read_words(train_file))
    index = {w: i for i, w in enumerate(vocab)}
    words = read_words(file)
    unk = index[UNK]
    tokens = torch.tensor([index.get(w, unk) for w in words], dtype=torch.int64)
    if not len(tokens):
        raise DataError(f"{file}: the file is empty")
    return TokenStream(tokens, vocab, source=str(file))
