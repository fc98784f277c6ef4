"""Gated-feedback RNN (Chung, Gulcehre, Cho & Bengio 2015, "Gated Feedback Recurrent Neural
Networks"), with tanh units.

A GF-RNN is a stack of L recurrent layers in which every layer j at time t reads *every*
layer's state at t−1, each through a scalar global reset gate:

    g^{i→j} = σ(w_g^{i→j} · h^{j−1}_t + u_g^{i→j} · h*_{t−1})           (one scalar per i, j)
    h^j_t   = tanh(W^{j−1→j} h^{j−1}_t + b^j + Σ_i g^{i→j} U^{i→j} h^i_{t−1})

with h^0_t = x_t and h*_{t−1} the concatenation of all L states at t−1 (the paper's eq. 5–6,
tanh variant). The feedback spans layers, so the whole L-layer block is **one Cell** whose
state tuple holds one tensor per inner layer, ``(h^1, ..., h^L)``, and whose output is the top
layer h^L. It has no fused kernel: it always runs the per-step loop (compiled or not). The
inner depth is the cell's own ``layers`` option (``cell.layer.layers``); the stack's
``cell.num_layers`` stacks whole blocks (1 is the paper's model), so the stack, bidirectional
layers and every regulariser work unchanged.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from rnnlab.cells.base import Cell, State


class GatedFeedbackRNN(Cell):
    """An L-layer gated-feedback tanh RNN as one cell; the state is ``(h^1, ..., h^L)``."""

    def __init__(self, *, input_size: int, hidden_size: int, layers: int) -> None:
        super().__init__(input_size=input_size, hidden_size=hidden_size)
        if layers < 1:
            raise ValueError(f"a gated-feedback RNN needs at least one inner layer, got {layers}")
        self.layers = layers
        self.state_size = layers  # one state tensor per inner layer
        h, n = hidden_size, layers
        # bottom-up input of layer j: W^{j-1→j} (H rows) and the gate weights w_g^{·→j} (L rows)
        self.inputs = nn.ModuleList(nn.Linear(input_size if j == 0 else h, h + n) for j in range(n))
        # recurrent weights of layer j on all L previous states: U^{i→j} side by side (H, L·H)
        self.recurrent = nn.ModuleList(nn.Linear(n * h, h, bias=False) for _ in range(n))
        # gate weights u_g^{i→j} for all i, j at once: (L·L, L·H)
        self.gate_recurrent = nn.Linear(n * h, n * n, bias=False)

    def output(self, state: State) -> Tensor:
        return state[-1]

    def begin_sequence(self, x: Tensor) -> tuple[Tensor, Any]:
        return self.inputs[0](x), None  # (T, B, H + L): layer 1's input terms for every step

    def forward(self, x_t: Tensor, state: State) -> tuple[Tensor, State]:
        return self.step(self.inputs[0](x_t), state, None)

    def step(self, p_t: Tensor, state: State, shared: Any) -> tuple[Tensor, State]:
        n, h = self.layers, self.hidden_size
        batch = p_t.shape[0]
        previous = torch.cat(state, dim=1)  # h*_{t-1}: (B, L·H)
        gate_rec = self.gate_recurrent(previous).view(batch, n, n)  # (B, j, i)
        stacked = previous.view(batch, n, h)  # (B, L, H)
        new: list[Tensor] = []
        below = p_t  # layer 1's projected input
        for j in range(n):
            proj = below if j == 0 else self.inputs[j](new[-1])  # (B, H + L)
            gates = torch.sigmoid(proj[:, h:] + gate_rec[:, j])  # g^{i→j}: (B, L)
            gated = (gates.unsqueeze(-1) * stacked).reshape(batch, n * h)  # (B, L·H)
            new.append(torch.tanh(proj[:, :h] + self.recurrent[j](gated)))  # (B, H)
        return new[-1], tuple(new)
