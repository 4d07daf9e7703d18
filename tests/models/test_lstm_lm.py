"""The LSTM language model of the zoo: shapes, the carried state, weight tying, option errors."""

from __future__ import annotations

import pytest
import torch

from edgecompress import models, summary


def test_logits_and_state_shapes_and_gradients():
    torch.manual_seed(0)
    model = models.create("lstm-lm", num_classes=30, embed_dim=6, hidden=5, layers=2)
    logits, (h, c) = model(torch.randint(0, 30, (3, 7)))
    assert logits.shape == (3, 7, 30) and h.shape == c.shape == (2, 3, 5)
    logits.square().mean().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_feeding_the_state_continues_the_sequence():
    torch.manual_seed(0)
    model = models.create("lstm-lm", num_classes=20, dropout=0.3).eval()
    tokens = torch.randint(0, 20, (2, 10))
    whole, _ = model(tokens)
    first, state = model(tokens[:, :4])
    second, _ = model(tokens[:, 4:], state)
    torch.testing.assert_close(torch.cat([first, second], 1), whole)
    restarted, _ = model(tokens[:, 4:])
    assert not torch.allclose(restarted, second)


def test_tied_weights_share_the_embedding():
    model = models.create("lstm-lm", num_classes=12, embed_dim=8, hidden=8, tie_weights=True)
    assert model.decoder.weight is model.embedding.weight
    untied = models.create("lstm-lm", num_classes=12, embed_dim=8, hidden=8)
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(untied) - count(model) == 12 * 8
    with pytest.raises(ValueError, match="tie_weights needs embed_dim == hidden, got embed_dim "
                                         "8 and hidden 4"):
        models.create("lstm-lm", num_classes=12, embed_dim=8, hidden=4, tie_weights=True)


def test_bad_options_are_named():
    with pytest.raises(ValueError, match="dropout must be in"):
        models.create("lstm-lm", dropout=1.0)
    with pytest.raises(models.ModelOptionError, match="unknown option"):
        models.create("lstm-lm", hidden_size=3)


def test_summary_runs_on_int64_tokens():
    model = models.create("lstm-lm", num_classes=10, embed_dim=4, hidden=4)
    s = summary(model, model.input_shape, dtype=model.input_dtype)
    # per token: LSTM 4 gates x 4 hidden x (4 input + 4 recurrent) + decoder 4 x 10
    assert s.macs_by_precision == {"w32a32": 4 * 4 * 8 + 40}
