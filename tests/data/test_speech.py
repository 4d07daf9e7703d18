"""Speech data: WAV reading, log-mel features, the FSDD loader (WAV folder and .npz pack)."""

from __future__ import annotations

import wave

import numpy as np
import pytest
import torch

import edgecompress as ec
from edgecompress.data.audio import fit_length, log_mel, mel_filterbank, read_wav
from edgecompress.errors import DataError, DataNotFoundError

RATE = 8000


def tone(freq: float, seconds: float = 0.5, rate: int = RATE) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (8000 * np.sin(2 * np.pi * freq * t)).astype(np.int16)


def write_wav(path, samples, rate=RATE, channels=1, width=2):
    with wave.open(str(path), "wb") as f:
        f.setnchannels(channels)
        f.setsampwidth(width)
        f.setframerate(rate)
        f.writeframes(samples.tobytes())


def test_read_wav_round_trip_and_bad_files(tmp_path):
    samples = tone(440.0)
    write_wav(tmp_path / "a.wav", samples)
    got, rate = read_wav(tmp_path / "a.wav")
    assert rate == RATE and np.array_equal(got, samples)
    write_wav(tmp_path / "stereo.wav", np.repeat(samples, 2), channels=2)
    with pytest.raises(DataError, match=r"stereo.wav: expected mono 16-bit PCM, got 2 channel"):
        read_wav(tmp_path / "stereo.wav")
    write_wav(tmp_path / "u8.wav", (samples // 256 + 128).astype(np.uint8), width=1)
    with pytest.raises(DataError, match="u8.wav: expected mono 16-bit PCM, got 1 channel.s. of 8-bit"):
        read_wav(tmp_path / "u8.wav")
    (tmp_path / "junk.wav").write_bytes(b"RIFF\x00\x00")
    with pytest.raises(DataError, match="junk.wav: not a readable PCM WAV file"):
        read_wav(tmp_path / "junk.wav")


def test_mel_filterbank_shape_and_peaks():
    bank = mel_filterbank(40, 256, RATE)
    assert bank.shape == (40, 129) and bank.min() >= 0
    assert (bank.sum(dim=1) > 0).all() and bank.max() <= 1  # no empty filter, peaks <= 1
    centres = bank.argmax(dim=1)
    assert (centres[1:] >= centres[:-1]).all()  # increasing centre frequencies
    with pytest.raises(ValueError, match="f_max"):
        mel_filterbank(40, 256, RATE, f_max=6000)


@pytest.mark.parametrize("freq", [300.0, 1000.0, 2500.0])
def test_log_mel_of_a_tone_peaks_in_the_band_of_its_frequency(freq):
    spec = log_mel(torch.from_numpy(tone(freq).astype(np.float32) / 32768), RATE)
    assert spec.shape == (40, 1 + 4000 // 80)
    band = int(spec[:, 10:-10].mean(dim=1).argmax())
    bank = mel_filterbank(40, 256, RATE)
    bin_of_freq = int(round(freq / (RATE / 2) * 128))
    assert bank[band, bin_of_freq] > 0.3  # the loudest band's filter covers the tone


def test_fit_length_centres_crops_and_pads():
    x = np.arange(10)
    assert fit_length(x, 4).tolist() == [3, 4, 5, 6]
    assert fit_length(x[:3], 7).tolist() == [0, 0, 0, 1, 2, 0, 0]


def _recordings(folder, digits=(0, 1, 2), takes=range(7), speaker="alice"):
    folder.mkdir(parents=True, exist_ok=True)
    for d in digits:
        for take in takes:
            write_wav(folder / f"{d}_{speaker}_{take}.wav",
                      tone(300.0 + 400 * d, 0.3 + 0.05 * take))


def test_fsdd_from_wav_recordings_uses_the_official_split(tmp_path):
    _recordings(tmp_path / "recordings")
    train = ec.data.load("fsdd", root=tmp_path, split="train")
    test = ec.data.load("fsdd", root=tmp_path, split="test")
    assert len(test) == 3 * 5 and len(train) == 3 * 2  # takes 0-4 are the test set
    assert train.input_shape == (1, 40, 101) and train.images.dtype == torch.uint8
    assert sorted(set(test.targets.tolist())) == [0, 1, 2] and test.classes[2] == "two"
    x, y = train[0]
    assert x.shape == (1, 40, 101) and x.dtype == torch.float32
    short = ec.data.load("fsdd", root=tmp_path, split="test", seconds=0.5, n_mels=20)
    assert short.input_shape == (1, 20, 51)


def test_fsdd_npz_pack_gives_the_same_features_as_the_wavs(tmp_path):
    _recordings(tmp_path / "wavs", digits=(4,), takes=range(6))
    clips = [read_wav(tmp_path / "wavs" / f"4_alice_{t}.wav")[0] for t in range(6)]
    offsets = np.cumsum([0] + [len(c) for c in clips])
    (tmp_path / "pack").mkdir()
    np.savez(tmp_path / "pack" / "fsdd.npz", audio=np.concatenate(clips), offsets=offsets,
             label=np.full(6, 4), take=np.arange(6), sample_rate=np.array(RATE))
    a = ec.data.load("fsdd", root=tmp_path / "wavs", split="test")
    b = ec.data.load("fsdd", root=tmp_path / "pack", split="test")
    assert torch.equal(a.images, b.images) and torch.equal(a.targets, b.targets)


def test_fsdd_speakers_and_exclude_speakers_split_by_speaker(tmp_path):
    _recordings(tmp_path, digits=(0, 1), takes=range(5, 7), speaker="alice")
    _recordings(tmp_path, digits=(2,), takes=range(5, 8), speaker="bob")
    alice = ec.data.load("fsdd", root=tmp_path, speakers=["alice"])
    not_alice = ec.data.load("fsdd", root=tmp_path, exclude_speakers=["alice"])
    assert sorted(alice.targets.tolist()) == [0, 0, 1, 1]
    assert not_alice.targets.tolist() == [2, 2, 2]
    assert len(ec.data.load("fsdd", root=tmp_path, speakers=["alice", "bob"])) == 7
    with pytest.raises(ValueError, match="unknown speaker.* carol in speakers; speakers in .*: "
                                         "alice, bob"):
        ec.data.load("fsdd", root=tmp_path, speakers=["carol"])
    with pytest.raises(ValueError, match="speakers or exclude_speakers, not both"):
        ec.data.load("fsdd", root=tmp_path, speakers=["alice"], exclude_speakers=["bob"])
    with pytest.raises(ValueError, match="exclude_speakers must be a non-empty list"):
        ec.data.load("fsdd", root=tmp_path, exclude_speakers="bob")
    with pytest.raises(DataError, match="no clips in the test split .* of the chosen speakers"):
        ec.data.load("fsdd", root=tmp_path, split="test", speakers=["bob"])


def test_fsdd_pack_speakers_come_from_speaker_names(tmp_path):
    clips = [tone(300.0 + 100 * i) for i in range(4)]
    np.savez(tmp_path / "fsdd.npz", audio=np.concatenate(clips),
             offsets=np.cumsum([0] + [len(c) for c in clips]), label=np.array([0, 1, 2, 3]),
             take=np.full(4, 9), speaker=np.array([1, 0, 1, 0]),
             speaker_names=np.array(["ann", "ben"]), sample_rate=np.array(RATE))
    assert ec.data.load("fsdd", root=tmp_path, speakers=["ben"]).targets.tolist() == [0, 2]
    assert ec.data.load("fsdd", root=tmp_path, exclude_speakers=["ben"]).targets.tolist() \
        == [1, 3]


def test_real_fsdd_speaker_split(shared_data):
    root = shared_data("fsdd")
    first = ["george", "jackson", "lucas"]
    pre = ec.data.load("fsdd", root=root, split="test", speakers=first)
    new = ec.data.load("fsdd", root=root, split="test", exclude_speakers=first)
    assert len(pre) == len(new) == 150 and new.num_classes == 10  # 5 takes x 10 digits x 3


def test_fsdd_missing_or_bad_files_are_explained(tmp_path):
    with pytest.raises(DataNotFoundError, match=r"(?s)fsdd.*\{digit\}_\{speaker\}_\{take\}.wav"):
        ec.data.load("fsdd", root=tmp_path / "nowhere")
    (tmp_path / "bad").mkdir()
    np.savez(tmp_path / "bad" / "x.npz", audio=np.zeros(10, np.int16))
    with pytest.raises(DataError, match="not an FSDD pack"):
        ec.data.load("fsdd", root=tmp_path / "bad")
    with pytest.raises(TypeError, match="unexpected option"):
        ec.data.load("fsdd", root=tmp_path, hop=3)


def test_the_kws_resnet_trains_on_speech_features(tmp_path):
    _recordings(tmp_path, digits=(0, 1), takes=range(5, 15))
    train = ec.data.load("fsdd", root=tmp_path, split="train")
    from edgecompress.train import TrainConfig, Trainer
    torch.manual_seed(0)
    model = ec.convert(ec.models.create("kws-resnet", num_classes=10, channels=8, blocks=1),
                       "denseshift", bits=3)
    trainer = Trainer(model, train, None, TrainConfig(epochs=4, batch_size=10, optimizer="adam",
                                                      lr=1e-2, progress=False))
    trainer.fit()
    losses = [h["train_loss"] for h in trainer.history]
    assert losses[-1] < losses[0]
