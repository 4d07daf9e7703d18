"""The 8-bit stem: what running a binary ResNet's float first convolution as an 8-bit integer
convolution (weights and inputs through the library's uniform n-bit quantizers, then
``edgecompress.kernels.int8_conv``) costs in accuracy. Writes
benchmarks/results/int8_stem.json; ``python benchmarks/deploy.py --doc-only`` puts it in
docs/deploy.md (the speed side is in deploy.py's whole-model table).

    python benchmarks/int8_stem.py --data-root ../shared/data/cifar10_subset

Per seed: a W1A1 (BNN) ResNet-18 with the ImageNet stem (7x7/2 convolution, 3x3/2 max-pool; the
stem and classifier float) trained on the CIFAR-10 subset (4,000 training images, 32x32), then
frozen twice: as it is, and with its stem convolution converted to 8-bit weights (symmetric per
channel) and 8-bit signed inputs (one step, calibrated by min/max on 512 training images) and run
on the integer kernel. Both are evaluated on the 1,000 test images: top-1, the share of test
images given the same class, and the stem's relative output error; and, for scale, the same for
the float stem's output plus Gaussian noise of that relative size (how sensitive the binary
network is to any perturbation of that size). A run appends to the results file after each seed
and skips the seeds already there.
"""

from __future__ import annotations

import argparse

import torch
from common import load_results, machine, save_results

import edgecompress as ec
from edgecompress.data import load as load_data
from edgecompress.deploy.benchmark import low_bit_stem
from edgecompress.experiment import run
from edgecompress.quantizers import calibrate
from edgecompress.recipe import Recipe

NAME = "int8_stem"
EPOCHS = 30
CALIBRATION = 512


def recipe(seed: int, epochs: int = EPOCHS) -> Recipe:
    return Recipe.from_dict({
        "name": f"cifar10-resnet18-bnn-w1a1-s{seed}",
        "model": {"name": "resnet18", "activation": "hardtanh"},
        "data": {"name": "cifar10", "augment": True},
        "method": {"name": "bnn", "mode": "w1a1"},
        "optimizer": {"name": "adam", "lr": 0.001}, "schedule": {"name": "cosine"},
        "epochs": epochs, "batch_size": 128, "seed": seed})


def with_8bit_stem(model: torch.nn.Module, calibration: torch.Tensor) -> torch.nn.Module:
    """``model`` frozen with its stem convolution at 8 bits on the integer kernel."""
    quantized = ec.convert(model, low_bit_stem(model, 8))  # min/max observer: the default
    calibrate(quantized, [calibration])
    frozen = ec.deploy.freeze(quantized.eval())
    stem = frozen.get_submodule("stem.0")
    assert type(stem).__name__ == "PackedUniformConv2d", type(stem)
    stem.integer_kernel = True  # the kernel's bits on every CPU (its paths agree bit for bit)
    return frozen


def evaluate(seed: int, data_root: str, epochs: int) -> dict:
    torch.manual_seed(seed)
    result = run(recipe(seed, epochs), data_root=data_root, progress=False)
    model = result.model.eval()
    test = load_data("cifar10", data_root, "test")
    train = load_data("cifar10", data_root, "train")
    x = torch.stack([test[i][0] for i in range(len(test))])
    y = torch.tensor([int(test[i][1]) for i in range(len(test))])
    calibration = torch.stack([train[i][0] for i in range(CALIBRATION)])
    plain = ec.deploy.freeze(model)
    eight = with_8bit_stem(model, calibration)
    with torch.no_grad():
        a, b = plain(x).argmax(1), eight(x).argmax(1)
        s_plain = plain.get_submodule("stem.0")(x)
        s_eight = eight.get_submodule("stem.0")(x)
        error = float((s_eight - s_plain).norm() / s_plain.norm())
        # the model's own sensitivity: the float stem's output plus Gaussian noise of the same
        # relative size (per call: the frozen model runs a large batch in chunks) changes this
        # share of the classes
        gen = torch.Generator().manual_seed(seed)

        def perturb(module, inputs, output):
            noise = torch.randn(output.shape, generator=gen)
            return output + noise * (error * output.norm() / noise.norm())

        hook = plain.get_submodule("stem.0").register_forward_hook(perturb)
        c = plain(x).argmax(1)
        hook.remove()
    return {"seed": seed, "top1_float_stem": float((a == y).float().mean() * 100),
            "top1_8bit_stem": float((b == y).float().mean() * 100),
            "same_class": float((a == b).float().mean() * 100),
            "same_class_noise": float((a == c).float().mean() * 100),
            "top1_noise": float((c == y).float().mean() * 100),
            "stem_relative_error": error}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", required=True, help="the CIFAR-10 subset's directory")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=EPOCHS)
    args = parser.parse_args()
    torch.set_num_threads(2)
    results = load_results(NAME)
    results.setdefault("runs", {})
    if results.get("epochs", args.epochs) != args.epochs:
        raise SystemExit(f"{NAME}.json holds runs of {results['epochs']} epochs; delete it to "
                         f"measure {args.epochs}")
    results.update(machine=machine(), epochs=args.epochs, calibration_images=CALIBRATION,
                   model="W1A1 (BNN) ResNet-18 (ImageNet stem, hardtanh; stem and "
                         "classifier float)", data="CIFAR-10 subset (4,000 train / 1,000 test)")
    for seed in args.seeds:
        if str(seed) in results["runs"]:
            continue
        results["runs"][str(seed)] = evaluate(seed, args.data_root, args.epochs)
        save_results(NAME, results)
        print(f"seed {seed}: {results['runs'][str(seed)]}", flush=True)


if __name__ == "__main__":
    main()
