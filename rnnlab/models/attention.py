"""Attention over encoder outputs: Bahdanau additive and Luong dot / general.

Every mechanism scores each source position against the decoder's current hidden state,
masks padding with ``-inf`` before the softmax (so padded positions get exactly 0 weight),
and returns the weighted sum of the encoder outputs. Whatever does not depend on the
decoder state (the projected keys) is computed once per batch by :meth:`keys`.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

KINDS = ("bahdanau", "dot", "general")


class Attention(nn.Module):
    """Base: subclasses implement :meth:`score`; :meth:`forward` masks and normalises."""

    def __init__(self, *, query_size: int, memory_size: int) -> None:
        super().__init__()
        self.query_size = query_size
        self.memory_size = memory_size

    def keys(self, memory: Tensor) -> Tensor:
        """Per-batch precomputation from the encoder outputs (S, B, C); identity by default."""
        return memory

    def score(self, query: Tensor, keys: Tensor) -> Tensor:  # pragma: no cover
        """Unnormalised scores (B, S) of query (B, H) against keys (S, B, K)."""
        raise NotImplementedError

    def forward(
        self, query: Tensor, keys: Tensor, memory: Tensor, mask: Tensor
    ) -> tuple[Tensor, Tensor]:
        """Context (B, C) and weights (B, S); ``mask`` (S, B) is True on real tokens."""
        scores = self.score(query, keys)  # (B, S)
        scores = scores.masked_fill(~mask.T, float("-inf"))
        weights = torch.softmax(scores, dim=-1)  # (B, S), exactly 0 where masked
        context = torch.einsum("bs,sbc->bc", weights, memory)  # (B, C)
        return context, weights


class DotAttention(Attention):
    """Luong et al. (2015) dot: score = h · m_s (query and memory sizes must match)."""

    def __init__(self, *, query_size: int, memory_size: int) -> None:
        super().__init__(query_size=query_size, memory_size=memory_size)
        if query_size != memory_size:
            raise ValueError(
                f"dot attention needs equal query and memory sizes, got {query_size} and {memory_size}"
            )

    def score(self, query: Tensor, keys: Tensor) -> Tensor:
        return torch.einsum("bh,sbh->bs", query, keys)  # (B, S)


class GeneralAttention(Attention):
    """Luong et al. (2015) general: score = h · W m_s."""

    def __init__(self, *, query_size: int, memory_size: int) -> None:
        super().__init__(query_size=query_size, memory_size=memory_size)
        self.proj = nn.Linear(memory_size, query_size, bias=False)

    def keys(self, memory: Tensor) -> Tensor:
        return self.proj(memory)  # (S, B, H)

    def score(self, query: Tensor, keys: Tensor) -> Tensor:
        return torch.einsum("bh,sbh->bs", query, keys)  # (B, S)


class AdditiveAttention(Attention):
    """Bahdanau et al. (2015) additive: score = v · tanh(W h + U m_s)."""

    def __init__(self, *, query_size: int, memory_size: int) -> None:
        super().__init__(query_size=query_size, memory_size=memory_size)
        self.query_proj = nn.Linear(query_size, query_size, bias=False)
        self.key_proj = nn.Linear(memory_size, query_size)
        self.v = nn.Linear(query_size, 1, bias=False)

    def keys(self, memory: Tensor) -> Tensor:
        return self.key_proj(memory)  # (S, B, H)

    def score(self, query: Tensor, keys: Tensor) -> Tensor:
        hidden = torch.tanh(keys + self.query_proj(query).unsqueeze(0))  # (S, B, H)
        return self.v(hidden).squeeze(-1).T  # (B, S)


def build_attention(kind: str, *, query_size: int, memory_size: int) -> Attention:
    classes = {"bahdanau": AdditiveAttention, "dot": DotAttention, "general": GeneralAttention}
    if kind not in classes:
        raise ValueError(f"attention must be one of {', '.join(KINDS)}, got '{kind}'")
    return classes[kind](query_size=query_size, memory_size=memory_size)
