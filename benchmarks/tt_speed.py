"""Tensor-train inference speed: TTLinear (training form) and PackedTTLinear (frozen,
precontracted) against the dense nn.Linear they replace, and the frozen TT-LSTM against the
frozen dense nn.LSTM; writes benchmarks/results/tt_speed.json.

    python benchmarks/tt_speed.py
    python benchmarks/tt_speed.py --rounds 3 --calls 50     # quicker, noisier

Shapes are those of benchmarks/tensor_train.py (recipes/ptb_lstm_lm_small.yaml): one gate matrix
200 -> 800 (the automatic factorization of the ``tt`` method), and the 2 x 200 LSTM. MPS and MPO
at ranks 4, 8, 16 (random cores: speed does not depend on the values), batch 1 and 32. One
thread; every round times each variant in turn (interleaved, so the load of other jobs falls on
all alike) and the result is the median over rounds of time / dense time measured in the same
round. The LSTMs are timed per token: batch 1 one token per call with the state carried (the
streaming case), and batch 32 x 35 tokens in one call, against two dense baselines: nn.LSTM
(what a frozen dense model runs) and the same dense weights as nn.Linear gate maps in the TT-LSTM's
own recurrence (``run_lstm``; at batch 1 on CPU it is faster than nn.LSTM, so it is the fairer
baseline for the gate matrices alone). Only ratios are reported as results (absolute times are
kept for reference: the machine may be loaded). Each linear row names the plan the frozen layer
runs at its batch (``frozen_plan``: dense, two-sided, or an MPO sweep over ``frozen_groups``;
layers.tensor_train.precontracted), each LSTM row whether the frozen LSTM ran torch's fused LSTM
kernel on the dense matrices (``frozen_fused``; deploy.tensor_train.PackedTTLSTM.fused_weights).
"""

from __future__ import annotations

import argparse
import statistics
from typing import Any, Callable

import torch
from common import interleaved, machine, save_results
from torch import nn

from edgecompress.deploy import PackedTTLinear, PackedTTLSTM
from edgecompress.layers import TTLSTM, TTLinear
from edgecompress.layers.lstm import run_lstm

IN, OUT, HIDDEN, LAYERS = 200, 800, 200, 2
MODES = ("mps", "mpo")
RANKS = (4, 8, 16)
BATCHES = (1, 32)
WINDOW = 35  # tokens per call at batch 32 (and tokens carried one by one at batch 1)




def linear_case(mode: str, rank: int, batch: int, rounds: int, calls: int) -> dict[str, Any]:
    torch.manual_seed(0)
    dense = nn.Linear(IN, OUT).requires_grad_(False)
    tt = TTLinear(IN, OUT, ranks=rank, mode=mode).requires_grad_(False)
    frozen = PackedTTLinear.from_trained(tt)
    x = torch.randn(batch, IN)
    out = interleaved({"dense": lambda: dense(x), "training": lambda: tt(x),
                       "frozen": lambda: frozen(x)}, rounds, calls, baseline="dense")
    y = tt(x)
    return {"mode": mode, "rank": rank, "batch": batch,
            "factorization": [list(s) for s in tt.factorization], "ranks": list(tt.ranks),
            "dense_numbers": IN * OUT, "core_numbers": tt.layout.params,
            "frozen_runtime_numbers": frozen.fast.numel,
            "dense_macs": batch * IN * OUT, "training_macs": tt.macs(batch),
            "frozen_macs": frozen.macs(batch),
            "frozen_plan": frozen.fast.plan(batch).kind,
            "frozen_groups": [list(r) for r in frozen.fast.plan(batch).ranges],
            "max_error_vs_training": float((frozen(x) - y).abs().max()),
            "max_abs_output": float(y.abs().max()),
            "training_ratio": out["training"]["ratio"], "frozen_ratio": out["frozen"]["ratio"],
            "seconds": {k: v["seconds"] for k, v in out.items()}}


class DenseRecurrence(nn.Module):
    """``lstm``'s weights as dense nn.Linear gate maps, run by the TT-LSTM's recurrence."""

    def __init__(self, lstm: nn.LSTM) -> None:
        super().__init__()
        self.hidden_size, self.num_layers = lstm.hidden_size, lstm.num_layers
        self.batch_first, self.dropout = lstm.batch_first, 0.0
        self.ih, self.hh = nn.ModuleList(), nn.ModuleList()
        for layer in range(lstm.num_layers):
            for maps, side in ((self.ih, "ih"), (self.hh, "hh")):
                weight = getattr(lstm, f"weight_{side}_l{layer}")
                linear = nn.Linear(weight.shape[1], weight.shape[0])
                with torch.no_grad():
                    linear.weight.copy_(weight)
                    linear.bias.copy_(getattr(lstm, f"bias_{side}_l{layer}"))
                maps.append(linear.requires_grad_(False))

    def forward(self, input: torch.Tensor, hx: Any = None) -> Any:
        return run_lstm(self, input, hx)


def lstm_case(mode: str, rank: int, batch: int, rounds: int, calls: int) -> dict[str, Any]:
    torch.manual_seed(0)
    dense = nn.LSTM(IN, HIDDEN, LAYERS).eval().requires_grad_(False)
    tt = TTLSTM(IN, HIDDEN, LAYERS, ranks=rank, mode=mode).eval().requires_grad_(False)
    frozen = PackedTTLSTM.from_trained(tt)
    models = {"dense": dense, "dense_recurrence": DenseRecurrence(dense), "training": tt,
              "frozen": frozen}
    if batch == 1:  # one token per call, the state carried
        x = torch.randn(1, 1, IN)
        states: dict[str, Any] = {name: None for name in models}

        def step(name: str, model: nn.Module) -> Callable[[], Any]:
            def run() -> None:
                _, states[name] = model(x, states[name])
            return run

        variants = {name: step(name, model) for name, model in models.items()}
        tokens = 1
    else:
        x = torch.randn(WINDOW, batch, IN)
        variants = {name: (lambda m=model: m(x)) for name, model in models.items()}
        tokens = WINDOW * batch
    out = interleaved(variants, rounds, max(1, calls // (1 if batch == 1 else 20)),
                      baseline="dense")
    y = tt(x)[0]
    recurrence = out["dense_recurrence"]["ratio"]
    return {"mode": mode, "rank": rank, "batch": batch, "tokens_per_call": tokens,
            "frozen_fused": frozen.fused_weights(tokens // batch, batch) is not None,
            "max_error_vs_training": float((frozen(x)[0] - y).abs().max()),
            "training_ratio": out["training"]["ratio"], "frozen_ratio": out["frozen"]["ratio"],
            "dense_recurrence_ratio": recurrence,
            "frozen_vs_dense_recurrence": statistics.median(
                f / d for f, d in zip(out["frozen"]["all"], out["dense_recurrence"]["all"])),
            "seconds_per_token": {k: v["seconds"] / tokens for k, v in out.items()}}


def table(rows: list[dict[str, Any]], title: str) -> str:
    extra = "frozen_vs_dense_recurrence" in rows[0]
    lines = [title, "| mode | rank | batch | training / dense | frozen / dense |"
             + (" frozen / dense gates in run_lstm |" if extra else ""),
             "|---|---:|---:|---:|---:|" + ("---:|" if extra else "")]
    lines += [f"| {r['mode']} | {r['rank']} | {r['batch']} | {r['training_ratio']:.2f} | "
              f"{r['frozen_ratio']:.2f} |"
              + (f" {r['frozen_vs_dense_recurrence']:.2f} |" if extra else "") for r in rows]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=7, help="Interleaved rounds (median).")
    parser.add_argument("--calls", type=int, default=200,
                        help="Calls per variant and round (batch 1; batch-32 LSTM: / 20).")
    args = parser.parse_args()
    torch.set_num_threads(1)
    results: dict[str, Any] = {"machine": machine(), "rounds": args.rounds,
                               "calls": args.calls, "linear": [], "lstm": []}
    with torch.no_grad():
        for batch in BATCHES:
            for mode in MODES:
                for rank in RANKS:
                    results["linear"].append(linear_case(mode, rank, batch, args.rounds,
                                                         args.calls))
                    results["lstm"].append(lstm_case(mode, rank, batch, args.rounds,
                                                     args.calls))
                    save_results("tt_speed", results)
    print(table(results["linear"], f"TT linear {IN} -> {OUT}, time / nn.Linear"))
    print(table(results["lstm"], f"\n{LAYERS} x {HIDDEN} LSTM per token, time / nn.LSTM"))


if __name__ == "__main__":
    main()
