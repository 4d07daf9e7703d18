"""convert(model, "tt"): Linear -> TTLinear and LSTM -> TTLSTM from the trained weights; the
LSTM language model converts (LSTM only by default), trains through the trainer, and its
checkpoint rebuilds from the recipe."""

from __future__ import annotations

import json
import warnings

import pytest
import torch
from click.testing import CliRunner
from torch import nn

from edgecompress import convert, data, models
from edgecompress.cli import cli
from edgecompress.convert import method_options
from edgecompress.errors import ConversionError, UnknownNameError, WeakConversionWarning
from edgecompress.layers import TTLSTM, TTLinear
from edgecompress.models import LSTMLanguageModel
from edgecompress.train import Trainer, tasks

from ..train.test_language_modelling import lm_config, lm_recipe, write_corpus


def test_the_language_model_converts_its_lstm_only_and_is_exact_at_full_rank():
    torch.manual_seed(0)
    lm = models.create("lstm-lm", num_classes=20, embed_dim=8, hidden=8, layers=2).double()
    tt, report = convert(lm, "tt", ranks=10**6, mode="mps", return_report=True)
    assert isinstance(tt.lstm, TTLSTM) and tt.lstm.num_layers == 2 and tt.lstm.batch_first
    assert type(tt.embedding) is nn.Embedding and type(tt.decoder) is nn.Linear
    assert [c[:2] for c in report.converted] == [("lstm", "LSTM")]
    assert {(name, reason.split(":")[0]) for name, _, reason in report.kept} == {
        ("embedding", "unsupported type"), ("decoder", "first layer")}
    tokens = torch.randint(0, 20, (3, 5))
    (a, (ha, ca)), (b, (hb, cb)) = lm(tokens), tt(tokens)
    for x, y in ((a, b), (ha, hb), (ca, cb)):
        torch.testing.assert_close(y, x, rtol=0, atol=1e-12)
    assert tt.edgecompress_spec["method"] == {"name": "tt", "keep_first_last": True,
                                              "include": None, "exclude": None,
                                              "ranks": 10**6, "mode": "mps"}  # a recipe entry


def test_a_converted_language_model_trains_one_step_through_the_trainer(tmp_path):
    root = write_corpus(tmp_path / "corpus")
    train = data.load("text", root=root)
    torch.manual_seed(0)
    lm = LSTMLanguageModel(train.num_classes, embed_dim=8, hidden=8)
    tt = convert(lm, "tt", ranks=2, mode="mps")
    assert sum(p.numel() for p in tt.lstm.parameters()) < sum(
        p.numel() for p in lm.lstm.parameters())
    before = [c.detach().clone() for c in tt.lstm.ih[0].cores]
    metrics = Trainer(tt, train.limit(4 * 7), None, lm_config(epochs=1),
                      task=tasks.LanguageModelling(bptt=6)).fit()
    assert torch.isfinite(torch.tensor(metrics["train_loss"]))
    assert all(not torch.equal(a, b) for a, b in zip(before, tt.lstm.ih[0].cores))


def test_linear_layers_convert_and_tied_weights_are_refused():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(12, 16), nn.Tanh(), nn.Linear(16, 16), nn.Tanh(),
                        nn.Linear(16, 3)).double()
    out = convert(net, "tt", ranks=10**6, mode="mpo")
    assert [type(m).__name__ for m in out] == ["Linear", "Tanh", "TTLinear", "Tanh", "Linear"]
    every = convert(net, "tt", ranks=10**6, mode="mpo", keep_first_last=False)
    assert all(isinstance(every[i], TTLinear) for i in (0, 2, 4))
    x = torch.randn(4, 12, dtype=torch.float64)
    torch.testing.assert_close(every(x), net(x), rtol=0, atol=1e-12)
    tied = LSTMLanguageModel(20, embed_dim=8, hidden=8, tie_weights=True)
    with pytest.raises(ConversionError, match=r"Linear\(8 -> 20\) is shared by embedding, "
                                              r"decoder \(tied weights\)"):
        convert(tied, "tt", ranks=2, keep_first_last=False)
    assert isinstance(convert(tied, "tt", ranks=2).lstm, TTLSTM)  # the default leaves it


def _core_gradient(lstm: TTLSTM) -> float:
    """Largest gradient entry on the first layer's cores after one loss on random input."""
    torch.manual_seed(1)
    out, _ = lstm(torch.randn(12, 4, 200))
    out.pow(2).mean().backward()
    return max(float(c.grad.abs().max()) for m in (lstm.ih[0], lstm.hh[0]) for c in m.cores)


def test_svd_of_untrained_weights_warns_and_random_init_trains_from_scratch():
    """The low-rank TT-SVD of a freshly initialised LSTM keeps a few percent of the weights'
    norm and its cores get gradients orders of magnitude too small (the TT-LSTM then learns only
    word frequencies): that conversion warns, naming the layer; init="random" gives cores with
    the dense layer's weight variance, the LSTM's biases, and gradients like a dense layer's."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.LSTM(200, 200, 2))
    with pytest.warns(WeakConversionWarning, match=r"tt: 0: the TT-SVD at ranks 4 keeps only "
                                                   r"\d+% .*use init='random'") as caught:
        svd, report = convert(net, {"name": "tt", "ranks": 4, "keep_first_last": False},
                              return_report=True)
    assert len(caught) == 1 and report.warnings == [str(caught[0].message)]
    assert svd[0].ih[0].kept_norm(net[0].weight_ih_l0) < 0.1
    random = convert(net, {"name": "tt", "ranks": 4, "init": "random", "keep_first_last": False})
    dense_std = net[0].weight_hh_l0.std().item()
    for layer in range(2):
        for kind in ("ih", "hh"):
            tt = getattr(random[0], kind)[layer]
            assert abs(tt.to_dense().std().item() / dense_std - 1) < 0.15
            assert torch.equal(tt.bias, getattr(net[0], f"bias_{kind}_l{layer}"))
    assert _core_gradient(random[0]) > 30 * _core_gradient(svd[0])
    with warnings.catch_warnings():  # at full rank the TT-SVD keeps everything: no warning
        warnings.simplefilter("error")
        small = nn.Sequential(nn.LSTM(6, 4))
        exact = convert(small, {"name": "tt", "ranks": 10**6, "keep_first_last": False})
    assert exact[0].hh[0].kept_norm(small[0].weight_hh_l0) == pytest.approx(1.0)


def test_options_and_bad_options():
    assert method_options("tt") == {"ranks", "mode", "factorization", "which", "init",
                                    "keep_first_last", "include", "exclude"}
    lm = LSTMLanguageModel(20, embed_dim=6, hidden=8)
    assert isinstance(convert(lm, "tt", ranks=2, which="hidden").lstm.ih[0], nn.Linear)
    fitted = convert(lm, "tt", ranks=2, factorization=[[3, 2], [4, 2]])
    assert fitted.lstm.ih[0].factorization == ((3, 2), (16, 2))
    with pytest.raises(UnknownNameError, match="unknown tensor-train mode 'tucker'"):
        convert(lm, "tt", ranks=2, mode="tucker")
    with pytest.raises(ConversionError, match="which must be one of"):
        convert(lm, "tt", ranks=2, which="gates")
    with pytest.raises(ConversionError, match="init must be one of 'svd', 'random', got 'zeros'"):
        convert(lm, "tt", ranks=2, init="zeros")
    with pytest.raises(ConversionError, match="bad option for method 'tt'.*ranks"):
        convert(lm, "tt")
    with pytest.raises(ConversionError, match="ranks=0 is not a positive int"):
        convert(lm, "tt", ranks=0)
    with pytest.raises(ConversionError, match="input-to-hidden matrix \\(32 x 6\\): "
                                              "factorization .* multiply to 8, not input size 6"):
        convert(lm, "tt", ranks=2, factorization=[[4, 2], [4, 2]])


def test_recipe_training_and_eval_of_a_tt_language_model(tmp_path):
    """A recipe with method tt trains from the command line and its checkpoint rebuilds (the
    recipe's conversion re-run, then the trained cores loaded) to the same perplexity."""
    recipe = lm_recipe(tmp_path, method={"name": "tt", "ranks": 2, "mode": "mpo"}, epochs=1)
    run_dir, train_json, eval_json = tmp_path / "run", tmp_path / "t.json", tmp_path / "e.json"
    result = CliRunner().invoke(cli, ["train", str(recipe), "--out", str(run_dir),
                                      "--no-progress", "--json", str(train_json)])
    assert result.exit_code == 0, result.output
    result = CliRunner().invoke(cli, ["eval", str(run_dir / "checkpoint.pt"), "--json",
                                      str(eval_json)])
    assert result.exit_code == 0, result.output
    trained = json.loads(train_json.read_text())["metrics"]
    assert json.loads(eval_json.read_text())["ppl"] == pytest.approx(trained["test_ppl"],
                                                                      rel=1e-6)
    result = CliRunner().invoke(cli, ["summary", str(run_dir / "checkpoint.pt")])
    assert result.exit_code == 0 and "TTLSTM" in result.output, result.output
