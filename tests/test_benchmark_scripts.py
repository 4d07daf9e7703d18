"""The scripts in benchmarks/ answer --help without starting work or writing anything.

Each runs from a copy of the repository's benchmarks/, docs/, recipes/ and examples/ (the
scripts find the repository from their own location), so a benchmark running beside the tests
in the real checkout cannot disturb the comparison."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ["deploy.py", "make_recipes.py", "binarization.py", "shift.py", "pruning.py",
           "causal.py", "euclidnet.py", "euclidnet_speed.py", "tensor_train.py", "tt_speed.py",
           "binaryvit.py", "binaryvit_speed.py", "transfer.py", "lowbit_speed.py",
           "binarization_vit.py", "int8_stem.py"]
COPIED = ("benchmarks", "docs", "recipes", "examples")


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """(mtime, size) of every file under ``folder`` (bytecode caches aside)."""
    return {str(p): (p.stat().st_mtime_ns, p.stat().st_size) for p in folder.rglob("*")
            if p.is_file() and "__pycache__" not in p.parts}


@pytest.mark.slow
@pytest.mark.parametrize("script", SCRIPTS)
def test_help_writes_nothing(script, tmp_path):
    repo, cwd = tmp_path / "repo", tmp_path / "cwd"
    cwd.mkdir()
    for name in COPIED:
        shutil.copytree(ROOT / name, repo / name, ignore=shutil.ignore_patterns("__pycache__"))
    before = snapshot(tmp_path)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONDONTWRITEBYTECODE": "1"}
    result = subprocess.run([sys.executable, str(repo / "benchmarks" / script), "--help"],
                            cwd=cwd, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"usage: {script}")
    assert snapshot(tmp_path) == before


@pytest.mark.slow
def test_binarization_vit_smoke_run_resumes_and_reports(tmp_path, shared_data):
    """A --limit run of every method x binary ViT x 2 seeds (teacher included), resumed without
    retraining; its section printed; and binarization.py's report keeps the CNN suites and adds
    the ViT section when the ViT results are there."""
    data = shared_data("cifar10_subset")
    repo = tmp_path / "repo"
    for name in COPIED:
        shutil.copytree(ROOT / name, repo / name, ignore=shutil.ignore_patterns("__pycache__"))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONDONTWRITEBYTECODE": "1"}
    script = [sys.executable, str(repo / "benchmarks" / "binarization_vit.py")]
    run = [*script, "run", "--data-root", str(data), "--limit", "16", "--epochs", "1",
           "--teacher-epochs", "1", "--seeds", "0", "1", "--work", str(tmp_path / "work")]
    first = subprocess.run(run, env=env, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr
    assert first.stdout.count("top-1") == 2 * (1 + 7 * 2)
    again = subprocess.run(run, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and "top-1" not in again.stdout, again.stderr
    shown = subprocess.run([*script, "section", "--limit", "16"], env=env, capture_output=True,
                           text=True, timeout=120)
    assert shown.returncode == 0, shown.stderr
    assert "| method | binary DeiT | BinaryViT |" in shown.stdout
    assert "| bnn++ |" in shown.stdout and "| float ResNet-20 (the teacher) |" in shown.stdout
    assert shown.stdout.count("Claim \"BNN++ is competitive") == 2
    results = repo / "benchmarks" / "results"
    shutil.copy(results / "binarization_vit-limit16.json", results / "binarization_vit-s0.json")
    report = subprocess.run([sys.executable, str(repo / "benchmarks" / "binarization.py"),
                             "report"], env=env, capture_output=True, text=True, timeout=300)
    assert report.returncode == 0, report.stderr
    doc = (repo / "docs" / "binarization.md").read_text()
    before = (ROOT / "docs" / "binarization.md").read_text()
    vit = doc.index("### Binary DeiT and BinaryViT")
    assert "### VGG-small" in doc[:vit] and "## Training-time overhead" in doc[vit:]
    assert before.split("### VGG-small")[0] == doc.split("### VGG-small")[0]


def test_binarization_vit_reuses_the_ablation_teacher(tmp_path, monkeypatch):
    """The float teacher row is binaryvit.py's run of the same seed and epochs when its
    checkpoint is still in --work and holds every epoch; otherwise (other epochs, no
    checkpoint, a killed run's partial checkpoint) it is trained."""
    import importlib

    from edgecompress.train.checkpoint import save_checkpoint
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    vit = importlib.import_module("binarization_vit")
    record = {"row": vit.TEACHER, "seed": 0, "epochs": 20, "top1": 61.0}
    monkeypatch.setattr(vit, "merged_results",
                        lambda base, limit=None: {f"{vit.TEACHER}|0": record})
    trained = []
    monkeypatch.setattr(vit, "one_run", lambda *a, **k: trained.append(a) or {"top1": 1.0})
    ckpt = vit.teacher_dir(tmp_path, vit.TEACHER, 0, 20, None) / "checkpoint.pt"
    assert vit.train("binary-deit", None, 0, 5, 20, None, tmp_path, "x")["top1"] == 1.0
    ckpt.parent.mkdir(parents=True)
    save_checkpoint(ckpt, {"model": {}, "epoch": 12})  # killed after 12 of 20 epochs
    assert vit.train("binary-deit", None, 0, 5, 20, None, tmp_path, "x")["top1"] == 1.0
    save_checkpoint(ckpt, {"model": {}, "epoch": 20})
    assert vit.train("binary-deit", None, 0, 5, 20, None, tmp_path, "x") == {**record,
                                                                              "method": None}
    assert vit.train("binary-deit", None, 0, 5, 10, None, tmp_path, "x")["top1"] == 1.0
    assert len(trained) == 3


def test_train_checkpoint_trains_resumes_or_keeps(tmp_path, monkeypatch):
    """common.train_checkpoint: no checkpoint -> trains; a partial one -> resumes (and its
    record says so); a complete one -> nothing."""
    import importlib

    from edgecompress.train.checkpoint import save_checkpoint
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    common = importlib.import_module("common")
    calls = []
    monkeypatch.setattr(common, "train_and_record",
                        lambda recipe, root, out, resume=False, **f: calls.append(resume) or f)
    recipe = type("R", (), {"epochs": 5})()
    assert common.train_checkpoint(recipe, None, tmp_path, row="t") == {"row": "t"}
    save_checkpoint(tmp_path / "checkpoint.pt", {"model": {}, "epoch": 3})
    assert common.train_checkpoint(recipe, None, tmp_path) == {"resumed": True}
    save_checkpoint(tmp_path / "checkpoint.pt", {"model": {}, "epoch": 5})
    assert common.train_checkpoint(recipe, None, tmp_path) is None
    assert calls == [False, True]


def test_pruning_latency_verdicts_per_batch_and_reading(monkeypatch):
    """latency / MACs >= 0.7 per cell, judged on the table's two decimals, both readings."""
    import importlib
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    pruning = importlib.import_module("pruning")
    lines = pruning.latency_verdicts({64: [(0.55, 0.699), (0.60, 0.72)],
                                      1: [(0.72, 0.78), (0.79, 0.83)]})
    assert lines[0].startswith("- Batch 1:") and lines[0].count("**met**") == 2
    assert "as reductions 0.55-0.60, **not met**" in lines[1]
    assert "as factors 0.70-0.72, **met**" in lines[1]  # 0.699 shows as 0.70
    assert "met in 1 of 2 cells" in pruning.latency_verdicts({64: [(0.5, 0.69), (0.5, 0.7)]})[0]


def test_euclidnet_speed_verdicts_per_batch(monkeypatch):
    """The worst shape of each batch decides: training step <= 1.2x conv, frozen inference <=
    1.1x, judged on the table's two decimals; rows of other layers do not count."""
    import importlib
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    euclidnet = importlib.import_module("euclidnet")

    def row(batch, mode, layer, ratio):
        return dict(batch=batch, mode=mode, layer=layer, ratio_vs_conv=ratio)
    rows = [row(4, "train", "euclid", 1.1), row(4, "train", "euclid", 1.204),
            row(4, "inference", "euclid-frozen", 1.05), row(4, "inference", "adder", 9.0),
            row(32, "train", "euclid", 1.3), row(32, "inference", "euclid-frozen", 1.12)]
    lines = euclidnet.speed_verdicts(rows)
    assert lines[0] == ("- Batch 4: train (`euclid`) worst 1.20x: target <= 1.2x **met**; "
                        "inference (`euclid-frozen`) worst 1.05x: target <= 1.1x **met**.")
    assert lines[1].startswith("- Batch 32:") and lines[1].count("**not met**") == 2


def test_euclidnet_robustness_verdict_needs_accuracy_above_chance(monkeypatch):
    """Claim (c) compares drops only for a row at least half the CNN's margin above chance; a
    near-chance row's small drop is 'not judged', not 'holds'."""
    import importlib
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    euclidnet = importlib.import_module("euclidnet")
    monkeypatch.setattr(euclidnet, "mean_drop", lambda r: r["drop"])

    def runs(*pairs):
        return [{"top1": t, "drop": d} for t, d in pairs]
    records = {"cnn": runs((60.0, 20.0), (62.0, 21.0)),
               "euclid-scratch": runs((12.0, 1.0), (13.0, 1.5)),  # near chance, tiny drop
               "euclid-homotopy": runs((58.0, 20.5), (59.0, 21.5))}
    lines = euclidnet.verdicts("cifar", records)
    scratch = [x for x in lines if "from scratch" in x and "(c)" in x]
    homotopy = [x for x in lines if "homotopy" in x and "(c)" in x]
    assert "**not judged**" in scratch[0] and "**holds**" in homotopy[0]


def test_euclidnet_weight_scale_rule_and_its_check_in_the_report(monkeypatch):
    """The rows' weight_scale is the smallest swept one keeping KEEP of the CNN's train top-1;
    the report says so, or that the rows must be rerun when the constant differs."""
    import importlib
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    euclidnet = importlib.import_module("euclidnet")
    sweep = [{"weight_scale": a, "train_top1": t, "test_top1": t}
             for a, t in ((1.0, 10.0), (30.0, 80.0), (100.0, 90.0), (300.0, 99.0))]
    result = {"cnn": {"train_top1": 100.0, "test_top1": 95.0}, "sweep": sweep}
    assert euclidnet.chosen_scale(result) == 100.0
    assert euclidnet.chosen_scale({**result, "cnn": {"train_top1": 200.0}}) is None
    layer = {"layer": "a", "shared_ratio": 20.0, "grad_ratio": 0.01}
    saved = {**result, "machine": "m", "images": 10, "batch": 5, "chosen": 100.0,
             "init": [layer], "trained": [layer]}
    monkeypatch.setattr(euclidnet, "load_results", lambda name: saved)
    text = "\n".join(euclidnet.diagnosis_section())
    assert f"**100** (**the rows use {euclidnet.WEIGHT_SCALE:g}: rerun them**)" in text
    monkeypatch.setattr(euclidnet, "WEIGHT_SCALE", 100.0)
    assert "**100** (the rows' `weight_scale` is this value)" in "\n".join(
        euclidnet.diagnosis_section())


def test_binarization_vit_notes_when_bnn_ran_as_bc(monkeypatch):
    """The section says bnn equals bc only when every bnn run matches its bc run, and counts
    the latent weights outside [-1, 1] from the histograms (end bins included)."""
    import importlib
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    vit = importlib.import_module("binarization_vit")
    inside = [0] * 10 + [5] * 20 + [0] * 10

    def run(method, seed, top1, hist=inside):
        return {f"binaryvit|{method}|{seed}": {"row": "binaryvit", "method": method,
                                               "seed": seed, "top1": top1,
                                               "train_top1": 30.0, "latent_hist": hist}}

    same = {**run("bc", 0, 29.4), **run("bnn", 0, 29.4), **run("bc", 1, 33.1),
            **run("bnn", 1, 33.1, [1] + [0] * 9 + [5] * 20 + [0] * 9 + [2])}
    note = " ".join(vit.bnn_is_bc(same))
    assert "ran identically" in note and "3 of bnn's 203 latent weights" in note
    assert vit.bnn_is_bc({**same, **run("bnn", 1, 33.2)}) == []  # one seed differs
    assert vit.bnn_is_bc({k: v for k, v in same.items() if "|bc|1" not in k}) == []


@pytest.mark.slow
def test_shift_speech45_smoke_run_and_report(shared_data, tmp_path):
    """``shift.py run speech45 --limit`` trains every row of the suite (float and the four
    methods at 3 bits) for one epoch on a few clips, in two --part processes' files, resumes
    without retraining, and ``report --limit`` prints the section from them, docs untouched."""
    fsdd = shared_data("fsdd")
    repo = tmp_path / "repo"
    for name in COPIED:
        shutil.copytree(ROOT / name, repo / name, ignore=shutil.ignore_patterns("__pycache__"))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONDONTWRITEBYTECODE": "1"}
    script, results = repo / "benchmarks" / "shift.py", repo / "benchmarks" / "results"
    docs = snapshot(repo / "docs")

    def shift(*args: str) -> str:
        out = subprocess.run([sys.executable, str(script), *args], cwd=tmp_path, env=env,
                             capture_output=True, text=True, timeout=600)
        assert out.returncode == 0, out.stderr
        return out.stdout

    shift("run", "speech45", "--data-root", str(fsdd), "--limit", "8", "--seeds", "0",
          "--part", "a")
    shift("run", "speech45", "--data-root", str(fsdd), "--limit", "8", "--seeds", "1",
          "--part", "b")
    parts = {p.name: json.loads(p.read_text())
             for p in results.glob("shift_speech45-limit8*.json")}
    assert sorted(parts) == ["shift_speech45-limit8-a.json", "shift_speech45-limit8-b.json"]
    labels = ["float", "deepshift-q 3-bit", "deepshift-ps 3-bit", "s3 3-bit", "denseshift 3-bit"]
    for name, seed in (("shift_speech45-limit8-a.json", 0), ("shift_speech45-limit8-b.json", 1)):
        runs = {k: v for k, v in parts[name].items() if k != "machine"}
        assert sorted(runs) == sorted(f"{label}|{seed}" for label in labels)
        assert all(len(r["flip_rate"]) == 1 for r in runs.values())  # one epoch each
    # every run of seed 0 is done (in part a's file): a rerun as another part trains nothing
    assert "top-1" not in shift("run", "speech45", "--data-root", str(fsdd), "--limit", "8",
                                "--seeds", "0", "--part", "b")
    report = shift("report", "--limit", "8")
    assert "## res8 keyword-spotting ResNet (45 channels, 4x3 average pool" in report
    assert "| float reference |" in report and "| 3-bit |" in report
    assert report.count("is close to float (") == 2
    assert "Seeds 0, 1." in report
    assert "ResNet-20 on the CIFAR-10" not in report  # no smoke runs of the other suites
    assert snapshot(repo / "docs") == docs


def test_tensor_train_from_dense_runs_start_from_the_dense_checkpoint(tmp_path, monkeypatch):
    """Every configuration runs from scratch and from the seed's trained dense LM: the latter's
    recipe loads that checkpoint whole (decoder kept), converts by TT-SVD (no random init) and
    halves the lr after its first epoch; keys and frozen files of the two never collide."""
    import importlib
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    tt = importlib.import_module("tensor_train")
    runs = tt.configs((4, 8))
    assert len(runs) == 2 * (1 + 2 * 2)
    assert len({tt.key_of(m, r, 0, s) for m, r, s in runs}) == len(runs)
    scratch = tt.recipe_for("mps", 8, 0, 4, 1000, lr=1.0)
    assert scratch.method["init"] == "random" and scratch.pretrained is None
    assert scratch.schedule["milestones"] == [2, 3]
    ckpt = tmp_path / "checkpoint.pt"
    tuned = tt.recipe_for("mps", 8, 0, tt.FINETUNE_EPOCHS + 1, 1000, lr=1.0, dense=ckpt)
    assert "init" not in tuned.method and tuned.method["ranks"] == 8
    assert tuned.pretrained == {"checkpoint": str(ckpt), "reset_head": False}
    assert tuned.schedule["milestones"] == list(range(1, tt.FINETUNE_EPOCHS + 1))
    assert tuned.grad_clip == tt.MAX_STEP
    assert tt.recipe_for("dense", None, 0, 2, 1000, lr=20.0, dense=ckpt).method is None
