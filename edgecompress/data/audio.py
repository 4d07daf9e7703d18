"""Audio for speech datasets: WAV reading (standard library) and log-mel features (torch).

``log_mel`` follows the usual keyword-spotting front end: a Hann-windowed STFT, the power
spectrum through a bank of triangular filters equally spaced on the HTK mel scale
(mel = 2595 log10(1 + f / 700)), then decibels, 10 log10(power + 1e-10).
"""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..errors import DataError


def read_wav(path: str | Path) -> tuple[np.ndarray, int]:
    """(samples int16 (n,), sample rate) of a mono 16-bit PCM WAV file; anything else is an
    error naming the file and what it holds."""
    path = Path(path)
    try:
        with wave.open(str(path), "rb") as f:
            channels, width, rate, frames = (f.getnchannels(), f.getsampwidth(),
                                             f.getframerate(), f.getnframes())
            raw = f.readframes(frames)
    except (wave.Error, EOFError) as exc:
        raise DataError(f"{path}: not a readable PCM WAV file ({exc})") from None
    if channels != 1 or width != 2:
        raise DataError(f"{path}: expected mono 16-bit PCM, got {channels} channel(s) of "
                        f"{8 * width}-bit samples")
    samples = np.frombuffer(raw, dtype="<i2")
    if len(samples) != frames:
        raise DataError(f"{path}: truncated, {len(samples)} of {frames} samples")
    return samples.copy(), rate


def mel_filterbank(n_mels: int, n_fft: int, sample_rate: int, f_min: float = 20.0,
                   f_max: float | None = None) -> Tensor:
    """(n_mels, n_fft // 2 + 1) triangular filters, peak 1, centres equally spaced in mel."""
    f_max = sample_rate / 2 if f_max is None else f_max
    if not 0 <= f_min < f_max <= sample_rate / 2:
        raise ValueError(f"need 0 <= f_min < f_max <= sample_rate / 2, got {f_min}, {f_max}")
    mel = lambda f: 2595.0 * np.log10(1.0 + np.asarray(f) / 700.0)  # noqa: E731
    hz = lambda m: 700.0 * (10.0 ** (np.asarray(m) / 2595.0) - 1.0)  # noqa: E731
    edges = hz(np.linspace(mel(f_min), mel(f_max), n_mels + 2))
    freqs = np.linspace(0.0, sample_rate / 2, n_fft // 2 + 1)
    lower, centre, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (freqs - lower) / (centre - lower)
    falling = (upper - freqs) / (upper - centre)
    return torch.from_numpy(np.clip(np.minimum(rising, falling), 0.0, None)).to(torch.float32)


def log_mel(waveform: Tensor, sample_rate: int, n_mels: int = 40, n_fft: int = 256,
            hop: int = 80) -> Tensor:
    """Log-mel spectrogram in dB: (..., samples) float -> (..., n_mels, frames), frames =
    1 + samples // hop (centred STFT frames)."""
    window = torch.hann_window(n_fft, dtype=waveform.dtype)
    lead = waveform.shape[:-1]
    spec = torch.stft(waveform.reshape(-1, waveform.shape[-1]), n_fft, hop, window=window,
                      center=True, return_complex=True)
    power = spec.abs().square()  # (batch, n_fft // 2 + 1, frames)
    mels = mel_filterbank(n_mels, n_fft, sample_rate).to(waveform.dtype) @ power
    return (10.0 * torch.log10(mels + 1e-10)).reshape(*lead, n_mels, -1)


def fit_length(samples: np.ndarray, length: int) -> np.ndarray:
    """Centre-crop or zero-pad (evenly on both sides) to exactly ``length`` samples."""
    n = len(samples)
    if n >= length:
        start = (n - length) // 2
        return samples[start:start + length]
    before = (length - n) // 2
    return np.pad(samples, (before, length - n - before))
