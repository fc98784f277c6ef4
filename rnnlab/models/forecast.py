"""Forecasting heads around the recurrent stack: direct, encoder–decoder and segment (SegRNN).

Every model maps a batch of windows to forecasts:

    forward(past (B, L, I), future_known (B, H, K), target (B, H, T) | None) -> (B, H, T)

``past`` holds the T target channels first, then past covariates, then the K known
channels; ``future_known`` the known channels over the horizon; ``target`` (training only)
feeds teacher forcing. The recurrent part is always the stack a :class:`StackSpec` builds,
so every cell works in every head; nothing here asks which cell it runs.

* :class:`DirectForecaster`: the stack reads the lookback, a linear layer maps the last
  state to all H·T values at once (plus a linear map of the known future).
* :class:`Seq2SeqForecaster`: an encoder stack reads the lookback; a decoder stack starts
  from its final state and produces the horizon one step at a time from the previous value
  (its own forecast, or the actual one with probability ``teacher_forcing`` in training).
* :class:`SegmentForecaster`: SegRNN (Lin et al. 2023): the lookback cut into segments of
  ``segment`` steps, each embedded by a linear layer and ReLU; one recurrent pass over the
  segments (channels independent: each channel a row of the batch, one fused call); then
  every output segment decoded in parallel from the final state, with a position embedding
  (and a channel embedding when channels are independent) as the one input step, broadcast
  against the states rather than copied out per segment. The last input value is subtracted
  first and added back after.

:class:`RevIN` (Kim et al. 2022) normalises each window's target channels by their own
mean and deviation over the lookback and undoes it on the forecast (``revin=True``).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from rnnlab.models.stack import RecurrentStack, StackSpec

HEADS = ("direct", "seq2seq", "segment")


class RevIN(nn.Module):
    """Reversible instance normalisation of (B, L, T) windows, with a learnt affine map."""

    def __init__(self, channels: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def normalise(self, x: Tensor) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        mean = x.mean(1, keepdim=True).detach()  # (B, 1, T)
        std = (x.var(1, keepdim=True, unbiased=False) + self.eps).sqrt().detach()  # (B, 1, T)
        return (x - mean) / std * self.weight + self.bias, (mean, std)

    def denormalise(self, y: Tensor, stats: tuple[Tensor, Tensor]) -> Tensor:
        mean, std = stats
        return (y - self.bias) / (self.weight + self.eps * self.eps) * std + mean


class Forecaster(nn.Module):
    """Shared by the heads: sizes, RevIN around the head's own ``predict``."""

    def __init__(
        self, *, lookback: int, horizon: int, targets: int, inputs: int, known: int, revin: bool
    ) -> None:
        super().__init__()
        self.lookback, self.horizon = lookback, horizon
        self.targets, self.inputs, self.known = targets, inputs, known
        self.revin = RevIN(targets) if revin else None

    def forward(self, past: Tensor, future_known: Tensor, target: Tensor | None = None) -> Tensor:
        stats = None
        if self.revin is not None:
            normed, stats = self.revin.normalise(past[..., : self.targets])  # (B, L, T)
            past = torch.cat([normed, past[..., self.targets :]], dim=-1)  # (B, L, I)
            if target is not None:
                target = (target - stats[0]) / stats[1] * self.revin.weight + self.revin.bias
        out = self.predict(past, future_known, target)  # (B, H, T)
        return self.revin.denormalise(out, stats) if stats is not None else out

    def predict(self, past: Tensor, future_known: Tensor, target: Tensor | None) -> Tensor:
        raise NotImplementedError

    @property
    def rnn_stacks(self) -> list[RecurrentStack]:
        return [m for m in self.modules() if isinstance(m, RecurrentStack)]


class DirectForecaster(Forecaster):
    """The stack's summary of the lookback (each direction after reading all of it) -> all
    H·T forecasts in one linear map."""

    def __init__(self, *, stack: StackSpec, **sizes: int | bool) -> None:
        super().__init__(**sizes)
        self.rnn = stack.build(input_size=self.inputs)
        self.head = nn.Linear(self.rnn.hidden_size, self.horizon * self.targets)
        self.known_head = (
            nn.Linear(self.horizon * self.known, self.horizon * self.targets)
            if self.known
            else None
        )

    def predict(self, past: Tensor, future_known: Tensor, target: Tensor | None) -> Tensor:
        out, _ = self.rnn(past.transpose(0, 1))  # (L, B, I) -> (L, B, Hd)
        y = self.head(self.rnn.summary(out))  # (B, Hd) -> (B, H·T): each direction whole
        if self.known_head is not None:
            y = y + self.known_head(future_known.flatten(1))  # (B, H·K) -> (B, H·T)
        return y.view(-1, self.horizon, self.targets)  # (B, H, T)


class Seq2SeqForecaster(Forecaster):
    """Encoder stack over the lookback; a decoder stack stepped through the horizon."""

    #: only the encoder's final *states* reach the decoder, so what lies on the encoder's
    #: output path alone gets no gradient: a cell's read-out beyond its state (the LRU's
    #: C and D), the last block's feed-forward, the stack's final norm. Data parallel
    #: training must then look for such parameters at every step (``find_unused_parameters``)
    may_leave_parameters_unused = True

    def __init__(self, *, stack: StackSpec, teacher_forcing: float, **sizes: int | bool) -> None:
        super().__init__(**sizes)
        self.teacher_forcing = teacher_forcing
        # unidirectional, so the encoder's final states are the decoder's initial ones
        self.encoder = stack.build(input_size=self.inputs, bidirectional=False)
        self.decoder = stack.build(input_size=self.targets + self.known, bidirectional=False)
        self.head = nn.Linear(self.decoder.hidden_size, self.targets)

    def predict(self, past: Tensor, future_known: Tensor, target: Tensor | None) -> Tensor:
        _, state = self.encoder(past.transpose(0, 1))  # (L, B, I) -> final states
        previous = past[:, -1, : self.targets]  # (B, T): the last observed values
        if self.training and target is not None and self.teacher_forcing >= 1.0:
            # every step fed the actual previous value: one pass of the stack (its fast path)
            fed = torch.cat([previous.unsqueeze(1), target[:, :-1]], dim=1)  # (B, H, T)
            inputs = torch.cat([fed, future_known], dim=-1).transpose(0, 1)  # (H, B, T+K)
            out, _ = self.decoder(inputs, state)  # (H, B, Hd)
            return self.head(out).transpose(0, 1)  # (B, H, T)
        steps = []
        for t in range(self.horizon):
            x_t = torch.cat([previous, future_known[:, t]], dim=-1)  # (B, T+K)
            h_t, state = self.decoder.step(x_t, state)  # (B, Hd)
            y_t = self.head(h_t)  # (B, T)
            steps.append(y_t)
            previous = y_t
            if self.training and target is not None and self.teacher_forcing > 0:
                keep = torch.rand(y_t.shape[0], 1, device=y_t.device) < self.teacher_forcing
                previous = torch.where(keep, target[:, t], y_t)  # (B, T)
        return torch.stack(steps, dim=1)  # (B, H, T)


class SegmentForecaster(Forecaster):
    """SegRNN: segment embedding, one recurrent pass over segments, parallel decoding."""

    def __init__(
        self,
        *,
        stack: StackSpec,
        segment: int,
        channel_independent: bool,
        dropout: float,
        **sizes: int | bool,
    ) -> None:
        super().__init__(**sizes)
        if self.lookback % segment or self.horizon % segment:
            raise ValueError(
                f"task.segment={segment} must divide task.lookback={self.lookback} and "
                f"task.horizon={self.horizon}"
            )
        self.segment = segment
        self.independent = channel_independent
        self.n_in, self.n_out = self.lookback // segment, self.horizon // segment
        width = stack.hidden_sizes[0]  # d_model: the embedding feeds the first layer
        per_step = 1 if channel_independent else self.inputs
        self.embed = nn.Sequential(nn.Linear(segment * per_step, width), nn.ReLU())
        self.rnn = stack.build(input_size=width, bidirectional=False)
        hidden = self.rnn.hidden_size
        out_channels = 1 if channel_independent else self.targets
        if channel_independent:
            self.position = nn.Parameter(torch.randn(self.n_out, width // 2))
            self.channel = nn.Parameter(torch.randn(self.targets, width - width // 2))
        else:
            self.position = nn.Parameter(torch.randn(self.n_out, width))
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(hidden, segment * out_channels)

    def decoder_inputs(self) -> Tensor:
        """(C·M, d) with channels independent (channel c, position m), else (M, d)."""
        if not self.independent:
            return self.position
        c, m = self.channel.shape[0], self.n_out
        pos = self.position.unsqueeze(0).expand(c, m, -1)  # (C, M, d/2)
        chan = self.channel.unsqueeze(1).expand(c, m, -1)  # (C, M, d/2)
        return torch.cat([pos, chan], dim=-1).reshape(c * m, -1)  # (C·M, d)

    def predict(self, past: Tensor, future_known: Tensor, target: Tensor | None) -> Tensor:
        b = past.shape[0]
        series = past[..., : self.targets] if self.independent else past  # (B, L, c)
        last = past[:, -1:, : self.targets].detach()  # (B, 1, T)
        if self.independent:
            series = series - last
            x = series.permute(0, 2, 1).reshape(-1, self.n_in, self.segment)  # (B·T, N, W)
        else:
            series = torch.cat(
                [series[..., : self.targets] - last, series[..., self.targets :]], -1
            )
            x = series.reshape(b, self.n_in, self.segment * self.inputs)  # (B, N, W·I)
        # segments time-major before the embedding, so its (N, B', d) output is contiguous
        _, state = self.rnn(self.embed(x.transpose(0, 1)))  # (N, B', d) -> final states
        h = self.decode(state, b)  # (B, C or 1, M, Hd)
        y = self.head(self.dropout(h))  # (B, C or 1, M, W·c)
        if self.independent:
            y = y.reshape(b, self.targets, self.horizon).transpose(1, 2)  # (B, H, T)
        else:
            y = y.reshape(b, self.horizon, self.targets)  # (B, M, W, T) -> (B, H, T)
        return y + last

    def decode(self, state: list[tuple[Tensor, ...]], b: int) -> Tensor:
        """Every output segment in parallel: one recurrent step from each row's final state
        with each segment's query as input -> (B, C or 1, M, Hd).

        The M queries are the same for every row and each row's state the same for its M
        queries, so with broadcasting cells the step runs on queries (C or 1, M, d) against
        states (B, C or 1, 1, H): each input and recurrent projection once, not once per
        (row, segment) pair as the repeated batch of SegRNN's reference code computes them.
        """
        if not self.rnn.broadcasts:
            return self.decode_repeated(state, b)
        queries = self.decoder_inputs()  # (Q, d): Q = C·M or M
        groups = queries.shape[0] // self.n_out  # C with channels independent, else 1
        q = queries.view(groups, self.n_out, -1)  # (C or 1, M, d)
        rows = [tuple(s.view(b, groups, 1, -1) for s in layer) for layer in state]
        return self.rnn.broadcast_step(q, rows)  # (B, C or 1, M, Hd)

    def decode_repeated(self, state: list[tuple[Tensor, ...]], b: int) -> Tensor:
        """:meth:`decode` for any cell: the (row, segment) pairs as one batch of B'·M rows, a
        length-1 sequence through the stack (SegRNN's reference code)."""
        queries = self.decoder_inputs()  # (Q, d)
        groups, per_row = queries.shape[0] // self.n_out, self.n_out
        state = [tuple(s.repeat_interleave(per_row, 0) for s in layer) for layer in state]
        q = queries.expand(b, -1, -1).reshape(-1, queries.shape[-1])  # (B·Q, d) = (B'·M, d)
        h, _ = self.rnn(q.unsqueeze(0), state)  # (1, B'·M, Hd)
        return h[0].view(b, groups, per_row, -1)  # (B, C or 1, M, Hd)
