"""Output layers of a language model: the full softmax and the adaptive softmax, with the
adaptive input embedding tied to the latter.

The adaptive softmax (Grave et al. 2017, ``torch.nn.AdaptiveLogSoftmaxWithLoss``) splits a
vocabulary sorted by frequency at ``cutoffs``: a head of the most frequent words plus one
entry per tail cluster, scored at full width for every token, and tail clusters of rarer
words, each scored through a narrower projection (``hidden / div_value ** (i + 1)``) and only
for the tokens whose target falls in it. Its log-probabilities are exact: they are a proper
distribution over the whole vocabulary (``log_prob``), so perplexity compares with the full
softmax's.

The adaptive input (Baevski & Auli 2019) embeds the same bands at the same widths: a head word
by its row of the head's weight, a tail word by its row of its cluster's output matrix, mapped
back to the model width through the cluster's projection (transposed). Tied so, it has no
weights of its own.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

#: the default cutoffs: the head holds the words that cover this share of the training
#: tokens, the first tail cluster those up to the next share, the last one the rest
COVERAGE = (0.9, 0.98)
#: a cluster smaller than this many words is merged into the next (its projection and its
#: entry in the head would cost more than its words save)
SMALLEST_CLUSTER = 1000
#: cutoffs are rounded up to a multiple of this (the head's width feeds a matrix product)
ALIGN = 8


def check_cutoffs(cutoffs: Sequence[int], vocab_size: int) -> None:
    """Cutoffs must be positive, strictly increasing and below ``vocab_size``."""
    values = list(cutoffs)
    if not values:
        raise ValueError("task.cutoffs is empty; give at least one cutoff, or null for the default")
    if any(b <= a for a, b in zip(values, values[1:], strict=False)) or values[0] <= 0:
        raise ValueError(
            f"task.cutoffs={values} must be positive and strictly increasing "
            "(e.g. [2000, 8000]: the head holds the 2000 most frequent words)"
        )
    if values[-1] >= vocab_size:
        raise ValueError(
            f"task.cutoffs={values} must all be below the vocabulary size {vocab_size} "
            f"(the last cluster runs from the last cutoff to {vocab_size})"
        )


def default_cutoffs(counts: Tensor) -> list[int]:
    """Cutoffs from the frequency curve: ``counts`` (V,) is how often each id occurs in the
    training text, ids in vocabulary order (most frequent first, specials before: the
    curve as the head and clusters will hold it). Each cutoff is the first id whose words up
    to it cover a :data:`COVERAGE` share of the tokens, rounded up to :data:`ALIGN`; clusters
    smaller than :data:`SMALLEST_CLUSTER` are dropped. Empty when the vocabulary is too small
    to be worth splitting."""
    vocab_size = counts.numel()
    cumulative = counts.double().cumsum(0) / counts.sum().clamp(min=1)  # (V,)
    cutoffs: list[int] = []
    for share in COVERAGE:
        rank = int(torch.searchsorted(cumulative, torch.tensor(share, dtype=torch.float64))) + 1
        rank = -(-rank // ALIGN) * ALIGN
        last = cutoffs[-1] if cutoffs else 0
        if rank - last >= SMALLEST_CLUSTER and vocab_size - rank >= SMALLEST_CLUSTER:
            cutoffs.append(rank)
    return cutoffs


class FullSoftmax(nn.Linear):
    """A linear decoder over the whole vocabulary: called, it gives (N, V) logits (softmax
    and log-softmax of them are the model's distribution). A ``nn.Linear``, so checkpoints
    keep the ``decoder.weight`` / ``decoder.bias`` keys they always had."""

    def nll(self, hidden: Tensor, targets: Tensor) -> Tensor:
        """(N, H), (N,) -> (N,) negative log-likelihood of each target, in nats."""
        logits = self(hidden)  # (N, V)
        return F.cross_entropy(logits.float(), targets, reduction="none")


class AdaptiveSoftmax(nn.Module):
    """``torch.nn.AdaptiveLogSoftmaxWithLoss``, with the interface of :class:`FullSoftmax`:
    called, (N, V) log-probabilities; ``nll``, the loss of given targets."""

    def __init__(
        self,
        hidden_size: int,
        vocab_size: int,
        *,
        cutoffs: Sequence[int],
        div_value: float,
        head_bias: bool,
    ) -> None:
        super().__init__()
        check_cutoffs(cutoffs, vocab_size)
        # the head's bias is the unigram prior the full softmax's bias learns; torch leaves it
        # off by default, and without it PTB's ptb_small_adaptive ended 2 epochs at val ppl
        # 154.8 against the full softmax's 146.2 (docs/benchmarks.md, "Large vocabularies")
        self.adaptive = nn.AdaptiveLogSoftmaxWithLoss(
            hidden_size, vocab_size, list(cutoffs), div_value=div_value, head_bias=head_bias
        )

    # both run in fp32 with autocast off: the module mixes its own output buffer (the
    # input's dtype) with what its layers return, which autocast would make bf16

    def forward(self, hidden: Tensor) -> Tensor:
        """(..., H) -> (..., V) exact log-probabilities over the whole vocabulary (in the
        place of logits: their softmax is the same distribution)."""
        flat = hidden.reshape(-1, hidden.shape[-1]).float()  # (N, H)
        with torch.autocast(hidden.device.type, enabled=False):
            logprob = self.adaptive.log_prob(flat)  # (N, V)
        return logprob.view(*hidden.shape[:-1], -1)  # (..., V)

    def nll(self, hidden: Tensor, targets: Tensor) -> Tensor:
        """(N, H), (N,) -> (N,) negative log-likelihood of each target, in nats (the head for
        every token, each tail cluster for its own tokens only)."""
        with torch.autocast(hidden.device.type, enabled=False):
            nll = -self.adaptive(hidden.float(), targets).output  # (N,)
        if not torch.is_grad_enabled():
            return nll
        # a batch may hold no word of a small cluster, whose weights would then get no
        # gradient; DistributedDataParallel needs every parameter in every step's graph, so
        # each tail weight joins it with weight 0 (a zero gradient, the same update)
        idle = sum(w.sum() for w in self.adaptive.tail.parameters())
        return nll + 0.0 * idle


class TiedAdaptiveInput(nn.Module):
    """Adaptive input embeddings sharing every weight of an :class:`AdaptiveSoftmax`: a head
    word is its row of the head's weight (width H), a word of tail cluster i its row of the
    cluster's output matrix (width H / div^(i+1)) times the cluster's projection, transposed
    (back to width H)."""

    def __init__(self, softmax: AdaptiveSoftmax) -> None:
        super().__init__()
        # a tuple, not an attribute: the softmax is the parent's module, not a second copy of
        # it in this one's state_dict
        self.tied = (softmax.adaptive,)
        self.embedding_dim = softmax.adaptive.in_features

    def forward(self, ids: Tensor) -> Tensor:
        """(...) ids -> (..., H). Every band is looked up for every token (ids clamped into
        it) and the token's own band kept: no data-dependent shapes, so no device sync."""
        adaptive = self.tied[0]
        bounds = [0, *adaptive.cutoffs]  # cutoffs end with the vocabulary size
        head = adaptive.head.weight[: adaptive.shortlist_size]  # (shortlist, H)
        out = F.embedding(ids.clamp(max=adaptive.shortlist_size - 1), head)  # (..., H)
        for i, cluster in enumerate(adaptive.tail):
            low, high = bounds[i + 1], bounds[i + 2]
            project, words = cluster[0].weight, cluster[1].weight  # (h, H), (size, h)
            local = (ids - low).clamp(0, high - low - 1)  # (...) ids within the band
            band = F.embedding(local, words) @ project  # (..., h) @ (h, H) -> (..., H)
            inside = ((ids >= low) & (ids < high)).unsqueeze(-1)  # (..., 1)
            out = torch.where(inside, band, out)
        return out
