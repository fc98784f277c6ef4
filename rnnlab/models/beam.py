"""Greedy and batched beam-search decoding for :class:`~rnnlab.models.seq2seq.Seq2Seq`.

Beam search keeps ``beam_size`` hypotheses per sentence for the whole batch at once (the
batch and beam dimensions are flattened to B·K rows, reordered with ``index_select``).
A finished hypothesis stays in its beam and may only emit padding at no cost. The final
choice divides each score by the GNMT length penalty ``((5 + length) / 6) ** alpha``
(Wu et al. 2016); with ``beam_size = 1`` the search is exactly greedy decoding.
"""

from __future__ import annotations

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
    encoded = model.encode(src, src_lengths)
    batch = src.shape[1]
    feed, state = model.initial_feed(encoded), encoded.state
    tokens = src.new_full((batch,), bos_index)  # (B,)
    finished = torch.zeros(batch, dtype=torch.bool, device=src.device)
    outputs, attention = [], []
    for _ in range(max_len):
        logits, feed, state, weights = model.step(tokens, feed, state, encoded)
        tokens = torch.log_softmax(logits.float(), dim=-1).argmax(dim=-1)  # (B,)
        tokens = tokens.masked_fill(finished, model.pad_index)
        outputs.append(tokens)
        attention.append(weights)
        finished |= tokens == eos_index
        if bool(finished.all()):
            break
    ids = torch.stack(outputs, dim=1).tolist()  # (B, T)
    hyps = [strip(row, eos_index=eos_index, pad_index=model.pad_index) for row in ids]
    if not return_attention:
        return hyps, None
    weights = torch.stack(attention, dim=1).cpu()  # (B, T, S)
    lengths = src_lengths.tolist()
    maps = [weights[b, : len(h) + 1, : lengths[b]] for b, h in enumerate(hyps)]  # with EOS row
    return hyps, maps


def length_penalty(lengths: Tensor, alpha: float) -> Tensor:
    return ((5.0 + lengths.float()) / 6.0) ** alpha


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
    if beam_size < 1:
        raise ValueError(f"beam size must be at least 1, got {beam_size}")
    batch, k, device = src.shape[1], beam_size, src.device
    encoded = model.encode(src, src_lengths)
    rows = torch.arange(batch, device=device).repeat_interleave(k)  # (B·K,)
    encoded = encoded.select(rows)
    feed, state = model.initial_feed(encoded), encoded.state
    tokens = src.new_full((batch * k,), bos_index)  # (B·K,)
    scores = torch.full((batch, k), float("-inf"), device=device)
    scores[:, 0] = 0.0  # (B, K): one live hypothesis per sentence to start
    finished = torch.zeros(batch * k, dtype=torch.bool, device=device)
    lengths = torch.zeros(batch * k, dtype=torch.long, device=device)
    base = (torch.arange(batch, device=device) * k).unsqueeze(1)  # (B, 1)
    history: list[Tensor] = []
    backpointers: list[Tensor] = []
    for _ in range(max_len):
        logits, feed, state, _ = model.step(tokens, feed, state, encoded)
        logp = torch.log_softmax(logits.float(), dim=-1)  # (B·K, V)
        vocab = logp.shape[-1]
        done_row = torch.full_like(logp[0], float("-inf"))
        done_row[model.pad_index] = 0.0  # a finished hypothesis only pads, at no cost
        logp = torch.where(finished.unsqueeze(1), done_row, logp)
        total = (scores.reshape(-1, 1) + logp).reshape(batch, k * vocab)  # (B, K·V)
        scores, flat = total.topk(k, dim=1)  # (B, K)
        parent = (base + torch.div(flat, vocab, rounding_mode="floor")).reshape(-1)  # (B·K,)
        tokens = (flat % vocab).reshape(-1)  # (B·K,)
        finished = finished.index_select(0, parent)
        lengths = lengths.index_select(0, parent) + (~finished).long()
        finished = finished | (tokens == eos_index)
        feed = feed.index_select(0, parent)
        state = select_state(state, parent)
        history.append(tokens)
        backpointers.append(parent)
        if bool(finished.all()):
            break
    normalised = scores / length_penalty(lengths.reshape(batch, k), alpha)  # (B, K)
    row = base.squeeze(1) + normalised.argmax(dim=1)  # (B,)
    picked = []
    for tokens_t, parent_t in zip(reversed(history), reversed(backpointers), strict=True):
        picked.append(tokens_t.index_select(0, row))
        row = parent_t.index_select(0, row)
    ids = torch.stack(picked[::-1], dim=1).tolist()  # (B, T)
    return [strip(r, eos_index=eos_index, pad_index=model.pad_index) for r in ids]
