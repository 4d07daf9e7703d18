"""Input files -> model inputs, preprocessed exactly as the datasets make their items."""

from __future__ import annotations

import wave

import numpy as np
import pytest
import torch
from PIL import Image

from edgecompress import data
from edgecompress.data.fsdd import LogMelPreprocessing
from edgecompress.data.inputs import read_input
from edgecompress.errors import DataError

RATE = 8000


def write_wav(path, samples, rate=RATE, channels=1):
    with wave.open(str(path), "wb") as f:
        f.setnchannels(channels), f.setsampwidth(2), f.setframerate(rate)
        f.writeframes(np.asarray(samples, np.int16).tobytes())
    return path


def clips():
    """Three synthetic clips: shorter than, as long as and longer than one second."""
    rng = np.random.default_rng(0)
    out = []
    for i, n in enumerate((5000, RATE, 9500)):
        t = np.arange(n) / RATE
        tone = 3000 * np.sin(2 * np.pi * (300 + 250 * i) * t) + rng.normal(0, 300, n)
        out.append(tone.astype(np.int16))
    return out


def test_a_wav_clip_is_preprocessed_as_the_fsdd_pipeline_makes_its_item(tmp_path):
    folder = tmp_path / "fsdd"
    folder.mkdir()
    for i, samples in enumerate(clips()):  # takes 0-4: the test split
        write_wav(folder / f"{i}_synthetic_{i}.wav", samples)
    dataset = data.load("fsdd", root=folder, split="test")
    assert isinstance(dataset.preprocessing, LogMelPreprocessing)
    for i in range(len(dataset)):
        x = read_input(folder / f"{i}_synthetic_{i}.wav", dataset.input_shape,
                       dataset.preprocessing)
        assert x.shape == (1, *dataset.input_shape)
        assert torch.equal(x[0], dataset[i][0])
    np.save(tmp_path / "samples.npy", clips()[0])  # raw int16 samples in an array
    assert torch.equal(read_input(tmp_path / "samples.npy", dataset.input_shape,
                                  dataset.preprocessing)[0], dataset[0][0])


def test_a_clip_at_another_rate_or_in_stereo_is_refused(tmp_path):
    pre = LogMelPreprocessing(RATE, 1.0, 40, (0.24,), (0.30,))
    shape = (1, 40, 101)
    write_wav(tmp_path / "fast.wav", clips()[0], rate=16000)
    with pytest.raises(DataError, match="fast.wav: sample rate 16000 Hz, the model expects "
                                        "8000 Hz"):
        read_input(tmp_path / "fast.wav", shape, pre)
    write_wav(tmp_path / "stereo.wav", np.zeros(200), channels=2)
    with pytest.raises(DataError, match="stereo.wav: expected mono 16-bit PCM"):
        read_input(tmp_path / "stereo.wav", shape, pre)


@pytest.fixture
def mnist():
    return data.load("mnist-bundled", split="test").limit(4)


@pytest.mark.parametrize("form", ["png", "npy-hw", "npy-chw", "npy-batch", "npy-float"])
def test_image_inputs_are_preprocessed_as_the_dataset_items(tmp_path, mnist, form):
    pixels = mnist.images[:2, 0].numpy()
    path = tmp_path / ("x.png" if form == "png" else "x.npy")
    if form == "png":
        Image.fromarray(pixels[0]).save(path)
    elif form == "npy-hw":
        np.save(path, pixels[0])
    elif form == "npy-chw":
        np.save(path, pixels[0][None])
    elif form == "npy-batch":
        np.save(path, pixels[:, None])
    else:  # already preprocessed
        np.save(path, torch.stack([mnist[0][0], mnist[1][0]]).numpy())
    x = read_input(path, mnist.input_shape, mnist.preprocessing)
    rows = 1 if form in ("png", "npy-hw", "npy-chw") else 2
    assert torch.equal(x, torch.stack([mnist[i][0] for i in range(rows)]))


def test_a_colour_image_is_read_as_grayscale_for_a_one_channel_model(tmp_path, mnist):
    pixels = mnist.images[0, 0].numpy()
    Image.fromarray(pixels).convert("RGB").save(tmp_path / "rgb.png")
    x = read_input(tmp_path / "rgb.png", mnist.input_shape, mnist.preprocessing)
    assert torch.equal(x[0], mnist[0][0])


@pytest.mark.parametrize("make, message", [
    (lambda p: Image.fromarray(np.zeros((32, 32), np.uint8)).save(p / "x.png"),
     r"x.png: got uint8 pixels of shape \(1, 32, 32\), the model expects uint8 \(1, 28, 28\)"),
    (lambda p: np.save(p / "x.npy", np.zeros((3, 28), np.float32)),
     r"x.npy: array of float32 and shape \(3, 28\) does not fit the model, which expects "
     r"float32 inputs of shape \(1, 28, 28\)"),
    (lambda p: write_wav(p / "x.wav", np.zeros(100)),
     "x.wav: this is a WAV clip, but the model takes images"),
    (lambda p: (p / "x.txt").write_text("7"), "x.txt: this is a text file; predict reads"),
])
def test_an_input_that_does_not_fit_names_the_file_and_both_shapes(tmp_path, mnist, make,
                                                                     message):
    make(tmp_path)
    path = next(p for p in tmp_path.iterdir() if p.name.startswith("x."))
    with pytest.raises(DataError, match=message):
        read_input(path, mnist.input_shape, mnist.preprocessing)
