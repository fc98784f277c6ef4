"""An RNN encoder–decoder with attention and input feeding (Luong et al. 2015).

* Encoder: source embeddings into a bidirectional stack of the configured cell. Each
  direction has half the configured hidden size, so the concatenated outputs and states
  have the decoder's size (the OpenNMT ``brnn`` convention). Padding is packed away.
* Bridge: a learned ``tanh(Linear)`` per layer and state tensor maps the concatenated
  forward/backward final states to the decoder's initial state. It iterates over the
  state tuples, so it serves (h,) and (h, c) cells alike.
* Decoder: input feeding — each step reads the previous target embedding concatenated
  with the previous attentional vector ``tanh(W [h_t; context_t])``; the decoder stack is
  stepped one time step at a time (``RecurrentStack.step``), so any cell works.
* Training uses teacher forcing with probability ``teacher_forcing`` per step and
  sentence (otherwise the model's own previous prediction is fed).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import Tensor, nn

from rnnlab.cells.base import State
from rnnlab.models.attention import build_attention
from rnnlab.models.stack import RecurrentStack, StackSpec


@dataclass
class Encoded:
    """What the decoder needs from the encoder, per batch."""

    memory: Tensor  # (S, B, H) encoder outputs, 0 on padding
    keys: Tensor  # (S, B, K) attention keys
    mask: Tensor  # (S, B) True on real tokens
    state: list[State]  # decoder initial state, one tuple per layer

    def select(self, rows: Tensor) -> Encoded:
        """The batch entries ``rows`` (B',), e.g. each sentence repeated beam-size times."""
        return Encoded(
            memory=self.memory.index_select(1, rows),
            keys=self.keys.index_select(1, rows),
            mask=self.mask.index_select(1, rows),
            state=select_state(self.state, rows),
        )


def select_state(state: list[State], rows: Tensor) -> list[State]:
    """Pick batch rows of every tensor of every layer's state tuple."""
    return [tuple(s.index_select(0, rows) for s in layer) for layer in state]


class Bridge(nn.Module):
    """Encoder final states (layer-major, forward/backward) -> decoder initial states."""

    def __init__(self, *, decoder: RecurrentStack) -> None:
        super().__init__()
        self.maps = nn.ModuleList(
            nn.ModuleList(
                nn.Linear(layer.hidden_size, layer.hidden_size) for _ in range(layer.state_size)
            )
            for layer in decoder.layers
        )

    def forward(self, encoder_state: list[State]) -> list[State]:
        out: list[State] = []
        for depth, maps in enumerate(self.maps):
            forward, backward = encoder_state[2 * depth], encoder_state[2 * depth + 1]
            out.append(
                tuple(
                    torch.tanh(m(torch.cat([f, b], dim=-1)))  # (B, H)
                    for m, f, b in zip(maps, forward, backward, strict=True)
                )
            )
        return out


class Seq2Seq(nn.Module):
    """Bidirectional encoder, learned bridge, attentional input-feeding decoder."""

    def __init__(
        self,
        *,
        stack: StackSpec,
        src_vocab_size: int,
        tgt_vocab_size: int,
        pad_index: int,
        embed_dim: int,
        attention: str,
        dropout: float,
        tie_embeddings: bool,
    ) -> None:
        super().__init__()
        if any(h % 2 for h in stack.hidden_sizes):
            raise ValueError(
                f"the bidirectional encoder splits each hidden size in two directions, so "
                f"cell hidden sizes must be even, got {list(stack.hidden_sizes)}"
            )
        self.pad_index = pad_index
        self.src_embed = nn.Embedding(src_vocab_size, embed_dim, padding_idx=pad_index)
        self.tgt_embed = nn.Embedding(tgt_vocab_size, embed_dim, padding_idx=pad_index)
        half = replace(stack, hidden_sizes=tuple(h // 2 for h in stack.hidden_sizes))
        self.encoder = half.build(input_size=embed_dim, bidirectional=True)
        hidden = stack.hidden_sizes[-1]
        # the attentional vector is fed back and read out; with tied embeddings it has the
        # embedding size so the output layer can share the target embedding matrix
        self.feed_size = embed_dim if tie_embeddings else hidden
        self.decoder = stack.build(input_size=embed_dim + self.feed_size)
        self.bridge = Bridge(decoder=self.decoder)
        self.attention = build_attention(attention, query_size=hidden, memory_size=hidden)
        self.combine = nn.Linear(2 * hidden, self.feed_size, bias=False)
        self.out = nn.Linear(self.feed_size, tgt_vocab_size)
        if tie_embeddings:
            self.out.weight = self.tgt_embed.weight
        self.drop = nn.Dropout(dropout)

    def encode(self, src: Tensor, src_lengths: Tensor) -> Encoded:
        """src (S, B) ids, src_lengths (B,) on the host -> :class:`Encoded`. The memory keeps
        all S rows (padding rows are 0 and masked out of attention): cutting it to the longest
        length would read that length back from the device in every step."""
        embedded = self.drop(self.src_embed(src))  # (S, B, E)
        memory, final = self.encoder(embedded, lengths=src_lengths)  # (S, B, H)
        mask = src != self.pad_index  # (S, B)
        return Encoded(memory, self.attention.keys(memory), mask, self.bridge(final))

    def initial_feed(self, encoded: Encoded) -> Tensor:
        return encoded.memory.new_zeros(encoded.memory.shape[1], self.feed_size)  # (B, F)

    def attend(
        self, tokens: Tensor, feed: Tensor, state: list[State], encoded: Encoded
    ) -> tuple[Tensor, list[State], Tensor]:
        """One decoder step up to the attentional vector: tokens (B,), feed (B, F) -> feed, state, weights (B, S)."""
        x = torch.cat([self.drop(self.tgt_embed(tokens)), feed], dim=-1)  # (B, E + F)
        h, state = self.decoder.step(x, state)  # (B, H)
        context, weights = self.attention(h, encoded.keys, encoded.memory, encoded.mask)
        feed = torch.tanh(self.combine(torch.cat([h, context], dim=-1)))  # (B, F)
        return feed, state, weights

    def step(
        self, tokens: Tensor, feed: Tensor, state: list[State], encoded: Encoded
    ) -> tuple[Tensor, Tensor, list[State], Tensor]:
        """One decoder step: tokens (B,), feed (B, F) -> logits (B, V), feed, state, weights (B, S)."""
        feed, state, weights = self.attend(tokens, feed, state, encoded)
        return self.out(self.drop(feed)), feed, state, weights

    def forward(
        self,
        src: Tensor,
        src_lengths: Tensor,
        tgt_in: Tensor,
        *,
        teacher_forcing: float = 1.0,
        keep: Tensor | None = None,
    ) -> Tensor:
        """Logits (T, B, V) for target inputs tgt_in (T, B) that start with BOS; with
        ``keep``, the (N,) flat positions ``t·B + b`` of the real target tokens, logits (N, V)
        of those only (the read-out is the step's largest matmul: padding need not pay for
        it). ``keep`` is an index built on the host, not a boolean mask: selecting by a mask
        makes the device report how many it kept, a wait in every step. Training goes through
        here, not through :meth:`features`, so a DistributedDataParallel wrapper sees every
        step."""
        feeds = self.features(src, src_lengths, tgt_in, teacher_forcing=teacher_forcing)
        if keep is not None:
            feeds = feeds.flatten(0, 1).index_select(0, keep)  # (T·B, F) -> (N, F)
        return self.readout(feeds)  # (T, B, V) or (N, V): one read-out matmul

    def readout(self, feeds: Tensor) -> Tensor:
        """Logits (..., V) of attentional vectors (..., F)."""
        return self.out(self.drop(feeds))

    def features(
        self, src: Tensor, src_lengths: Tensor, tgt_in: Tensor, *, teacher_forcing: float = 1.0
    ) -> Tensor:
        """The attentional vectors (T, B, F) the read-out turns into logits."""
        encoded = self.encode(src, src_lengths)
        feed, state = self.initial_feed(encoded), encoded.state
        tokens = tgt_in[0]  # (B,)
        feeds = []
        for t in range(tgt_in.shape[0]):
            feed, state, _ = self.attend(tokens, feed, state, encoded)
            feeds.append(feed)
            if t + 1 < tgt_in.shape[0]:
                tokens = tgt_in[t + 1]
                if teacher_forcing < 1.0:  # feed the model's own guess where the coin says so
                    own = self.out(feed).argmax(dim=-1)  # (B,)
                    gold = torch.rand(tokens.shape, device=tokens.device) < teacher_forcing
                    tokens = torch.where(gold | (tokens == self.pad_index), tokens, own)
        return torch.stack(feeds, dim=0)  # (T, B, F)
