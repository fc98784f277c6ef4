"""A word-level language model: embedding, recurrent stack, and an output layer: the full
softmax (a linear decoder) or the adaptive softmax, whose tied input is the adaptive input
(:mod:`rnnlab.models.adaptive`).

Dropout sits on the non-recurrent connections only (Zaremba et al. 2014): after the
embedding, between stacked layers (the stack's own ``dropout``), and before the decoder.
The recurrent state is an explicit argument and result, so a task can carry it across
truncated-BPTT windows (and detach it between them).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from rnnlab.cells.base import State
from rnnlab.models.adaptive import AdaptiveSoftmax, FullSoftmax, TiedAdaptiveInput
from rnnlab.models.stack import StackSpec


class LanguageModel(nn.Module):
    """Maps (T, B) token ids to (T, B, V) next-token logits (the adaptive softmax: exact
    log-probabilities), or, given targets, to their (T, B) losses, threading the stack's
    state. ``cutoffs`` None is the full softmax."""

    def __init__(
        self,
        *,
        stack: StackSpec,
        vocab_size: int,
        embedding_size: int | None,
        dropout: float,
        tie_weights: bool,
        init_range: float | None,
        cutoffs: list[int] | None,
        div_value: float,
        head_bias: bool,
    ) -> None:
        super().__init__()
        if vocab_size <= 1:
            raise ValueError(f"vocab_size must be at least 2, got {vocab_size}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        embedding_size = embedding_size or stack.hidden_sizes[-1]
        self.vocab_size = vocab_size
        # the adaptive input is the adaptive softmax's weights: no embedding matrix of its own
        adaptive_input = tie_weights and cutoffs is not None
        if not adaptive_input:  # built first, as always: parameter order is checkpoints' order
            self.embedding = nn.Embedding(vocab_size, embedding_size)
        self.rnn = stack.build(input_size=embedding_size)
        if cutoffs is None:
            self.decoder: FullSoftmax | AdaptiveSoftmax = FullSoftmax(
                self.rnn.hidden_size, vocab_size
            )
        else:
            self.decoder = AdaptiveSoftmax(
                self.rnn.hidden_size,
                vocab_size,
                cutoffs=cutoffs,
                div_value=div_value,
                head_bias=head_bias,
            )
        # p = 0 skips the module entirely (no copy, no mask) so a dropout-free model runs lean
        self.drop = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        if tie_weights:
            self.tie(embedding_size)
        if init_range is not None:
            if init_range <= 0:
                raise ValueError(f"init_range must be positive or null, got {init_range}")
            # the LRU's eigenvalues and the LayerNorms keep the values that define them
            keep = {id(p) for p in self.rnn.structural_parameters()}
            for param in self.parameters():
                if id(param) not in keep:
                    nn.init.uniform_(param, -init_range, init_range)

    def tie(self, embedding_size: int) -> None:
        """Share the input embedding with the output layer (its matrix; the adaptive
        softmax's every weight, as adaptive input)."""
        if self.rnn.hidden_size != embedding_size:
            raise ValueError(
                f"tie_weights needs the last hidden size ({self.rnn.hidden_size}) to equal "
                f"the embedding size ({embedding_size}); set task.embedding_size="
                f"{self.rnn.hidden_size} or change the cell's hidden size"
            )
        if isinstance(self.decoder, AdaptiveSoftmax):
            self.embedding = TiedAdaptiveInput(self.decoder)
        else:
            self.decoder.weight = self.embedding.weight

    def init_state(self, batch_size: int, device: torch.device | str | None = None) -> list[State]:
        return self.rnn.init_state(batch_size, device)

    def forward(
        self, ids: Tensor, state: list[State] | None = None, targets: Tensor | None = None
    ) -> tuple[Tensor, list[State]]:
        """ids (T, B) -> logits (T, B, V) and the stack's final state; with (T, B)
        ``targets``, their losses (T, B) in nats instead of the logits (the adaptive softmax
        scores only each token's own cluster then)."""
        emb = self.drop(self.embedding(ids))  # (T, B, E)
        out, state = self.rnn(emb, state)  # (T, B, H)
        out = self.drop(out)
        if targets is None:
            return self.decoder(out), state  # (T, B, V)
        flat = out.reshape(-1, out.shape[-1])  # (T·B, H)
        return self.decoder.nll(flat, targets.reshape(-1)).view(targets.shape), state  # (T, B)

    @torch.no_grad()
    def sample(
        self,
        prime: Tensor,
        *,
        steps: int,
        temperature: float = 1.0,
        generator: torch.Generator | None = None,
    ) -> list[int]:
        """Feed ``prime`` (P,) ids, then run free for ``steps`` sampled tokens; their ids."""
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        logits, state = self(prime.view(-1, 1))  # (P, 1, V)
        out: list[int] = []
        for _ in range(steps):
            probs = torch.softmax(logits[-1, 0].float() / temperature, dim=-1)  # (V,)
            token = torch.multinomial(probs, 1, generator=generator)  # (1,)
            out.append(int(token))
            logits, state = self(token.view(1, 1), state)  # (1, 1, V)
        return out

    def scalars(self) -> dict[str, float]:
        return self.rnn.scalars()
