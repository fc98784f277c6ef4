"""LRU, the Linear Recurrent Unit (Orvieto, Smith, Gu, Fernando, Gulcehre, Pascanu & De 2023,
"Resurrecting Recurrent Neural Networks for Long Sequences").

A complex diagonal linear recurrence with a real read-out:

    h_t = λ ⊙ h_{t-1} + γ ⊙ (B x_t),    y_t = Re(C h_t) + D x_t

* **exponential parameterisation**: λ = exp(−exp(ν) + i·exp(θ)), so |λ| = exp(−exp(ν)) < 1
  for any ν (stable by construction) and the phase exp(θ) > 0;
* **ring initialisation**: |λ| uniform on the ring r_min ≤ |λ| ≤ r_max (in area), phases
  uniform in [0, max_phase]; r_max near 1 gives the slow modes long memory needs;
* **γ normalisation**: γ = exp(γ_log), initialised to sqrt(1 − |λ|²), so a mode close to
  the unit circle does not blow up its input's variance; it is trained.

B is complex (N × I), C complex (H × N), D diagonal when I = H (else a linear map). The
state has N = H complex units, held as two real tensors ``(h_re, h_im)`` so it obeys the Cell
contract; the scan runs in complex arithmetic. The read-out is linear, so an LRU stack needs
its block's non-linearity (``cell.ffn``; the paper's GLU), which ``conf/cell/lru.yaml`` sets.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from rnnlab.cells.base import State
from rnnlab.cells.scan_cell import ScanCell


class LRUCell(ScanCell):
    """LRU; the state is ``(Re h, Im h)``, each (B, H)."""

    state_size: ClassVar[int] = 2

    def __init__(
        self, *, input_size: int, hidden_size: int, r_min: float, r_max: float, max_phase: float
    ) -> None:
        super().__init__(input_size=input_size, hidden_size=hidden_size)
        if not 0.0 <= r_min < r_max < 1.0:
            raise ValueError(
                f"the LRU's ring needs 0 <= r_min < r_max < 1, got r_min={r_min}, r_max={r_max}: "
                "set cell.layer.r_min below cell.layer.r_max (the paper: 0.9 and 0.999 for "
                "long-range tasks), both below 1"
            )
        if not 0.0 < max_phase <= 2 * math.pi:
            raise ValueError(f"max_phase must be in (0, 2π], got {max_phase}")
        n = hidden_size
        u1, u2 = torch.rand(n), torch.rand(n)
        radius_sq = u1 * (r_max**2 - r_min**2) + r_min**2  # |λ|² uniform on the ring's area
        self.nu_log = nn.Parameter(torch.log(-0.5 * torch.log(radius_sq)))  # (N,)
        self.theta_log = nn.Parameter(torch.log(max_phase * u2))  # (N,)
        self.gamma_log = nn.Parameter(0.5 * torch.log(1 - radius_sq))  # log sqrt(1 - |λ|²)
        # B: rows interleave (Re, Im) of each state unit, so B x views as complex (..., N)
        self.inp = nn.Linear(input_size, 2 * n, bias=False)
        # C: columns interleave (Re C, −Im C), so C·[Re h; Im h] = Re(C h)
        self.out = nn.Linear(2 * n, hidden_size, bias=False)
        self.skip: nn.Module | None = None
        self.d = nn.Parameter(torch.randn(n)) if input_size == hidden_size else None
        if self.d is None:
            self.skip = nn.Linear(input_size, hidden_size, bias=False)
        with torch.no_grad():
            self.inp.weight.normal_(0.0, 1.0 / math.sqrt(2 * input_size))
            self.out.weight.normal_(0.0, 1.0 / math.sqrt(n))

    def set_loop_options(self, **options: Any) -> None:
        super().set_loop_options(**options)
        if self.zoneout > 0:
            raise ValueError(
                "the LRU's output Re(C h) + D x is not its state, so zoneout does not apply: "
                "set cell.zoneout=0"
            )

    def structural_parameters(self) -> list[nn.Parameter]:
        return [self.nu_log, self.theta_log, self.gamma_log]

    def eigenvalues(self) -> Tensor:
        """λ (N,), complex: exp(−exp(ν) + i·exp(θ))."""
        return torch.exp(torch.complex(-torch.exp(self.nu_log), torch.exp(self.theta_log)))

    def project(self, x: Tensor) -> Tensor:
        return self.inp(x)  # (..., 2N), (Re, Im) interleaved

    def coefficients(self, pre: Tensor) -> tuple[Tensor, Tensor]:
        bx = torch.view_as_complex(pre.unflatten(-1, (self.hidden_size, 2)))  # (..., N)
        return self.eigenvalues(), bx * torch.exp(self.gamma_log)

    def emit(self, h: Tensor, x: Tensor) -> Tensor:
        y = self.out(torch.view_as_real(h).flatten(-2))  # Re(C h): (..., H)
        return y + (x * self.d if self.skip is None else self.skip(x))

    def pack(self, state: State) -> Tensor:
        return torch.complex(state[0], state[1])  # (B, N)

    def unpack(self, h: Tensor) -> State:
        return h.real.contiguous(), h.imag.contiguous()

    def scan_floats(self) -> int:
        return 12 * self.hidden_size  # B x, b and h in complex, their gradients, the output
