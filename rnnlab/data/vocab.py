"""A token vocabulary: ids for strings, built from training text, saved with checkpoints."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any


class Vocab:
    """Maps tokens to ids and back. Specials come first, in the order given."""

    def __init__(self, itos: Sequence[str], *, unk: str | None = "<unk>") -> None:
        self.itos = list(itos)
        self.stoi = {token: index for index, token in enumerate(self.itos)}
        if len(self.stoi) != len(self.itos):
            raise ValueError("vocabulary tokens must be unique")
        self.unk = unk
        self.unk_index = self.stoi.get(unk) if unk is not None else None

    @classmethod
    def build(
        cls,
        tokens: Iterable[str],
        *,
        specials: Sequence[str] = ("<unk>",),
        max_size: int | None = None,
        min_freq: int = 1,
        unk: str | None = "<unk>",
    ) -> Vocab:
        """Most frequent first (ties by first appearance), after the specials."""
        counts = Counter(tokens)
        ranked = [t for t, c in counts.most_common() if c >= min_freq and t not in specials]
        if max_size is not None:
            ranked = ranked[: max(0, max_size - len(specials))]
        return cls([*specials, *ranked], unk=unk)

    def __len__(self) -> int:
        return len(self.itos)

    def __contains__(self, token: str) -> bool:
        return token in self.stoi

    def index(self, token: str) -> int:
        found = self.stoi.get(token, self.unk_index)
        if found is None:
            raise KeyError(f"'{token}' is not in the vocabulary and there is no unknown token")
        return found

    def encode(self, tokens: Iterable[str]) -> list[int]:
        return [self.index(t) for t in tokens]

    def decode(self, ids: Iterable[int]) -> list[str]:
        return [self.itos[i] for i in ids]

    def digest(self) -> str:
        """sha256 of the tokens in id order: two vocabularies with it encode alike."""
        import hashlib
        import json

        return hashlib.sha256(json.dumps(self.itos).encode()).hexdigest()

    def state_dict(self) -> dict[str, Any]:
        return {"itos": list(self.itos), "unk": self.unk}

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> Vocab:
        return cls(state["itos"], unk=state.get("unk"))
