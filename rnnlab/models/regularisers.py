"""Dropout variants for recurrent models that sit outside the cells.

* :class:`LockedDropout`: variational dropout (Gal & Ghahramani 2016) on a time-major
  sequence: one mask per sequence and feature, shared by every time step. The stack uses it
  between layers when ``cell.locked_dropout=true``; language models use it on embeddings and
  outputs (AWD-LSTM's ``dropouti``/``dropout``).
* :func:`embedding_dropout` / :class:`EmbeddingDropout`: drop whole words, i.e. rows of the
  embedding matrix, for a whole batch (Gal & Ghahramani 2016; Merity et al. 2017), scaled by
  1/(1−p) so the expected embedding is unchanged.

Weight-drop (DropConnect on ``W_hh``) and layer norm are cell options
(:mod:`rnnlab.cells.fused`); zoneout is a loop option (:mod:`rnnlab.cells.base`). All of them,
like these, are exactly off in eval mode (zoneout uses its expectation there).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn


def check_probability(p: float, what: str) -> float:
    if not 0.0 <= p < 1.0:
        raise ValueError(f"{what} must be in [0, 1), got {p}")
    return float(p)


class LockedDropout(nn.Module):
    """Dropout with one mask per (sequence, feature), the same at every time step."""

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        self.p = check_probability(p, "locked dropout")

    def forward(self, x: Tensor) -> Tensor:
        """x: (T, B, F) -> same shape; identity in eval mode or with p = 0."""
        if not self.training or self.p == 0:
            return x
        keep = 1 - self.p
        mask = x.new_empty(1, *x.shape[1:]).bernoulli_(keep) / keep  # (1, B, F)
        return x * mask

    def extra_repr(self) -> str:
        return f"p={self.p}"


def embedding_dropout(
    embedding: nn.Embedding, words: Tensor, p: float, *, training: bool = True
) -> Tensor:
    """Look up ``words`` in ``embedding`` with each vocabulary row dropped with probability p."""
    check_probability(p, "embedding dropout")
    weight = embedding.weight  # (V, E)
    if training and p > 0:
        keep = 1 - p
        mask = weight.new_empty(weight.shape[0], 1).bernoulli_(keep) / keep  # (V, 1)
        weight = weight * mask
    return F.embedding(
        words,
        weight,
        embedding.padding_idx,
        embedding.max_norm,
        embedding.norm_type,
        embedding.scale_grad_by_freq,
        embedding.sparse,
    )


class EmbeddingDropout(nn.Embedding):
    """``nn.Embedding`` whose lookups drop whole words in training (``dropout`` = p)."""

    def __init__(self, num_embeddings: int, embedding_dim: int, *, dropout: float = 0.0, **kw):
        super().__init__(num_embeddings, embedding_dim, **kw)
        self.dropout = check_probability(dropout, "embedding dropout")

    def forward(self, words: Tensor) -> Tensor:
        return embedding_dropout(self, words, self.dropout, training=self.training)


__all__ = ["EmbeddingDropout", "LockedDropout", "embedding_dropout"]
