"""Language modelling through the trainer: a toy LSTM on a tiny repetitive corpus learns
(perplexity falls), carries its state across windows, resumes exactly after a kill, runs under
torchrun like one process, and works end to end from a recipe on the command line."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml
from click.testing import CliRunner

from edgecompress import data
from edgecompress.cli import cli
from edgecompress.errors import CheckpointError, RecipeError
from edgecompress.models import LSTMLanguageModel
from edgecompress.recipe import Recipe
from edgecompress.train import Trainer, evaluate, load_checkpoint, tasks
from edgecompress.train.log import read_metrics

from ..torchrun import train_alone_and_under_torchrun
from .test_train import Crash, config, without_seconds

SENTENCES = ["the cat sat on the mat", "a dog ran in the park", "we like green tea"]


def write_corpus(root: Path, lines: int = 90) -> Path:
    """train/valid/test.txt cycling through three sentences (the test split has one unseen
    word, read as <unk>)."""
    root.mkdir(parents=True, exist_ok=True)
    text = "\n".join(SENTENCES[i % 3] for i in range(lines)) + "\n"
    (root / "train.txt").write_text(text)
    (root / "valid.txt").write_text(text[: len(text) // 3])
    (root / "test.txt").write_text("the cat sat on the sofa\n" + text[: len(text) // 3])
    return root


def tiny_lm(vocab: int, seed: int = 0, dropout: float = 0.0) -> LSTMLanguageModel:
    torch.manual_seed(seed)
    return LSTMLanguageModel(vocab, embed_dim=8, hidden=8, dropout=dropout)


def lm_config(out: Path | None = None, **kw):
    base = dict(epochs=3, batch_size=4, eval_batch_size=2, optimizer="adam", lr=0.05,
                schedule="constant", weight_decay=0.0)
    base.update(kw)
    return config(out, **base)


@pytest.fixture
def corpus(tmp_path):
    root = write_corpus(tmp_path / "corpus")
    return data.load("text", root=root), data.load("text", root=root, split="test")


def test_a_toy_lstm_learns_and_reports_perplexity(tmp_path, corpus):
    train, test = corpus
    metrics = Trainer(tiny_lm(train.num_classes), train, test, lm_config(tmp_path),
                      task=tasks.LanguageModelling(bptt=6)).fit()
    rows = read_metrics(tmp_path / "metrics.jsonl")
    assert {"train_loss", "train_ppl", "test_loss", "test_ppl"} <= set(rows[0])
    assert "test_top1" not in rows[0]
    for key in ("train_ppl", "test_ppl"):
        values = [r[key] for r in rows]
        assert values == sorted(values, reverse=True) and values[0] > values[-1], key
    # from a good part of the vocabulary size (16; a uniform guess) to near 1 (the corpus is a
    # cycle of three sentences, so only the first word of a sentence is uncertain)
    assert rows[0]["train_ppl"] > 4 and metrics["test_ppl"] < 2
    assert metrics["test_ppl"] == pytest.approx(math.exp(metrics["test_loss"]))
    assert (tmp_path / "curves.png").read_bytes()[:4] == b"\x89PNG"


def test_with_a_validation_split_test_is_evaluated_after_the_last_epoch_only(tmp_path, corpus):
    train, test = corpus
    valid = data.load("text", root=tmp_path / "corpus", split="valid")
    model = tiny_lm(train.num_classes)
    evaluated = []
    trainer = Trainer(model, train, test, lm_config(tmp_path, epochs=2),
                      task=tasks.LanguageModelling(bptt=6), valid_set=valid)
    evaluate = trainer.evaluate
    trainer.evaluate = lambda dataset: evaluated.append(dataset) or evaluate(dataset)
    metrics = trainer.fit()
    assert evaluated == [valid, valid, test]
    rows = read_metrics(tmp_path / "metrics.jsonl")
    assert "valid_ppl" in rows[0] and "test_ppl" not in rows[0]
    assert rows[-1]["test_ppl"] == metrics["test_ppl"] != metrics["valid_ppl"]
    assert metrics["test_ppl"] == pytest.approx(evaluate(test)["ppl"])


def test_state_is_carried_across_windows_detached_and_reset_each_epoch(corpus):
    train, _ = corpus
    calls = []

    class Spy(LSTMLanguageModel):
        def forward(self, tokens, state=None):
            calls.append(None if state is None else state[0].grad_fn is None)
            return super().forward(tokens, state)

    torch.manual_seed(0)
    model = Spy(train.num_classes, embed_dim=8, hidden=8)
    Trainer(model, train, None, lm_config(epochs=2), task=tasks.LanguageModelling(bptt=10)).fit()
    windows = len(train.windows(4, 10))
    assert windows > 2 and calls == ([None] + [True] * (windows - 1)) * 2


def test_evaluation_is_the_token_mean_cross_entropy_with_the_state_carried(corpus):
    _, test = corpus
    model = tiny_lm(test.num_classes, seed=1).eval()
    total, count, state = 0.0, 0, None
    with torch.no_grad():
        for inputs, targets in test.windows(2, 5):
            logits, state = model(inputs, state)
            total += F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1),
                                     reduction="sum").item()
            count += targets.numel()
    metrics = evaluate(model, test, batch_size=2, task={"name": "language-modelling", "bptt": 5})
    assert count == 2 * (len(test) // 2 - 1)
    assert metrics["loss"] == pytest.approx(total / count, rel=1e-9)
    assert metrics["ppl"] == pytest.approx(math.exp(total / count), rel=1e-9)


def test_resume_after_a_kill_mid_epoch_is_exact(tmp_path, corpus):
    """Dropout draws from the reseeded global RNG and the state restarts each epoch, so a run
    killed in epoch 2 and resumed ends with the weights and metrics of the uninterrupted run."""
    train, test = corpus
    task = tasks.LanguageModelling(bptt=6)
    ref_dir, run_dir = tmp_path / "ref", tmp_path / "run"
    ref_model = tiny_lm(train.num_classes, dropout=0.2)
    ref = Trainer(ref_model, train, test, lm_config(ref_dir), task=task).fit()
    with pytest.raises(KeyboardInterrupt):
        Trainer(tiny_lm(train.num_classes, dropout=0.2), train, test, lm_config(run_dir),
                callbacks=[Crash(1, 3)], task=task).fit()
    assert load_checkpoint(run_dir / "checkpoint.pt")["epoch"] == 1
    resumed = Trainer(tiny_lm(train.num_classes, seed=99, dropout=0.2), train, test,
                      lm_config(run_dir, resume=True), callbacks=[Crash(-1, 0)], task=task)
    final = resumed.fit()
    for a, b in zip(ref_model.state_dict().values(), resumed.model.state_dict().values()):
        assert torch.equal(a, b)
    assert without_seconds([final]) == without_seconds([ref])
    assert without_seconds(read_metrics(run_dir / "metrics.jsonl")) == without_seconds(
        read_metrics(ref_dir / "metrics.jsonl"))


def test_resume_with_another_task_is_refused(tmp_path, corpus):
    train, _ = corpus
    Trainer(tiny_lm(train.num_classes), train, None, lm_config(tmp_path, epochs=1),
            task=tasks.LanguageModelling(bptt=6)).fit()
    with pytest.raises(CheckpointError, match="the task changed.*'bptt': 6.*'bptt': 7"):
        Trainer(tiny_lm(train.num_classes), train, None, lm_config(tmp_path, epochs=1,
                                                                   resume=True),
                task=tasks.LanguageModelling(bptt=7)).fit()


def test_language_modelling_refuses_what_it_cannot_do(corpus):
    train, _ = corpus
    with pytest.raises(ValueError, match="'language-modelling' does not support knowledge "
                                         "distillation"):
        Trainer(tiny_lm(train.num_classes), train, None, lm_config(kd_alpha=0.5),
                teacher=tiny_lm(train.num_classes), task="language-modelling")
    images = data.load("mnist-bundled", split="test", limit=8)
    with pytest.raises(TypeError, match="needs a token stream.*got ImageDataset"):
        evaluate(tiny_lm(10), images, task="language-modelling")


# --- recipes and the command line ---------------------------------------------------------------

def lm_recipe(tmp_path: Path, **changes) -> Path:
    raw = {
        "name": "toy-lm",
        "model": {"name": "lstm-lm", "embed_dim": 8, "hidden": 8},
        "data": {"name": "text", "root": str(write_corpus(tmp_path / "corpus"))},
        "task": {"name": "language-modelling", "bptt": 6},
        "optimizer": {"name": "adam", "lr": 0.02},
        "epochs": 2, "batch_size": 4, "eval_batch_size": 2, "seed": 1,
    }
    raw.update(changes)
    path = tmp_path / "lm.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_recipe_task_comes_from_the_dataset_unless_stated(tmp_path):
    recipe = Recipe.from_yaml(lm_recipe(tmp_path, task=None))
    assert recipe.task is None
    stream = recipe.load_data("train")
    assert recipe.build_task(stream).to_dict() == {"name": "language-modelling", "bptt": 35}
    stated = Recipe.from_yaml(lm_recipe(tmp_path))
    assert stated.build_task(stream).to_dict() == {"name": "language-modelling", "bptt": 6}
    images = Recipe.from_dict({"model": "mlp", "data": "mnist-bundled"})
    assert images.build_task(images.load_data("test")).name == "classification"


@pytest.mark.parametrize("task, message", [
    ("translation", "unknown name 'translation'; available: classification, language-modelling"),
    ({"name": "language-modelling", "bptt": 0}, "bptt must be a positive integer"),
    ({"name": "language-modelling", "window": 5}, "unknown key(s) 'task.window'"),
])
def test_bad_task_sections_are_rejected(tmp_path, task, message):
    with pytest.raises(RecipeError) as info:
        Recipe.from_yaml(lm_recipe(tmp_path, task=task))
    assert message in str(info.value)


def test_cli_train_and_eval_of_a_language_model(tmp_path):
    recipe, run_dir = lm_recipe(tmp_path), tmp_path / "run"
    train_json, eval_json = tmp_path / "train.json", tmp_path / "eval.json"
    result = CliRunner().invoke(cli, ["train", str(recipe), "--out", str(run_dir), "--no-progress",
                                      "--json", str(train_json)])
    assert result.exit_code == 0, result.output
    trained = json.loads(train_json.read_text())["metrics"]
    rows = read_metrics(run_dir / "metrics.jsonl")
    assert [r["epoch"] for r in rows] == [1, 2] and "test_ppl" in rows[-1]
    # watched on the validation split every epoch, the test split evaluated after the last only
    assert all("valid_ppl" in r for r in rows) and "test_ppl" not in rows[0]
    assert trained["test_ppl"] == rows[-1]["test_ppl"]
    result = CliRunner().invoke(cli, ["eval", str(run_dir / "checkpoint.pt"), "--json",
                                      str(eval_json)])
    assert result.exit_code == 0, result.output
    assert "perplexity" in result.output
    evaluated = json.loads(eval_json.read_text())
    assert evaluated["ppl"] == pytest.approx(trained["test_ppl"], rel=1e-6)
    result = CliRunner().invoke(cli, ["eval", str(run_dir / "checkpoint.pt"), "--split", "valid"])
    assert result.exit_code == 0 and "valid loss" in result.output, result.output
    result = CliRunner().invoke(cli, ["summary", str(run_dir / "checkpoint.pt")])
    assert result.exit_code == 0 and "LSTM" in result.output, result.output


@pytest.mark.slow
def test_torchrun_two_processes_match_one_process(tmp_path):
    """`torchrun --nproc_per_node 2` of a language-model recipe (each process takes half of the
    batch's rows) ends with the weights and metrics of the 1-process run."""
    recipe = lm_recipe(tmp_path, optimizer={"name": "sgd", "lr": 0.5})
    one, two = train_alone_and_under_torchrun(recipe, tmp_path)
    ra, rb = read_metrics(one / "metrics.jsonl")[-1], read_metrics(two / "metrics.jsonl")[-1]
    for key in ("train_loss", "train_ppl", "test_loss", "test_ppl"):
        assert ra[key] == pytest.approx(rb[key], rel=1e-5), key
