"""Vanilla (Elman) RNN cells with a non-linearity: ``rnn_tanh`` and ``rnn_relu``.

h_t = act(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh), the function ``nn.RNN`` computes.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor, nn

from rnnlab.cells.base import State
from rnnlab.cells.fused import FusedCell


class RNNTanhCell(FusedCell):
    """tanh RNN; fused path is ``nn.RNN(nonlinearity='tanh')``."""

    fused_module = nn.RNN
    fused_kwargs: ClassVar[dict] = {"nonlinearity": "tanh"}

    @staticmethod
    def activation(z: Tensor) -> Tensor:
        return torch.tanh(z)

    def update(self, gi_t: Tensor, gh_t: Tensor, state: State) -> tuple[Tensor, State]:
        h = self.activation(gi_t + gh_t)  # (B, H)
        return h, (h,)


class RNNReLUCell(RNNTanhCell):
    """ReLU RNN; fused path is ``nn.RNN(nonlinearity='relu')``."""

    fused_kwargs: ClassVar[dict] = {"nonlinearity": "relu"}

    @staticmethod
    def activation(z: Tensor) -> Tensor:
        return torch.relu(z)
