"""Greedy and batched beam-search decoding for :class:`~rnnlab.models.seq2seq.Seq2Seq`.

Beam search keeps ``beam_size`` hypotheses per sentence for the whole batch at once (the
batch and beam dimensions are flattened to B·K rows, reordered with ``index_select``).
A finished hypothesis stays in its beam and may only emit padding at no cost; a sentence leaves
the batch once no live hypothesis can beat its best finished one (in greedy decoding, at its
EOS). The final
choice divides each score by the GNMT length penalty ``((5 + length) / 6) ** alpha``
(Wu et al. 2016); with ``beam_size = 1`` the search is exactly greedy decoding.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import torch
from torch import Tensor

from rnnlab.models.seq2seq import Seq2Seq, select_state


def strip(ids: list[int], *, eos_index: int, pad_index: int) -> list[int]:
    """Ids up to (not including) the first EOS, padding dropped."""
    out = []
    for i in ids:
        if i == eos_index:
            break
        if i != pad_index:
            out.append(i)
    return out


@dataclass
class Hypothesis:
    """One decoded target: its ids (EOS excluded) and its score, the summed log-probability
    of its tokens (EOS included) over the GNMT length penalty of their number."""

    ids: list[int]
    score: float


@torch.no_grad()
def greedy_steps(
    model: Seq2Seq,
    src: Tensor,
    src_lengths: Tensor,
    *,
    bos_index: int,
    eos_index: int,
    max_len: int,
    keep_attention: bool = False,
) -> tuple[Tensor, Tensor, Tensor, list[Tensor]]:
    """The argmax token at every step: ids (B, T), their summed log-probabilities (B,) and
    counts (B,) up to the first EOS (included), and, with ``keep_attention``, the attention
    of each step (B, S).

    A sentence leaves the active batch at its EOS, as in beam search: the steps after it
    would only pad it, and in a batch of mixed lengths (a served request is not sorted by
    length) they are most of the work. The check that some row finished replaces the
    check that all did, so the step reads the device as often as before.
    """
    encoded = model.encode(src, src_lengths)
    batch, device = src.shape[1], src.device
    feed, state = model.initial_feed(encoded), encoded.state
    tokens = src.new_full((batch,), bos_index)  # (n,) the active rows' last tokens
    alive = torch.arange(batch, device=device)  # (n,) the sentence each active row is
    ids = src.new_full((batch, max_len), model.pad_index)  # (B, max_len)
    total = torch.zeros(batch, dtype=torch.float32, device=device)  # (B,) logp is float32
    lengths = torch.zeros(batch, dtype=torch.long, device=device)  # (B,)
    attention, steps = [], max_len
    for t in range(max_len):
        logits, feed, state, weights = model.step(tokens, feed, state, encoded)
        logp = torch.log_softmax(logits.float(), dim=-1)  # (n, V)
        tokens = logp.argmax(dim=-1)  # (n,)
        total.index_add_(0, alive, logp.gather(1, tokens.unsqueeze(1)).squeeze(1))
        lengths.index_add_(0, alive, torch.ones_like(tokens))
        ids[alive, t] = tokens
        if keep_attention:
            attention.append(
                weights.new_zeros(batch, weights.shape[1]).index_copy_(0, alive, weights)
            )
        done = tokens == eos_index  # (n,)
        if bool(done.any()):
            keep = (~done).nonzero().squeeze(1)  # (n',) rows still decoding
            if keep.numel() == 0:
                steps = t + 1
                break
            alive, tokens, encoded = alive[keep], tokens[keep], encoded.select(keep)
            feed, state = feed.index_select(0, keep), select_state(state, keep)
    return ids[:, :steps], total, lengths, attention  # ids: (B, T)


@torch.no_grad()
def greedy_decode(
    model: Seq2Seq,
    src: Tensor,
    src_lengths: Tensor,
    *,
    bos_index: int,
    eos_index: int,
    max_len: int,
    return_attention: bool = False,
) -> tuple[list[list[int]], list[Tensor] | None]:
    """Token ids per sentence (EOS excluded) and, optionally, attention (T_i, S_i) each."""
    ids, _, _, attention = greedy_steps(
        model,
        src,
        src_lengths,
        bos_index=bos_index,
        eos_index=eos_index,
        max_len=max_len,
        keep_attention=return_attention,
    )
    hyps = [strip(row, eos_index=eos_index, pad_index=model.pad_index) for row in ids.tolist()]
    if not return_attention:
        return hyps, None
    weights = torch.stack(attention, dim=1).cpu()  # (B, T, S)
    lengths = src_lengths.tolist()
    maps = [weights[b, : len(h) + 1, : lengths[b]] for b, h in enumerate(hyps)]  # with EOS row
    return hyps, maps


@torch.no_grad()
def greedy_search(
    model: Seq2Seq,
    src: Tensor,
    src_lengths: Tensor,
    *,
    bos_index: int,
    eos_index: int,
    max_len: int,
    alpha: float = 0.0,
) -> list[Hypothesis]:
    """:func:`greedy_decode`'s hypotheses with their scores (as a beam of one scores them)."""
    ids, total, lengths, _ = greedy_steps(
        model, src, src_lengths, bos_index=bos_index, eos_index=eos_index, max_len=max_len
    )
    scores = (total / length_penalty(lengths, alpha)).tolist()  # (B,)
    rows = ids.tolist()
    return [
        Hypothesis(strip(row, eos_index=eos_index, pad_index=model.pad_index), score)
        for row, score in zip(rows, scores, strict=True)
    ]


def length_penalty(lengths: Tensor, alpha: float) -> Tensor:
    return ((5.0 + lengths.float()) / 6.0) ** alpha


def penalty_ceiling(max_len: int, alpha: float, *, device: torch.device) -> Tensor:
    """The largest penalty a length up to ``max_len`` has: at ``max_len`` for alpha >= 0, and
    1 (length 0) for alpha < 0, where the penalty shrinks with length."""
    return length_penalty(torch.tensor(max_len, device=device), alpha).clamp(min=1.0)


def settled(
    scores: Tensor, finished: Tensor, normalised: Tensor, *, ceiling: Tensor, n_best: int = 1
) -> Tensor:
    """Which sentences no live hypothesis can still enter the ``n_best``, (B,) bool from
    (B, K) each.

    A live hypothesis's raw score s < 0 only falls as it grows, and its penalty is at most
    ``ceiling`` (the largest penalty a length up to the limit has), so s / ceiling bounds the
    normalised score of every completion it may have. Once the n-th best finished hypothesis
    reaches the largest such bound, continuing cannot change the choice: the sentence leaves
    the active batch.
    """
    minus_inf = torch.tensor(float("-inf"), device=scores.device)
    done = torch.where(finished, normalised, minus_inf)  # (B, K)
    nth_done = done.topk(n_best, dim=1).values[:, -1]  # (B,)
    best_live = torch.where(finished, minus_inf, scores / ceiling).amax(dim=1)  # (B,)
    return nth_done >= best_live


def extend(
    logits: Tensor, scores: Tensor, finished: Tensor, *, pad_index: int
) -> tuple[Tensor, Tensor, Tensor]:
    """The K best extensions of each sentence's K hypotheses: logits (n·K, V), scores (n, K),
    finished (n·K,) -> new scores (n, K), parent rows (n·K,) and tokens (n·K,).

    A sentence's K best extensions lie among each hypothesis's own K best tokens, so the
    search ranks K·K candidates, not K·V. A finished hypothesis only pads, at no cost.
    """
    n, k = scores.shape
    width = min(k, logits.shape[-1])
    logp, best_ids = torch.log_softmax(logits.float(), dim=-1).topk(width, dim=-1)  # (n·K, W)
    padding_only = torch.full((width,), float("-inf"), device=logits.device)
    padding_only[0] = 0.0  # one candidate (pad, 0), the rest impossible
    logp = torch.where(finished.unsqueeze(1), padding_only, logp)
    best_ids = best_ids.masked_fill(finished.unsqueeze(1), pad_index)
    total = (scores.reshape(-1, 1) + logp).reshape(n, k * width)  # (n, K·W)
    scores, flat = total.topk(k, dim=1)  # (n, K)
    base = (torch.arange(n, device=logits.device) * k).unsqueeze(1)  # (n, 1)
    parent = (base + torch.div(flat, width, rounding_mode="floor")).reshape(-1)  # (n·K,)
    tokens = best_ids.reshape(-1).index_select(0, parent * width + (flat % width).reshape(-1))
    return scores, parent, tokens


@torch.no_grad()
def beam_decode(
    model: Seq2Seq,
    src: Tensor,
    src_lengths: Tensor,
    *,
    bos_index: int,
    eos_index: int,
    max_len: int,
    beam_size: int = 5,
    alpha: float = 0.0,
) -> list[list[int]]:
    """The best hypothesis per sentence (EOS excluded) under the length-penalised score."""
    found = beam_search(
        model,
        src,
        src_lengths,
        bos_index=bos_index,
        eos_index=eos_index,
        max_len=max_len,
        beam_size=beam_size,
        alpha=alpha,
    )
    return [hyps[0].ids for hyps in found]


@torch.no_grad()
def beam_search(
    model: Seq2Seq,
    src: Tensor,
    src_lengths: Tensor,
    *,
    bos_index: int,
    eos_index: int,
    max_len: int,
    beam_size: int = 5,
    alpha: float = 0.0,
    n_best: int = 1,
) -> list[list[Hypothesis]]:
    """The ``n_best`` hypotheses per sentence, best first, under the length-penalised score.

    A sentence leaves the active batch as soon as no live hypothesis can enter its n best
    finished ones (:func:`settled`), so the steps run only on rows that can still change the
    answer; each hypothesis carries its own token history, reordered with its beam.
    """
    if not 1 <= n_best <= beam_size:
        raise ValueError(f"n_best must be between 1 and the beam size {beam_size}, got {n_best}")
    batch, k, device = src.shape[1], beam_size, src.device
    encoded = model.encode(src, src_lengths)
    encoded = encoded.select(torch.arange(batch, device=device).repeat_interleave(k))
    feed, state = model.initial_feed(encoded), encoded.state
    tokens = src.new_full((batch * k,), bos_index)  # (B·K,)
    scores = torch.full((batch, k), float("-inf"), device=device)
    scores[:, 0] = 0.0  # (B, K): one live hypothesis per sentence to start
    finished = torch.zeros(batch * k, dtype=torch.bool, device=device)
    lengths = torch.zeros(batch * k, dtype=torch.long, device=device)
    history = src.new_empty((batch * k, 0))  # (B·K, t): each hypothesis's tokens so far
    alive = list(range(batch))  # the sentence each active batch entry is
    ceiling = penalty_ceiling(max_len, alpha, device=device)
    best: list[list[Hypothesis]] = [[] for _ in range(batch)]
    strip_ids = partial(strip, eos_index=eos_index, pad_index=model.pad_index)
    for t in range(max_len):
        logits, feed, state, _ = model.step(tokens, feed, state, encoded)
        scores, parent, tokens = extend(logits, scores, finished, pad_index=model.pad_index)
        finished = finished.index_select(0, parent)
        lengths = lengths.index_select(0, parent) + (~finished).long()
        finished = finished | (tokens == eos_index)
        history = torch.cat([history.index_select(0, parent), tokens.unsqueeze(1)], dim=1)
        n = len(alive)
        normalised = scores / length_penalty(lengths.reshape(n, k), alpha)  # (n, K)
        done = settled(scores, finished.reshape(n, k), normalised, ceiling=ceiling, n_best=n_best)
        if t + 1 == max_len:
            done = torch.ones_like(done)
        if bool(done.any()):  # answer the settled sentences, then drop their rows
            answer(best, alive, done, normalised, history, n_best=n_best, strip_ids=strip_ids)
            keep = (~done).nonzero().squeeze(1)  # (n',) entries still searching
            if keep.numel() == 0:
                break
            alive = [alive[i] for i in keep.tolist()]
            rows = (keep.unsqueeze(1) * k + torch.arange(k, device=device)).reshape(-1)  # (n'·K,)
            parent, encoded = parent.index_select(0, rows), encoded.select(rows)
            tokens, finished = tokens.index_select(0, rows), finished.index_select(0, rows)
            lengths, history = lengths.index_select(0, rows), history.index_select(0, rows)
            scores = scores.index_select(0, keep)
        feed, state = feed.index_select(0, parent), select_state(state, parent)
    return best


def answer(
    best: list[list[Hypothesis]],
    alive: list[int],
    done: Tensor,
    normalised: Tensor,
    history: Tensor,
    *,
    n_best: int,
    strip_ids,
) -> None:
    """Write the ``n_best`` hypotheses of each settled entry (``done``: (n,) bool) into
    ``best`` at its sentence: (n, K) normalised scores, (n·K, t) token histories. Ties go to
    the lower beam row, as argmax breaks them (a stable sort)."""
    n, k = normalised.shape
    order = normalised.argsort(dim=1, descending=True, stable=True)[:, :n_best].tolist()
    values = normalised.tolist()  # (n, K)
    for entry in done.nonzero().squeeze(1).tolist():
        best[alive[entry]] = [
            Hypothesis(strip_ids(history[entry * k + j].tolist()), values[entry][j])
            for j in order[entry]
        ]
