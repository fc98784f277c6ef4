"""The textbook PTB training loop, as a baseline for ``bench_ptb.py`` and ``bench_lm_vocab.py``.

What every tutorial writes (PyTorch's word_language_model example, in essence): one fused
``nn.LSTM`` with two layers, an embedding and a linear decoder (dropout after the embedding,
between the layers and before the decoder), mean cross-entropy, the hidden state detached
between ``bptt`` windows, gradient clipping, an SGD step, and ``loss.item()`` per step.
"""

from __future__ import annotations

import time

import torch
from torch import nn


class ReferenceLM(nn.Module):
    def __init__(
        self, ntoken: int, ninp: int = 200, nhid: int = 200, nlayers: int = 2, dropout: float = 0.0
    ) -> None:
        super().__init__()
        self.drop = nn.Dropout(dropout)  # after the embedding, between layers, before the decoder
        self.encoder = nn.Embedding(ntoken, ninp)
        self.rnn = nn.LSTM(ninp, nhid, nlayers, dropout=dropout)
        self.decoder = nn.Linear(nhid, ntoken)
        self.nlayers, self.nhid = nlayers, nhid
        for p in self.parameters():
            nn.init.uniform_(p, -0.1, 0.1)

    def forward(self, x, hidden):
        emb = self.drop(self.encoder(x))  # (T, B, E)
        output, hidden = self.rnn(emb, hidden)  # (T, B, H)
        return self.decoder(self.drop(output)), hidden  # (T, B, V)

    def init_hidden(self, bsz: int):
        weight = next(self.parameters())
        return (
            weight.new_zeros(self.nlayers, bsz, self.nhid),
            weight.new_zeros(self.nlayers, bsz, self.nhid),
        )


def train_epoch(
    model: ReferenceLM,
    optimizer: torch.optim.Optimizer,
    data: torch.Tensor,
    *,
    bptt: int = 35,
    clip: float = 0.25,
) -> tuple[float, int, float]:
    """One pass over ``data`` (T, B); returns (mean loss, tokens, seconds)."""
    criterion = nn.CrossEntropyLoss()
    model.train()
    start = time.perf_counter()
    hidden = model.init_hidden(data.size(1))
    total, tokens = 0.0, 0
    for i in range(0, data.size(0) - 1, bptt):
        seq_len = min(bptt, data.size(0) - 1 - i)
        x, y = data[i : i + seq_len], data[i + 1 : i + 1 + seq_len]  # (t, B)
        hidden = tuple(h.detach() for h in hidden)
        optimizer.zero_grad()
        output, hidden = model(x, hidden)
        loss = criterion(output.view(-1, output.size(-1)), y.reshape(-1))
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), clip)
        optimizer.step()
        total += loss.item() * y.numel()
        tokens += y.numel()
    return total / tokens, tokens, time.perf_counter() - start


@torch.no_grad()
def evaluate(model: ReferenceLM, data: torch.Tensor, *, bptt: int = 35) -> float:
    """Mean cross-entropy per token over ``data`` (T, B), the hidden state carried; the
    tutorial's evaluation loop."""
    criterion = nn.CrossEntropyLoss(reduction="sum")
    model.eval()
    hidden = model.init_hidden(data.size(1))
    total, tokens = 0.0, 0
    for i in range(0, data.size(0) - 1, bptt):
        seq_len = min(bptt, data.size(0) - 1 - i)
        x, y = data[i : i + seq_len], data[i + 1 : i + 1 + seq_len]  # (t, B)
        output, hidden = model(x, hidden)
        total += criterion(output.view(-1, output.size(-1)), y.reshape(-1)).item()
        tokens += y.numel()
    return total / tokens
