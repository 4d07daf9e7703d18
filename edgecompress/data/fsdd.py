"""Free Spoken Digit Dataset (FSDD): spoken digits 0-9, 8 kHz, as log-mel "images".

Reads either the WAV recordings (``{digit}_{speaker}_{take}.wav`` in ``root`` or
``root/recordings``) or one ``.npz`` pack of them (arrays ``audio`` int16 concatenated,
``offsets``, ``label``, ``take``, ``sample_rate``). The official split: takes 0-4 are the test set
(300 clips), takes 5-49 the training set (2,700). ``speakers`` keeps only the clips of those
speakers, ``exclude_speakers`` drops those speakers' clips (a task split by speaker, e.g. for
transfer learning); names as in the file names (george, jackson, lucas, nicolas, theo,
yweweler in the release used here).

Each clip is centre-cropped or zero-padded to ``seconds`` (default 1 s), turned into a 40-bin
log-mel spectrogram (25.6 ms windows, 10 ms hop: 101 frames) with :func:`~.audio.log_mel`, and
stored as an 8-bit image: decibels relative to the clip's loudest bin, clipped to [-80, 0] dB,
in 256 steps (0.31 dB). Items are those images normalised like any other image dataset, shape
(1, n_mels, frames). The dataset's ``preprocessing`` (:class:`LogMelPreprocessing`) repeats all
of this on one clip.
"""

from __future__ import annotations

import re
from pathlib import Path
from dataclasses import dataclass
from typing import Any, ClassVar, Sequence

import numpy as np
import torch

from ..errors import DataError
from .audio import fit_length, log_mel, read_wav
from .base import ImageDataset, check_split, missing_files_error
from .preprocess import (ImagePreprocessing, Preprocessing, check_positive_int,
                         register_preprocessing)

NAME = "fsdd"
CLASSES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
TEST_TAKES = 5  # takes 0..4
DYNAMIC_RANGE_DB = 80.0
MEAN, STD = (0.24,), (0.30,)  # of the 8-bit training features / 255 (rounded)
_WAV = re.compile(r"^(\d)_([A-Za-z]+)_(\d+)\.wav$")


def _from_npz(path: Path) -> tuple[list[np.ndarray], np.ndarray, np.ndarray, np.ndarray, int]:
    try:
        with np.load(path, allow_pickle=False) as pack:
            audio, offsets = pack["audio"], pack["offsets"]
            labels, takes = pack["label"].astype(np.int64), pack["take"].astype(np.int64)
            rate = int(pack["sample_rate"])
            names = pack["speaker_names"] if "speaker_names" in pack.files else None
            speakers = (names[pack["speaker"]].astype(str) if names is not None
                        else np.full(len(labels), "", dtype=object))
    except (KeyError, ValueError, OSError) as exc:
        raise DataError(f"{path}: not an FSDD pack (arrays audio, offsets, label, take, "
                        f"sample_rate): {exc}") from None
    if len(offsets) != len(labels) + 1 or offsets[-1] != len(audio):
        raise DataError(f"{path}: offsets do not match the audio ({len(offsets)} offsets, "
                        f"{len(labels)} labels, {len(audio)} samples)")
    clips = [audio[offsets[i]:offsets[i + 1]] for i in range(len(labels))]
    return clips, labels, takes, speakers, rate


def _from_wavs(files: list[Path]
               ) -> tuple[list[np.ndarray], np.ndarray, np.ndarray, np.ndarray, int]:
    clips, labels, takes, speakers, rates = [], [], [], [], set()
    for f in files:
        digit, speaker, take = _WAV.match(f.name).groups()  # type: ignore[union-attr]
        samples, rate = read_wav(f)
        clips.append(samples)
        labels.append(int(digit))
        takes.append(int(take))
        speakers.append(speaker)
        rates.add(rate)
    if len(rates) != 1:
        raise DataError(f"FSDD recordings have mixed sample rates {sorted(rates)}")
    return clips, np.array(labels), np.array(takes), np.array(speakers), rates.pop()


def _speaker_mask(speakers: np.ndarray, keep: Sequence[str] | None,
                  drop: Sequence[str] | None, source: str) -> np.ndarray:
    """Which clips the ``speakers`` / ``exclude_speakers`` options keep; a name no clip has is
    an error listing the speakers there are."""
    if keep is not None and drop is not None:
        raise ValueError(f"dataset {NAME!r}: give speakers or exclude_speakers, not both")
    chosen = keep if keep is not None else drop
    if chosen is None:
        return np.ones(len(speakers), dtype=bool)
    option = "speakers" if keep is not None else "exclude_speakers"
    if isinstance(chosen, str) or not chosen or not all(isinstance(s, str) for s in chosen):
        raise ValueError(f"dataset {NAME!r}: {option} must be a non-empty list of speaker "
                         f"names, got {chosen!r}")
    known = sorted(set(speakers.tolist()) - {""})
    if not known:
        raise DataError(f"{source}: the pack has no speaker names (arrays speaker and "
                        f"speaker_names), so {option} cannot be applied")
    unknown = sorted(set(chosen) - set(known))
    if unknown:
        raise ValueError(f"dataset {NAME!r}: unknown speaker(s) {', '.join(unknown)} in "
                         f"{option}; speakers in {source}: {', '.join(known)}")
    listed = np.isin(speakers, list(chosen))
    return listed if keep is not None else ~listed


def features(clips: list[np.ndarray], sample_rate: int, seconds: float = 1.0,
             n_mels: int = 40) -> torch.Tensor:
    """uint8 (N, 1, n_mels, frames) log-mel images of int16 clips (see the module docstring)."""
    length = int(round(seconds * sample_rate))
    hop = sample_rate // 100  # 10 ms
    n_fft = 1 << (int(0.025 * sample_rate) - 1).bit_length()  # >= 25 ms, a power of two
    batch = np.stack([fit_length(c, length) for c in clips]).astype(np.float32) / 32768.0
    db = log_mel(torch.from_numpy(batch), sample_rate, n_mels, n_fft, hop)
    relative = db - db.amax(dim=(-2, -1), keepdim=True)
    scaled = (relative.clamp(-DYNAMIC_RANGE_DB, 0.0) + DYNAMIC_RANGE_DB) / DYNAMIC_RANGE_DB
    return torch.round(scaled * 255).to(torch.uint8).unsqueeze(1)


@register_preprocessing("log-mel")
@dataclass(frozen=True)
class LogMelPreprocessing(Preprocessing):
    """int16 mono samples at ``sample_rate`` -> the clip centre-cropped or zero-padded to
    ``seconds`` -> :func:`features` (``n_mels`` bins) -> normalised with ``mean`` / ``std``
    like an image: exactly a FSDD item."""

    sample_rate: int
    seconds: float
    n_mels: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    sample: ClassVar[str] = "audio"

    def __post_init__(self) -> None:
        check_positive_int("sample_rate", self.sample_rate)
        check_positive_int("n_mels", self.n_mels)
        if isinstance(self.seconds, bool) or not isinstance(self.seconds, (int, float)) \
                or self.seconds <= 0:
            raise ValueError(f"seconds must be a positive number, got {self.seconds!r}")
        frames = 1 + int(round(self.seconds * self.sample_rate)) // (self.sample_rate // 100)
        object.__setattr__(self, "_image", ImagePreprocessing(1, self.n_mels, frames,
                                                              tuple(self.mean), tuple(self.std)))
        object.__setattr__(self, "mean", self._image.mean)
        object.__setattr__(self, "std", self._image.std)

    def apply(self, raw: Any, source: str) -> torch.Tensor:
        """``raw``: (int16 samples (n,), sample rate)."""
        samples, rate = raw
        samples = np.asarray(samples)
        if samples.dtype != np.int16 or samples.ndim != 1:
            raise DataError(f"{source}: got {samples.dtype} samples of shape {samples.shape}, "
                            f"the model expects int16 mono samples (n,)")
        if rate != self.sample_rate:
            raise DataError(f"{source}: sample rate {rate} Hz, the model expects "
                            f"{self.sample_rate} Hz (resample the clip first)")
        image = features([samples], rate, self.seconds, self.n_mels)[0]
        return self._image.apply(image, source)  # type: ignore[attr-defined]


def load_fsdd(root: Path, split: str, seconds: float = 1.0, n_mels: int = 40,
              speakers: Sequence[str] | None = None,
              exclude_speakers: Sequence[str] | None = None, **options: Any) -> ImageDataset:
    """The ``split`` of FSDD from ``root`` (WAV recordings or an .npz pack), as log-mel images,
    of the chosen speakers (all by default)."""
    if options:
        raise TypeError(f"dataset {NAME!r} got unexpected option(s) {sorted(options)}; it takes "
                        f"seconds, n_mels, speakers and exclude_speakers")
    check_split(split, NAME)
    folder = root / "recordings" if (root / "recordings").is_dir() else root
    wavs = sorted(p for p in folder.glob("*.wav") if _WAV.match(p.name)) if folder.is_dir() else []
    packs = sorted(root.glob("*.npz")) if root.is_dir() else []
    if wavs:
        clips, labels, takes, voices, rate = _from_wavs(wavs)
        source = str(folder)
    elif len(packs) == 1:
        clips, labels, takes, voices, rate = _from_npz(packs[0])
        source = str(packs[0])
    else:
        if len(packs) > 1:
            raise DataError(f"{root}: several .npz files ({', '.join(p.name for p in packs)}); "
                            f"keep the FSDD pack only")
        raise missing_files_error(NAME, root, [
            "the FSDD recordings {digit}_{speaker}_{take}.wav (mono 16-bit PCM), here or in "
            "recordings/",
            "or one .npz pack with arrays audio (int16, all clips concatenated), offsets, label, "
            "take and sample_rate",
        ])
    keep = (takes < TEST_TAKES) if split == "test" else (takes >= TEST_TAKES)
    keep &= _speaker_mask(voices, speakers, exclude_speakers, source)
    chosen = [c for c, k in zip(clips, keep) if k]
    if not chosen:
        raise DataError(f"{source}: no clips in the {split} split (takes "
                        f"{'0-4' if split == 'test' else '5 and up'}) of the chosen speakers")
    images = features(chosen, rate, seconds, n_mels)
    return ImageDataset(images, torch.from_numpy(labels[keep]), CLASSES, MEAN, STD,
                        source=source, preprocessing=LogMelPreprocessing(rate, seconds, n_mels,
                                                                         MEAN, STD))
