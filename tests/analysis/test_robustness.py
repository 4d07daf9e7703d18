"""Input corruptions (identity at severity 0, noise statistics, exact pixel moves) and the
robustness evaluation built on them."""

from __future__ import annotations

import pytest
import torch

import edgecompress as ec
from edgecompress.analysis.robustness import (
    CorruptedImages, brightness, check_corruptions, contrast, evaluate_robustness, families,
    family, gaussian_noise, plot_robustness, rotation, sample_generator, translation)
from edgecompress.errors import RobustnessError, UnknownNameError

SHAPES = [(1, 28, 28), (3, 8, 8), (2, 3, 5, 7)]


def _pixels(shape, seed: int = 0) -> torch.Tensor:
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("name", ["noise", "brightness", "contrast", "rotation", "translation"])
@pytest.mark.parametrize("shape", SHAPES)
def test_severity_zero_is_the_identity(name, shape):
    x = _pixels(shape)
    assert torch.equal(family(name).apply(x, 0.0, torch.Generator().manual_seed(1)), x)
    corrupted = family(name).apply(x, family(name).defaults[0], None)
    assert corrupted.shape == x.shape and not torch.equal(corrupted, x)


def test_families_are_listed_in_evaluation_order_with_checked_defaults():
    assert families() == ["noise", "brightness", "contrast", "rotation", "translation"]
    assert check_corruptions(None) == {n: family(n).defaults for n in families()}


def test_gaussian_noise_has_the_asked_sigma_and_is_seeded():
    x = torch.full((8, 3, 32, 32), 0.5)  # far from the clip at 0 and 1 for sigma = 0.1
    diff = gaussian_noise(x, 0.1, torch.Generator().manual_seed(0)) - x
    assert abs(diff.mean().item()) < 0.003
    assert diff.std().item() == pytest.approx(0.1, rel=0.02)
    again = gaussian_noise(x, 0.1, torch.Generator().manual_seed(0))
    assert torch.equal(again - x, diff)
    assert not torch.equal(gaussian_noise(x, 0.1, torch.Generator().manual_seed(1)) - x, diff)
    strong = gaussian_noise(x, 3.0, torch.Generator().manual_seed(0))
    assert strong.min() == 0.0 and strong.max() == 1.0  # clipped to valid pixels


def test_noise_of_one_image_does_not_depend_on_its_batch():
    x = _pixels((3, 1, 6, 6))
    batch = gaussian_noise(x, 0.2, [sample_generator(4, i) for i in range(3)])
    alone = gaussian_noise(x[2:], 0.2, [sample_generator(4, 2)])
    assert torch.equal(batch[2:], alone)
    with pytest.raises(ValueError, match="2 generators for a batch of 3"):
        gaussian_noise(x, 0.2, [sample_generator(4, i) for i in range(2)])


def test_brightness_and_contrast_formulas():
    x = torch.tensor([[[0.0, 0.25], [0.5, 0.95]]])
    torch.testing.assert_close(brightness(x, 0.1), torch.tensor([[[0.1, 0.35], [0.6, 1.0]]]))
    torch.testing.assert_close(brightness(x, -0.3), torch.tensor([[[0.0, 0.0], [0.2, 0.65]]]))
    m = x.mean()
    torch.testing.assert_close(contrast(x, 0.5), m + 0.5 * (x - m))
    torch.testing.assert_close(contrast(x, 1.0), torch.full_like(x, m.item()))
    rgb = _pixels((2, 3, 4, 4))  # one mean per image over its channels and pixels
    torch.testing.assert_close(contrast(rgb, 0.3).mean((1, 2, 3)), rgb.mean((1, 2, 3)))


def test_rotation_turns_counterclockwise_about_the_centre():
    x = _pixels((2, 3, 6, 6))
    torch.testing.assert_close(rotation(x, 90), torch.rot90(x, 1, (-2, -1)))
    torch.testing.assert_close(rotation(x, -90), torch.rot90(x, -1, (-2, -1)))
    wide = torch.zeros(1, 5, 7)  # a non-square image: (row 2, col 5) is 2 pixels right of centre
    wide[0, 2, 5] = 1.0
    turned = rotation(wide, 90)
    assert turned.shape == wide.shape
    assert turned[0, 0, 3].item() == pytest.approx(1.0)  # now 2 pixels above the centre
    assert turned.sum().item() == pytest.approx(1.0)


def test_translation_moves_pixels_right_and_down_exactly():
    x = _pixels((2, 3, 5, 7))
    moved = translation(x, 2)
    assert moved.shape == x.shape
    torch.testing.assert_close(moved[..., 2:, 2:], x[..., :-2, :-2])
    zeros = torch.zeros(2, 3, 2, 7)  # what enters from outside is black (up to rounding)
    torch.testing.assert_close(moved[..., :2, :], zeros)
    torch.testing.assert_close(moved[..., :, :2], zeros.transpose(-1, -2)[..., :5, :])
    torch.testing.assert_close(translation(x, -1)[..., :-1, :-1], x[..., 1:, 1:])
    half = translation(x, 0.5)  # fractional: bilinear between the neighbours
    torch.testing.assert_close(half[..., 1:, 1:], (x[..., 1:, 1:] + x[..., :-1, 1:]
                                                   + x[..., 1:, :-1] + x[..., :-1, :-1]) / 4)


@pytest.mark.parametrize("spec, message", [
    ({"noise": [0.1, -0.1]}, r"noise severity \(sigma\) must be a number >= 0, got -0.1"),
    ({"contrast": [1.5]}, r"contrast severity \(reduction\) must be a number <= 1, got 1.5"),
    ({"rotation": [float("nan")]}, r"rotation severity .* in \[-180, 180\], got nan"),
    ({"brightness": []}, r"'brightness' needs at least one severity"),
])
def test_bad_severities_name_the_family_and_the_range(spec, message):
    with pytest.raises(RobustnessError, match=message):
        check_corruptions(spec)


def test_unknown_family_lists_the_others():
    with pytest.raises(UnknownNameError, match=r"unknown corruption 'blur'; available: "
                                               r"brightness, contrast, noise"):
        check_corruptions({"blur": [1.0]})


@pytest.fixture
def mnist():
    return ec.data.load("mnist-bundled", split="test", limit=30)


def test_corrupted_items_are_normalised_after_the_corruption(mnist):
    clean = CorruptedImages(mnist, "rotation", 0.0)
    assert all(torch.equal(clean[i][0], mnist[i][0]) for i in (0, 7))
    assert clean[7][1] == mnist[7][1]
    bright = CorruptedImages(mnist, "brightness", 0.2)
    expected = mnist.normalization.normalize((mnist.pixels(3) + 0.2).clamp(0, 1))
    torch.testing.assert_close(bright[3][0], expected)


def test_evaluate_robustness_rows_and_batch_size_independence(mnist, tmp_path):
    torch.manual_seed(0)
    model = ec.models.create("mlp", hidden=[16], num_classes=10, input_shape=(1, 28, 28))
    plan = {"noise": [0.2, 0.5], "translation": [3]}
    result = evaluate_robustness(model, mnist, plan, batch_size=7, seed=3)
    assert [(r.family, r.severity, r.unit) for r in result.rows] == [
        ("noise", 0.2, "sigma"), ("noise", 0.5, "sigma"), ("translation", 3.0, "pixels")]
    assert result.samples == 30
    assert result.clean_top1 == ec.train.evaluate(model, mnist)["top1"]
    other = evaluate_robustness(model, mnist, plan, batch_size=64, seed=3)  # the same noise
    assert [r.top1 for r in other.rows] == [r.top1 for r in result.rows]
    assert [r.loss for r in other.rows] == pytest.approx([r.loss for r in result.rows], rel=1e-5)
    reseeded = evaluate_robustness(model, mnist, {"noise": [0.5]}, seed=4)
    assert reseeded.rows[0].loss != pytest.approx(result.rows[1].loss, rel=1e-5)
    assert result.curve("noise") == ([0.0, 0.2, 0.5], [result.clean_top1, result.rows[0].top1,
                                                       result.rows[1].top1])
    assert result.table().splitlines()[3].split()[:3] == ["noise", "0.5", "sigma"]
    plot_robustness(tmp_path / "r.png", {"mlp": result})
    assert (tmp_path / "r.png").read_bytes()[:4] == b"\x89PNG"


def test_only_image_classification_can_be_corrupted(mnist):
    model = torch.nn.Flatten()
    with pytest.raises(RobustnessError, match=r"classifier; this model's task is "
                                              r"'language-modelling'"):
        evaluate_robustness(model, mnist, task="language-modelling")
    tensors = torch.utils.data.TensorDataset(torch.zeros(4, 1, 2, 2), torch.zeros(4).long())
    with pytest.raises(RobustnessError, match="corruptions need an image dataset with raw "
                                              "pixels"):
        evaluate_robustness(model, tensors)
