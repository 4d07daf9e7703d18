"""Writes frozen_outputs.safetensors: for each case below, the converted model's weights, an
input batch, the training-form (hardened, eval) output and the frozen model's output, as
computed by the code of the commit that wrote the file. tests/deploy/test_frozen_outputs.py
checks that every later freeze of the same weights gives the same output, bit for bit.

    .venv/bin/python tests/deploy/stored/make_frozen_outputs.py   # only to re-pin on purpose
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import save_file

import edgecompress as ec
from edgecompress.layers import harden

OUT = Path(__file__).with_name("frozen_outputs.safetensors")

#: name -> (model name, model options, method, method options, input shape)
CASES = {
    "mlp_bnn_w1a1": ("mlp", dict(hidden=[96, 80, 64], activation="hardtanh"), "bnn",
                     dict(mode="w1a1"), (1, 28, 28)),
    "mlp_bnnpp_w1a32_channel": ("mlp", dict(hidden=[96, 64], activation="hardtanh"), "bnn++",
                                dict(mode="w1a32", scaling="channel"), (1, 28, 28)),
    "convnet_bnn_w1a1": ("convnet", dict(width=0.5, activation="hardtanh"), "bnn",
                         dict(mode="w1a1"), (1, 28, 28)),
    "resnet20_bnn_w1a1": ("resnet20", dict(width=0.5, activation="hardtanh"), "bnn",
                          dict(mode="w1a1", scaling="channel"), (3, 32, 32)),
    "resnet20_bc_w1a32": ("resnet20", dict(width=0.5), "bc", dict(mode="w1a32"), (3, 32, 32)),
    "resnet20_s3_3bit": ("resnet20", dict(width=0.5), "s3", dict(bits=3), (3, 32, 32)),
    "mlp_denseshift_4bit": ("mlp", dict(hidden=[64, 48]), "denseshift", dict(bits=4),
                            (1, 28, 28)),
    "kws_deepshift_q_3bit": ("kws-resnet", dict(channels=16), "deepshift-q", dict(bits=3),
                             (1, 40, 32)),
}


def build(name: str) -> torch.nn.Module:
    model_name, model_options, method, method_options, shape = CASES[name]
    model = ec.models.create(model_name, input_shape=shape, **model_options)
    return ec.convert(model, method, **method_options)


def trained_form(name: str, state: dict[str, torch.Tensor]) -> torch.nn.Module:
    """The converted model with ``state``, hardened (deployed signs) and in eval mode."""
    model = build(name)
    model.load_state_dict(state)
    return harden(model).eval()


def calibrate_batchnorms(model: torch.nn.Module, shape: tuple[int, ...], seed: int) -> None:
    """Affines far from the identity (signs too) and running statistics of random inputs, so
    folding them matters and the outputs keep a sane scale."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            n = m.num_features
            m.momentum = None  # cumulative average over the calibration batches
            m.weight.data.copy_((torch.rand(n, generator=g) + 0.5) * torch.randn(n, generator=g).sign())
            m.bias.data.copy_(torch.randn(n, generator=g) * 0.3)
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(16, *shape, generator=g))
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.momentum = 0.1
    model.eval()


def main() -> None:
    tensors = {}
    for i, name in enumerate(CASES):
        torch.manual_seed(i)
        model = build(name)
        calibrate_batchnorms(model, CASES[name][4], i)
        x = torch.randn(5, *CASES[name][4], generator=torch.Generator().manual_seed(100 + i))
        with torch.no_grad():
            trained = trained_form(name, model.state_dict())(x)
            frozen = ec.deploy.freeze(model)(x)
        for key, value in model.state_dict().items():
            tensors[f"{name}/state/{key}"] = value.contiguous()
        tensors[f"{name}/input"] = x
        tensors[f"{name}/trained"] = trained.contiguous()
        tensors[f"{name}/frozen"] = frozen.contiguous()
        print(f"{name}: max |frozen - trained| = {(frozen - trained).abs().max():.3g}")
    save_file(tensors, str(OUT))
    print(f"wrote {OUT} ({OUT.stat().st_size / 1024:.0f} KiB)")


if __name__ == "__main__":
    main()
