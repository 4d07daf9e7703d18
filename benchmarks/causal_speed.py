"""Time of one direction decision (``edgecompress.causal.direction``) against the number of
samples: the speed targets of issue 14 (n = 2,000 under 2 s, n = 20,000 under 20 s on 2 cores).

    python benchmarks/causal_speed.py                   # method anm, default settings
    python benchmarks/causal_speed.py --method hetero --sizes 500,2000

Data: y = x^3 + noise with x standard normal. Prints the machine, the load average (the times
are wall-clock and other processes slow them down), the HSIC path used, and the best and median
of ``--repeats`` runs.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import numpy as np

from edgecompress.causal import direction
from edgecompress.causal.hsic import resolve_approx


def cpu_name() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--method", default="anm")
    parser.add_argument("--sizes", default="500,2000,5000,20000")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(f"CPU {cpu_name()}, {os.cpu_count()} logical cores, load average "
          f"{', '.join(f'{v:.1f}' for v in os.getloadavg())}, "
          f"OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS', 'unset')}")
    print(f"{'n':>7} {'hsic path':>10} {'best s':>8} {'median s':>9}  decision")
    for n in (int(s) for s in args.sizes.split(",")):
        rng = np.random.default_rng(n)
        x = rng.normal(size=n)
        y = x**3 + rng.normal(size=n)
        times, result = [], None
        for seed in range(args.repeats):
            start = time.perf_counter()
            result = direction(x, y, args.method, seed=seed)
            times.append(time.perf_counter() - start)
        print(f"{n:>7} {resolve_approx('auto', n):>10} {min(times):>8.2f} "
              f"{statistics.median(times):>9.2f}  {result.direction}")


if __name__ == "__main__":
    main()
