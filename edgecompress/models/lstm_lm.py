"""Word-level LSTM language model (Zaremba et al., 2014, "Recurrent Neural Network
Regularization"; weight tying: Press & Wolf, 2017, Inan et al., 2017)."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

State = tuple[Tensor, Tensor]


class LSTMLanguageModel(nn.Module):
    """embedding -> dropout -> ``layers`` x LSTM (dropout between layers) -> dropout -> linear
    decoder over the vocabulary.

    ``forward(tokens, state=None) -> (logits, state)``: ``tokens`` int64 (batch, time),
    ``logits`` (batch, time, vocabulary) and ``state`` the LSTM's ``(h, c)``, each
    (layers, batch, hidden), to feed into the next window (None starts from zeros).
    ``num_classes`` is the vocabulary size. ``tie_weights`` shares the embedding matrix with the
    decoder (then ``embed_dim`` must equal ``hidden``). Embedding and decoder weights start
    uniform in [-0.1, 0.1], the decoder bias at 0. ``input_shape`` is ``(1,)`` (one token: the
    summary counts MACs per token) and ``input_dtype`` is int64.
    """

    input_dtype = torch.int64

    def __init__(self, num_classes: int = 10000, input_shape: Sequence[int] = (1,),
                 embed_dim: int = 64, hidden: int = 64, layers: int = 1, dropout: float = 0.0,
                 tie_weights: bool = False) -> None:
        super().__init__()
        if num_classes < 1 or embed_dim < 1 or hidden < 1 or layers < 1:
            raise ValueError(f"lstm-lm: num_classes, embed_dim, hidden and layers must be >= 1, "
                             f"got {num_classes}, {embed_dim}, {hidden}, {layers}")
        if not 0 <= dropout < 1:
            raise ValueError(f"lstm-lm: dropout must be in [0, 1), got {dropout}")
        if tie_weights and embed_dim != hidden:
            raise ValueError(f"lstm-lm: tie_weights needs embed_dim == hidden, got embed_dim "
                             f"{embed_dim} and hidden {hidden}")
        self.input_shape = tuple(input_shape)
        self.embedding = nn.Embedding(num_classes, embed_dim)
        self.dropout = nn.Dropout(dropout)
        self.lstm = nn.LSTM(embed_dim, hidden, num_layers=layers, batch_first=True,
                            dropout=dropout if layers > 1 else 0.0)
        self.decoder = nn.Linear(hidden, num_classes)
        nn.init.uniform_(self.embedding.weight, -0.1, 0.1)
        nn.init.zeros_(self.decoder.bias)
        if tie_weights:
            self.decoder.weight = self.embedding.weight
        else:
            nn.init.uniform_(self.decoder.weight, -0.1, 0.1)

    def forward(self, tokens: Tensor, state: State | None = None) -> tuple[Tensor, State]:
        x = self.dropout(self.embedding(tokens))
        x, state = self.lstm(x, state)
        return self.decoder(self.dropout(x)), state
