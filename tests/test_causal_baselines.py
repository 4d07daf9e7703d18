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


def _causal_benchmark(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    spec = importlib.util.spec_from_file_location("causal_benchmark", BENCHMARKS / "causal.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    return bench


def test_methods_entries_carry_options(monkeypatch):
    """``--methods hetero:combine=fisher``: a method with options, numbers as numbers."""
    bench = _causal_benchmark(monkeypatch)
    assert bench.method_spec("anm") == ("anm", {})
    assert bench.method_spec("hetero:combine=fisher:max_k=3:level=0.1") == (
        "hetero", {"combine": "fisher", "max_k": 3, "level": 0.1})
    with pytest.raises(bench.CausalInputError, match="'fisher' of 'hetero:fisher'"):
        bench.method_spec("hetero:fisher")


def test_results_keys_spell_every_option_with_the_current_defaults(monkeypatch):
    """A row says what ran: ``hetero`` is recorded with the combine and ties it ran with, so a
    later change of the library's defaults cannot relabel old rows."""
    from edgecompress.causal.hetero import DEFAULT_COMBINE
    from edgecompress.causal.ties import DEFAULT_TIES
    bench = _causal_benchmark(monkeypatch)
    assert bench.canonical("hetero") == f"hetero:combine={DEFAULT_COMBINE}:ties={DEFAULT_TIES}"
    assert bench.canonical("anm") == f"anm:ties={DEFAULT_TIES}"
    assert bench.canonical("hetero:ties=none:max_k=3:combine=weighted") == (
        "hetero:combine=weighted:ties=none:max_k=3")
    assert bench.canonical("cdt RECI") == "cdt RECI"
    assert bench.canonical(bench.canonical("hetero:combine=weighted")) == (
        bench.canonical("hetero:combine=weighted"))


def test_regenerate_commands_reproduce_exactly_the_rows_on_record(monkeypatch):
    bench = _causal_benchmark(monkeypatch)
    sim = [{"method": m, "k": k, "n": n, "seed": s} for m in ("anm:ties=none", "b")
           for k in (1, 2) for n in (200, 1000) for s in range(3)]
    sim += [{"method": "c", "k": k, "n": 200, "seed": s} for k in (1, 2, 3) for s in range(2)]
    pairs = [{"method": m, "max_n": 500} for m in ("anm:ties=none", "cdt IGCI")]
    pairs += [{"method": m, "max_n": 300} for m in ("x", *bench.baselines.BASELINES)]
    assert bench.regenerate_commands(sim, pairs) == [
        "    python benchmarks/causal.py simulate --seeds 3 --sizes 200,1000 --ks 1,2 "
        "--methods anm:ties=none,b",
        "    python benchmarks/causal.py simulate --seeds 2 --sizes 200 --methods c",
        "    python benchmarks/causal.py pairs --data-root ../shared/data/tuebingen_pairs "
        "--max-n 300 --methods x --baselines all",
        "    python benchmarks/causal.py pairs --data-root ../shared/data/tuebingen_pairs "
        "--max-n 500 --methods anm:ties=none --baselines \"cdt IGCI\""]
