"""Speed and size of a frozen BinaryViT against the same-size float DeiT in torch (issue 12).

    python benchmarks/binaryvit_speed.py --quick     # 3 rounds
    python benchmarks/binaryvit_speed.py             # 10 rounds

The float model is the same architecture (pyramid, average pooling, pooling branches, affine;
``deit(...)`` with BinaryViT's switches) in float32 eager torch; the binary one is
``deploy.freeze(binaryvit(...))`` with random weights (speed does not depend on them). For
batch 1 and 8 and 1 and 2 threads, the two models run in interleaved rounds (binary, float,
binary, ...) and the ratio is of the medians of the same run. Also: the file sizes of both
(``deploy.save``), and the binary attention kernel (packed q k^T, softmax, {0, a} x +-1 product)
against float attention (torch matmul, softmax, matmul) at every attention shape of the model.
Writes benchmarks/results/binaryvit_speed.json.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Callable

import torch

from common import interleaved, machine, save_results
from edgecompress import deploy
from edgecompress.layers import AttentionCore
from edgecompress.models.vit import binaryvit, deit


def _median_times(fns: dict[str, Callable[[], object]], rounds: int) -> dict[str, float]:
    """Median seconds of each function (one call per round, common.interleaved's rounds)."""
    timed = interleaved(fns, rounds, calls=1, baseline=next(iter(fns)))
    return {name: t["seconds"] for name, t in timed.items()}


def _attention_shapes(model: torch.nn.Module, x: torch.Tensor) -> list[tuple[int, int, int, int]]:
    """(queries, keys, dim, heads) of every attention of the model, once each."""
    shapes: list[tuple[int, int, int, int]] = []

    def hook(core: AttentionCore, inputs: tuple, output: torch.Tensor) -> None:
        shape = (inputs[0].shape[1], inputs[1].shape[1], core.dim, core.heads)
        if shape not in shapes:
            shapes.append(shape)

    handles = [m.register_forward_hook(hook) for m in model.modules()
               if isinstance(m, AttentionCore)]
    with torch.no_grad():
        model(x)
    for h in handles:
        h.remove()
    return shapes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="3 rounds instead of 10")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2],
                        help="thread counts to time (default: 1 and 2)")
    parser.add_argument("--image", type=int, default=224, help="image side (224: the paper's "
                        "configuration; below 224 the mini one)")
    args = parser.parse_args()
    rounds = 3 if args.quick else 10
    shape = (3, args.image, args.image)
    torch.manual_seed(0)
    binary = binaryvit(num_classes=1000, input_shape=shape).eval()
    floats = deit(num_classes=1000, input_shape=shape, pool="avg", pooling_branches=True,
                  affine=True, pyramid=True).eval()
    frozen = deploy.freeze(binary)
    results: dict = {"machine": machine(), "image": shape, "rounds": rounds, "models": {},
                     "attention": []}
    with tempfile.TemporaryDirectory() as tmp:
        sizes = {}
        for name, model in (("binaryvit", frozen), ("deit", deploy.freeze(floats))):
            path = Path(tmp) / f"{name}.safetensors"
            deploy.save(model, path)
            sizes[name] = path.stat().st_size
    results["file_bytes"] = {**sizes, "ratio": sizes["deit"] / sizes["binaryvit"]}
    print(results["machine"])
    print(f"file: BinaryViT {sizes['binaryvit'] / 1e6:.2f} MB, DeiT {sizes['deit'] / 1e6:.2f} MB"
          f" ({results['file_bytes']['ratio']:.1f}x smaller)")
    previous = torch.get_num_threads()
    with torch.no_grad():
        for threads in args.threads:
            torch.set_num_threads(threads)
            for batch in (1, 8):
                x = torch.randn(batch, *shape)
                t = _median_times({"binaryvit": lambda: frozen(x), "deit": lambda: floats(x)},
                                  rounds)
                row = {"threads": threads, "batch": batch, "binaryvit_ms": 1e3 * t["binaryvit"],
                       "deit_ms": 1e3 * t["deit"], "speedup": t["deit"] / t["binaryvit"]}
                results["models"][f"{threads}t_b{batch}"] = row
                print(f"model  threads {threads} batch {batch}: BinaryViT "
                      f"{row['binaryvit_ms']:.1f} ms, DeiT {row['deit_ms']:.1f} ms, "
                      f"{row['speedup']:.2f}x")
            for n, s, dim, heads in _attention_shapes(binary, torch.randn(1, *shape)):
                core = AttentionCore(dim, heads, binary=True).eval()
                packed = deploy.PackedAttentionCore.from_trained(core)
                reference = AttentionCore(dim, heads, binary=False).eval()
                for batch in (1, 8):
                    q, k, v = torch.randn(batch, n, dim), *torch.randn(2, batch, s, dim)
                    t = _median_times({"binary": lambda: packed(q, k, v),
                                       "float": lambda: reference(q, k, v)}, rounds)
                    row = {"threads": threads, "batch": batch, "queries": n, "keys": s,
                           "dim": dim, "heads": heads, "binary_ms": 1e3 * t["binary"],
                           "float_ms": 1e3 * t["float"], "speedup": t["float"] / t["binary"]}
                    results["attention"].append(row)
                    print(f"attention threads {threads} batch {batch} N {n} S {s} C {dim} "
                          f"h {heads}: binary {row['binary_ms']:.2f} ms, float "
                          f"{row['float_ms']:.2f} ms, {row['speedup']:.2f}x")
    torch.set_num_threads(previous)
    save_results("binaryvit_speed", results)


if __name__ == "__main__":
    main()
