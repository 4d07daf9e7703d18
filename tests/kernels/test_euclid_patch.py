"""EuclidNet's per-patch kernels: the forward term (in place on the convolution's output) and
its input gradient equal their torch references bit for bit on ragged shapes, every stride,
padding, group count and memory layout, on every dispatch path and 1 and 2 threads; the references are the term's
formula and its exact gradient (to float rounding); bad geometry is a clear error."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F

from edgecompress import kernels as K

# (batch, channels, groups, height, width, out channels per group)
SHAPES = [(1, 1, 1, 1, 1, 1), (2, 3, 1, 5, 7, 5), (3, 6, 2, 8, 9, 3), (1, 16, 1, 11, 6, 16),
          (2, 12, 4, 7, 7, 2), (1, 17, 1, 4, 13, 9)]
# (kernel, stride, padding): padding at most half the kernel (the sum pool's rule)
GEOMETRIES = [((3, 3), (1, 1), (1, 1)), ((3, 3), (2, 2), (1, 1)), ((1, 1), (1, 1), (0, 0)),
              ((1, 1), (2, 2), (0, 0)), ((3, 1), (1, 2), (1, 0)), ((5, 5), (2, 1), (2, 1)),
              ((2, 2), (1, 1), (1, 0)), ((3, 3), (1, 1), (0, 0))]
LAYOUTS = list(itertools.product((False, True), repeat=2))  # (x channels-last, y channels-last)


def _output_size(shape, geometry):
    (kernel, stride, padding), (h, w) = geometry, shape[3:5]
    return tuple(K.conv_output_size(size, k, s, p, 1)
                 for size, k, s, p in zip((h, w), kernel, stride, padding))


# every shape with every geometry whose kernel fits its image
CASES = [(shape, geometry) for shape in SHAPES for geometry in GEOMETRIES
         if min(_output_size(shape, geometry)) >= 1]


def _operands(shape, geometry, seed, x_last, y_last):
    n, c, groups, h, w, per = shape
    oh, ow = _output_size(shape, geometry)
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, c, h, w, generator=g) * 2
    y = torch.randn(n, groups * per, oh, ow, generator=g) * 5
    layout = {True: torch.channels_last, False: torch.contiguous_format}
    return x.contiguous(memory_format=layout[x_last]), y.contiguous(memory_format=layout[y_last])


@pytest.mark.parametrize("x_last, y_last", LAYOUTS)
@pytest.mark.parametrize("shape, geometry", CASES)
def test_euclid_patch_and_grad_bit_exact(shape, geometry, x_last, y_last):
    x, y = _operands(shape, geometry, sum(shape), x_last, y_last)
    groups = shape[2]
    for half in (0.5, 0.15, torch.tensor(0.35)):
        expected = K.euclid_patch_reference(y, x, half, *geometry, groups)
        expected_grad = K.euclid_patch_grad_reference(y, x, half, *geometry, groups)
        for path, threads in itertools.product(K.supported_paths(), (1, 2)):
            out = y.clone()  # keeps y's layout
            assert K.euclid_patch(out, x, half, *geometry, groups, path=path,
                                  threads=threads) is out
            assert torch.equal(out, expected)
            grad = K.euclid_patch_grad(y, x, half, *geometry, groups, path=path,
                                       threads=threads)
            assert torch.equal(grad, expected_grad)
            assert grad.is_contiguous(memory_format=torch.channels_last if x_last
                                      else torch.contiguous_format)
            # adding into a gradient of x's layout, in place
            base = x * 3  # (x's layout)
            added = K.euclid_patch_grad(y, x, half, *geometry, groups, add_to=base.clone(),
                                        path=path, threads=threads)
            assert torch.equal(added, base + expected_grad)


@pytest.mark.parametrize("x_last, y_last", LAYOUTS)
@pytest.mark.parametrize("shape, geometry", CASES[::3])
def test_euclid_patch_shift_bit_exact(shape, geometry, x_last, y_last):
    """The per-channel shift, given or computed by the kernel from the convolution's weight
    and bias (euclid_shift_reference's order), added before the term."""
    x, y = _operands(shape, geometry, sum(shape) + 1, x_last, y_last)
    n, c, groups, _, _, per = shape
    g = torch.Generator().manual_seed(sum(shape))
    weight = torch.randn(groups * per, c // groups, *geometry[0], generator=g)
    bias = torch.randn(groups * per, generator=g)
    for half, b in ((0.5, bias), (0.15, None), (torch.tensor(0.35), bias)):
        shift = K.euclid_shift_reference(weight, b, half)
        expected = K.euclid_patch_reference(y, x, half, *geometry, groups, shift)
        for path in K.supported_paths():
            given = K.euclid_patch(y.clone(), x, half, *geometry, groups, shift=shift,
                                   path=path)
            computed = K.euclid_patch(y.clone(), x, half, *geometry, groups, weight=weight,
                                      bias=b, path=path)
            assert torch.equal(given, expected) and torch.equal(computed, expected)
    # the shift is the formula (to rounding) and the reference adds it before the term
    torch.testing.assert_close(shift, bias - 0.35 * weight.flatten(1).square().sum(1))
    torch.testing.assert_close(expected, K.euclid_patch_reference(y, x, 0.35, *geometry, groups)
                               + shift.view(1, -1, 1, 1))


def test_euclid_patch_references_are_the_formula_and_its_gradient():
    """``y - half * sum over windows of sum_c x^2`` (per group), and autograd's gradient of it
    w.r.t. x (different summation order: equal to rounding)."""
    torch.manual_seed(0)
    x = torch.randn(2, 6, 7, 8, dtype=torch.float64)
    y = torch.randn(2, 4, 4, 8, dtype=torch.float64)
    grad = torch.randn_like(y)
    kernel, stride, padding, groups, half = (3, 3), (2, 1), (1, 1), 2, 0.3
    xr = x.clone().requires_grad_()
    s = xr.square().unflatten(1, (groups, -1)).sum(2)
    ones = torch.ones(groups, 1, *kernel, dtype=x.dtype)
    planes = F.conv2d(s, ones, None, stride, padding, groups=groups)  # window sums
    formula = (y.unflatten(1, (groups, -1)) - half * planes.unsqueeze(2)).flatten(1, 2)
    formula.backward(grad)
    torch.testing.assert_close(K.euclid_patch_reference(y, x, half, kernel, stride, padding,
                                                        groups), formula.detach())
    torch.testing.assert_close(K.euclid_patch_grad_reference(grad, x, half, kernel, stride,
                                                             padding, groups), xr.grad)


def test_euclid_patch_falls_back_to_the_reference_off_its_layouts():
    """A non-float32 or strided y gets the reference's new tensor (y untouched)."""
    x = torch.randn(1, 2, 5, 5)
    y = torch.randn(1, 3, 5, 5, dtype=torch.float64)
    out = K.euclid_patch(y, x, 0.5, (3, 3), (1, 1), (1, 1))
    assert out is not y and out.dtype == torch.float64
    strided = torch.randn(1, 3, 5, 10)[..., ::2]
    before = strided.clone()
    out = K.euclid_patch(strided, x, 0.5, (3, 3), (1, 1), (1, 1))
    assert torch.equal(strided, before)
    assert torch.equal(out, K.euclid_patch_reference(before, x, 0.5, (3, 3), (1, 1), (1, 1)))


def test_euclid_patch_checks_geometry():
    x, y = torch.zeros(1, 4, 6, 6), torch.zeros(1, 4, 6, 6)
    with pytest.raises(ValueError, match="at most half the kernel"):
        K.euclid_patch(y, x, 0.5, (3, 3), (1, 1), (2, 2))
    with pytest.raises(ValueError, match=r"output \(6, 6\).*y is \(1, 4, 3, 3\)"):
        K.euclid_patch(torch.zeros(1, 4, 3, 3), x, 0.5, (3, 3), (1, 1), (1, 1))
    with pytest.raises(ValueError, match="3 group"):
        K.euclid_patch_grad(y, x, 0.5, (3, 3), (1, 1), (1, 1), groups=3)
    with pytest.raises(ValueError, match=r"x \(N, C, H, W\)"):
        K.euclid_patch(y, torch.zeros(4, 6, 6), 0.5, (3, 3), (1, 1), (1, 1))
    with pytest.raises(ValueError, match=r"shift needs one value per output channel \(4,\)"):
        K.euclid_patch(y, x, 0.5, (3, 3), (1, 1), (1, 1), shift=torch.zeros(3))
    with pytest.raises(ValueError, match=r"weight needs the shape \(4, 4, 3, 3\)"):
        K.euclid_patch(y, x, 0.5, (3, 3), (1, 1), (1, 1), weight=torch.zeros(4, 4, 1, 1))
    with pytest.raises(ValueError, match=r"add_to needs x's shape"):
        K.euclid_patch_grad(y, x, 0.5, (3, 3), (1, 1), (1, 1), add_to=torch.zeros(1, 4, 6))
