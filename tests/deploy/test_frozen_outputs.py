"""Frozen models give exactly the outputs pinned in stored/frozen_outputs.safetensors.

The file holds, per case, a converted model's weights, an input, the hardened training form's
output and the frozen model's output as the code computed them when the file was written (see
stored/make_frozen_outputs.py). Any change to freeze, the packed layers, the kernels or the file
format that moves a frozen output by one bit fails here. The float layers around the packed ones
run on torch's kernels, whose rounding may differ on another CPU: when the training form's own
output differs from the stored one, this machine's float arithmetic differs, and the frozen
outputs are held to a tight tolerance instead; so are they when the C kernels are not built (the
PyTorch reference path of the W1A32 layers is a float matmul that rounds differently).
"""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

import edgecompress as ec

from .stored.make_frozen_outputs import CASES, OUT, build, trained_form

STORED = load_file(str(OUT))


def case(name: str) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    prefix = f"{name}/state/"
    state = {k[len(prefix):]: v for k, v in STORED.items() if k.startswith(prefix)}
    return state, {k: STORED[f"{name}/{k}"] for k in ("input", "trained", "frozen")}


def assert_same(actual: torch.Tensor, expected: torch.Tensor, exact: bool) -> None:
    if exact:
        assert torch.equal(actual, expected), f"max diff {(actual - expected).abs().max()}"
    else:
        torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", list(CASES))
def test_frozen_outputs_are_bit_exact_with_the_stored_ones(name, tmp_path):
    state, io = case(name)
    with torch.no_grad():
        same_float = torch.equal(trained_form(name, state)(io["input"]), io["trained"])
        exact = same_float and ec.kernels.available()
        model = build(name)
        model.load_state_dict(state)
        frozen = ec.deploy.freeze(model)
        assert_same(frozen(io["input"]), io["frozen"], exact=exact)
        ec.deploy.save(frozen, tmp_path / "m.safetensors")
        loaded = ec.deploy.load(tmp_path / "m.safetensors")
        assert_same(loaded(io["input"]), io["frozen"], exact=exact)
