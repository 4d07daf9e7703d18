"""benchmarks/causal_baselines.py: the pairs benchmark's baselines from maintained packages
(the pip extra ``baselines``) answer in our direction convention, and a missing package stops
the benchmark with a message naming the extra."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = ROOT / "benchmarks"


def _load():
    spec = importlib.util.spec_from_file_location("causal_baselines",
                                                  BENCHMARKS / "causal_baselines.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


baselines = _load()


def _cubic(n: int = 100) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, n)
    y = x**3 + 0.1 * rng.uniform(-1, 1, n)
    return (x - x.mean()) / x.std(), (y - y.mean()) / y.std()


@pytest.mark.parametrize("name", list(baselines.BASELINES))
def test_baseline_finds_the_cause_of_a_cubic_in_both_orders(name):
    pytest.importorskip(baselines.BASELINES[name][0].replace("-", ""),
                        reason="baseline package not installed (pip extra 'baselines')")
    x, y = _cubic()
    assert baselines.decide(name, x, y) == "x->y"
    assert baselines.decide(name, y, x) == "y->x"


@pytest.mark.parametrize("name, hidden", [("cdt IGCI", "cdt"),
                                          ("causal-learn LiNGAM", "causallearn")])
def test_missing_package_names_the_pip_extra(name, hidden, monkeypatch):
    for module in [m for m in sys.modules if m == hidden or m.startswith(hidden + ".")]:
        monkeypatch.delitem(sys.modules, module)
    monkeypatch.setitem(sys.modules, hidden, None)  # makes `import hidden...` fail
    with pytest.raises(baselines.BaselineError, match=r'edgecompress\[baselines\]'):
        baselines.select(name)
    with pytest.raises(baselines.BaselineError, match=r'edgecompress\[baselines\]'):
        baselines.decide(name, *_cubic(30))


def test_select_all_none_and_unknown_names():
    assert baselines.select("none") == []
    with pytest.raises(baselines.BaselineError, match="available: causal-learn ANM"):
        baselines.select("cdt IGCI,ANM of nobody")


@pytest.mark.slow
def test_pairs_benchmark_stops_before_work_when_a_package_is_missing(tmp_path):
    """The benchmark script itself, with ``cdt`` made unimportable: exit 2 with the extra named,
    before reading any pair (the --data-root given does not exist)."""
    fake = tmp_path / "cdt"
    fake.mkdir()
    (fake / "__init__.py").write_text("raise ImportError('cdt is hidden for this test')\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)]),
           "PYTHONDONTWRITEBYTECODE": "1"}
    run = subprocess.run([sys.executable, str(BENCHMARKS / "causal.py"), "pairs", "--data-root",
                          str(tmp_path / "absent"), "--baselines", "cdt RECI"],
                         env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 2, run.stderr
    assert "'cdt'" in run.stderr and 'pip install "edgecompress[baselines]"' in run.stderr
    assert "absent" not in run.stderr


def test_methods_entries_carry_options(monkeypatch):
    """``--methods hetero:combine=fisher``: a method with options, numbers as numbers."""
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    spec = importlib.util.spec_from_file_location("causal_benchmark", BENCHMARKS / "causal.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    assert bench.method_spec("anm") == ("anm", {})
    assert bench.method_spec("hetero:combine=fisher:max_k=3:level=0.1") == (
        "hetero", {"combine": "fisher", "max_k": 3, "level": 0.1})
    with pytest.raises(bench.CausalInputError, match="'fisher' of 'hetero:fisher'"):
        bench.method_spec("hetero:fisher")
