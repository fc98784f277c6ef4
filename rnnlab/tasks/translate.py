"""Machine translation on Multi30k with an attentional RNN encoder–decoder.

Data: ``<root>/multi30k/{train,val,test_2016_flickr}.<lang>.gz``, verified against the
manifest, Moses-tokenized per language (optionally lowercased); vocabularies are built from
train with ``min_freq`` and saved with the checkpoint, so a finished run translates without
the corpus. Everything is loaded lazily: ``rnnlab translate`` never reads the training set.

Metrics: ``<split>/loss`` (per target token, no label smoothing), ``<split>/ppl`` and
``<split>/bleu``. BLEU is sacreBLEU's corpus BLEU of the detokenized hypotheses against the
raw reference lines (its signature becomes the run tag ``sacrebleu``). Validation decodes
greedily (cheap, every epoch); the test split uses the configured beam search.

The objective is ``val/loss``: it is smooth, computed on every target token, and what the
plateau scheduler should react to; greedy validation BLEU on 1,014 sentences is noisy from
epoch to epoch and, as a maximised number, would need a second negated metric key.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from rnnlab.data.buckets import bucketed_batches, pad, sorted_batches
from rnnlab.data.text import MosesText, check_language
from rnnlab.data.vocab import Vocab
from rnnlab.errors import RnnlabError
from rnnlab.models.beam import beam_decode, greedy_decode
from rnnlab.models.seq2seq import Seq2Seq
from rnnlab.models.stack import StackSpec
from rnnlab.tasks.base import Task

CORPUS = "multi30k"
SPECIALS = ("<pad>", "<unk>", "<s>", "</s>")
PAD, UNK, BOS, EOS = range(4)
SPLIT_FILES = {"train": "train", "val": "val", "test": "test_2016_flickr"}


@dataclass
class Split:
    """One split: raw lines (for BLEU and the TSV) and tokenized ids."""

    src_raw: list[str]
    tgt_raw: list[str]
    src_ids: list[list[int]]
    tgt_ids: list[list[int]]


@dataclass
class Batch:
    src: Tensor  # (S, B)
    src_lengths: Tensor  # (B,)
    tgt_in: Tensor  # (T, B): BOS y_1 .. y_n
    tgt_out: Tensor  # (T, B): y_1 .. y_n EOS
    tokens: int


class Translate(Task):
    """Translate ``src_lang`` into ``tgt_lang`` (de, en, fr) on Multi30k."""

    name: ClassVar[str] = "translate"
    objective: ClassVar[str] = "val/loss"
    headline: ClassVar[str] = "bleu"

    def __init__(
        self,
        *,
        seed: int = 0,
        data_dir: str | None = None,
        src_lang: str = "de",
        tgt_lang: str = "en",
        lowercase: bool = False,
        min_freq: int = 2,
        max_train: int | None = None,
        max_eval: int | None = None,
        max_train_len: int = 80,
        batch_size: int = 64,
        eval_batch_size: int = 128,
        embed_dim: int = 256,
        attention: str = "general",
        dropout: float = 0.3,
        tie_embeddings: bool = False,
        teacher_forcing: float = 1.0,
        label_smoothing: float = 0.0,
        beam_size: int = 5,
        length_penalty: float = 0.6,
        max_decode_len: int = 80,
        heatmaps: int = 4,
    ) -> None:
        check_language(src_lang, "task.src_lang")
        check_language(tgt_lang, "task.tgt_lang")
        if src_lang == tgt_lang:
            raise ValueError(f"task.src_lang and task.tgt_lang must differ, both are '{src_lang}'")
        for key, value in {
            "min_freq": min_freq,
            "batch_size": batch_size,
            "eval_batch_size": eval_batch_size,
            "embed_dim": embed_dim,
            "beam_size": beam_size,
            "max_decode_len": max_decode_len,
            "max_train_len": max_train_len,
        }.items():
            if value <= 0:
                raise ValueError(f"task.{key} must be a positive integer, got {value}")
        for key, value in {"max_train": max_train, "max_eval": max_eval}.items():
            if value is not None and value <= 0:
                raise ValueError(f"task.{key} must be positive or null (all), got {value}")
        if not 0.0 <= teacher_forcing <= 1.0:
            raise ValueError(f"task.teacher_forcing must be in [0, 1], got {teacher_forcing}")
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"task.label_smoothing must be in [0, 1), got {label_smoothing}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"task.dropout must be in [0, 1), got {dropout}")
        from rnnlab.models.attention import KINDS

        if attention not in KINDS:
            raise ValueError(f"task.attention must be one of {', '.join(KINDS)}, got '{attention}'")
        self.data_dir = data_dir
        self.src_lang, self.tgt_lang = src_lang, tgt_lang
        self.lowercase = lowercase
        self.min_freq = min_freq
        self.max_train, self.max_eval, self.max_train_len = max_train, max_eval, max_train_len
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size
        self.model_kwargs = {
            "embed_dim": embed_dim,
            "attention": attention,
            "dropout": dropout,
            "tie_embeddings": tie_embeddings,
        }
        self.teacher_forcing = teacher_forcing
        self.label_smoothing = label_smoothing
        self.beam_size, self.length_penalty = beam_size, length_penalty
        self.max_decode_len = max_decode_len
        self.heatmaps = heatmaps
        self.src_text = MosesText(src_lang, lowercase=lowercase)
        self.tgt_text = MosesText(tgt_lang, lowercase=lowercase)
        self.src_vocab: Vocab | None = None
        self.tgt_vocab: Vocab | None = None
        self._splits: dict[str, Split] = {}
        self._tokens: dict[str, tuple[list[list[str]], list[list[str]], list[str], list[str]]] = {}
        self.outputs: dict[str, list[str]] = {}
        self.signature: str | None = None
        self.shuffle = torch.Generator().manual_seed(seed + 1)

    # -- data --------------------------------------------------------------------------
    def read_split(self, split: str) -> tuple[list[str], list[str]]:
        from rnnlab.data.fetch import corpus_file, fetch_command
        from rnnlab.data.text import read_gzip_lines

        sides = []
        for lang in (self.src_lang, self.tgt_lang):
            path = corpus_file(CORPUS, f"{SPLIT_FILES[split]}.{lang}.gz", data_dir=self.data_dir)
            sides.append(read_gzip_lines(path, fetch_hint=fetch_command(CORPUS)))
        src, tgt = sides
        if len(src) != len(tgt):
            raise RnnlabError(
                f"The {split} files of {CORPUS} are not line-aligned ({len(src)} {self.src_lang} "
                f"lines, {len(tgt)} {self.tgt_lang} lines)",
                f"Re-fetch the corpus with 'rnnlab data fetch {CORPUS}'",
            )
        limit = self.max_train if split == "train" else self.max_eval
        return (src[:limit], tgt[:limit]) if limit else (src, tgt)

    def tokens(self, split: str):
        if split not in self._tokens:
            src_raw, tgt_raw = self.read_split(split)
            self._tokens[split] = (
                [self.src_text.tokenize(s) for s in src_raw],
                [self.tgt_text.tokenize(t) for t in tgt_raw],
                src_raw,
                tgt_raw,
            )
        return self._tokens[split]

    def ensure_vocab(self) -> None:
        if self.src_vocab is not None and self.tgt_vocab is not None:
            return
        src_tok, tgt_tok, _, _ = self.tokens("train")
        build = {"specials": SPECIALS, "min_freq": self.min_freq}
        self.src_vocab = Vocab.build((t for s in src_tok for t in s), **build)
        self.tgt_vocab = Vocab.build((t for s in tgt_tok for t in s), **build)

    def split(self, name: str) -> Split:
        if name not in SPLIT_FILES:
            raise RnnlabError(
                f"Task translate has no split '{name}'", f"Choose one of {', '.join(SPLIT_FILES)}"
            )
        if name not in self._splits:
            self.ensure_vocab()
            src_tok, tgt_tok, src_raw, tgt_raw = self.tokens(name)
            src_ids = [self.src_vocab.encode(s) for s in src_tok]
            tgt_ids = [self.tgt_vocab.encode(t) for t in tgt_tok]
            if name == "train":  # drop empty and overlong pairs from training only
                keep = [
                    i
                    for i, (s, t) in enumerate(zip(src_ids, tgt_ids, strict=True))
                    if 0 < len(s) <= self.max_train_len and 0 < len(t) <= self.max_train_len
                ]
                src_ids, tgt_ids = [src_ids[i] for i in keep], [tgt_ids[i] for i in keep]
                src_raw, tgt_raw = [src_raw[i] for i in keep], [tgt_raw[i] for i in keep]
            self._splits[name] = Split(src_raw, tgt_raw, src_ids, tgt_ids)
        return self._splits[name]

    def make_batch(self, src_ids: list[list[int]], tgt_ids: list[list[int]] | None) -> Batch:
        src, src_lengths = pad([s or [UNK] for s in src_ids], pad_index=PAD)  # (S, B)
        if tgt_ids is None:
            tgt_in = tgt_out = torch.zeros(0, len(src_ids), dtype=torch.long)
            tokens = 0
        else:
            tgt_in, _ = pad([[BOS, *t] for t in tgt_ids], pad_index=PAD)  # (T, B)
            tgt_out, _ = pad([[*t, EOS] for t in tgt_ids], pad_index=PAD)  # (T, B)
            tokens = sum(len(t) + 1 for t in tgt_ids)
        d = self.device
        return Batch(src.to(d), src_lengths.to(d), tgt_in.to(d), tgt_out.to(d), tokens)

    # -- Task interface ----------------------------------------------------------------
    def build_model(self, *, stack: StackSpec) -> nn.Module:
        self.ensure_vocab()
        return Seq2Seq(
            stack=stack,
            src_vocab_size=len(self.src_vocab),
            tgt_vocab_size=len(self.tgt_vocab),
            pad_index=PAD,
            **self.model_kwargs,
        )

    def train_batches(self, *, epoch: int) -> Iterator[Batch]:
        data = self.split("train")
        lengths = [len(s) for s in data.src_ids]
        for idx in bucketed_batches(lengths, batch_size=self.batch_size, generator=self.shuffle):
            yield self.make_batch([data.src_ids[i] for i in idx], [data.tgt_ids[i] for i in idx])

    def loss_sum(self, model: nn.Module, batch: Batch, *, smoothing: float, tf: float) -> Tensor:
        logits = model(batch.src, batch.src_lengths, batch.tgt_in, teacher_forcing=tf)  # (T, B, V)
        return nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]),  # (T·B, V)
            batch.tgt_out.reshape(-1),  # (T·B,)
            ignore_index=PAD,
            reduction="sum",
            label_smoothing=smoothing,
        )

    def train_loss(self, model: nn.Module, batch: Any, carry: Any) -> tuple[Tensor, Any, int]:
        total = self.loss_sum(model, batch, smoothing=self.label_smoothing, tf=self.teacher_forcing)
        return total / batch.tokens, carry, batch.tokens

    def decode(
        self, model: nn.Module, src_ids: list[list[int]], *, beam_size: int
    ) -> list[list[int]]:
        """Target ids for each source sentence, in order (greedy when beam_size is 1)."""
        from tqdm.auto import tqdm

        out: list[list[int]] = [[] for _ in src_ids]
        batches = list(sorted_batches([len(s) for s in src_ids], batch_size=self.eval_batch_size))
        bar = tqdm(
            batches,
            desc=f"decode (beam {beam_size})",
            unit="batch",
            disable=not sys.stderr.isatty(),
            leave=False,
        )
        for idx in bar:
            batch = self.make_batch([src_ids[i] for i in idx], None)
            kwargs = {"bos_index": BOS, "eos_index": EOS, "max_len": self.max_decode_len}
            if beam_size == 1:
                hyps, _ = greedy_decode(model, batch.src, batch.src_lengths, **kwargs)
            else:
                hyps = beam_decode(
                    model,
                    batch.src,
                    batch.src_lengths,
                    beam_size=beam_size,
                    alpha=self.length_penalty,
                    **kwargs,
                )
            for i, hyp in zip(idx, hyps, strict=True):
                out[i] = hyp
        return out

    def detokenize(self, ids: list[int]) -> str:
        return self.tgt_text.detokenize(self.tgt_vocab.decode(ids))

    def bleu(self, hypotheses: list[str], references: list[str]) -> float:
        from sacrebleu.metrics import BLEU

        metric = BLEU(lowercase=self.lowercase)
        score = metric.corpus_score(hypotheses, [references])
        self.signature = str(metric.get_signature())
        return float(score.score)

    @torch.no_grad()
    def evaluate(self, model: nn.Module, split: str) -> dict[str, float]:
        data = self.split(split)
        was_training = model.training
        model.eval()
        total, tokens = 0.0, 0
        order = sorted_batches([len(s) for s in data.src_ids], batch_size=self.eval_batch_size)
        for idx in order:
            batch = self.make_batch([data.src_ids[i] for i in idx], [data.tgt_ids[i] for i in idx])
            total += self.loss_sum(model, batch, smoothing=0.0, tf=1.0).item()
            tokens += batch.tokens
        beam = 1 if split == "val" else self.beam_size
        hyps = [self.detokenize(h) for h in self.decode(model, data.src_ids, beam_size=beam)]
        self.outputs[split] = hyps
        model.train(was_training)
        loss = total / max(tokens, 1)
        return {
            f"{split}/loss": loss,
            f"{split}/ppl": math.exp(min(loss, 50.0)),
            f"{split}/bleu": self.bleu(hyps, data.tgt_raw),
        }

    @torch.no_grad()
    def translate(self, model: nn.Module, sentences: list[str], *, beam_size: int | None = None):
        """Detokenized translations of raw source sentences."""
        self.ensure_vocab()
        model.eval()
        ids = [self.src_vocab.encode(self.src_text.tokenize(s)) for s in sentences]
        hyps = self.decode(model, ids, beam_size=beam_size or self.beam_size)
        return [self.detokenize(h) for h in hyps]

    def tags(self) -> dict[str, str]:
        return {"sacrebleu": self.signature} if self.signature else {}

    def state_dict(self) -> dict[str, Any]:
        self.ensure_vocab()
        return {"src_vocab": self.src_vocab.state_dict(), "tgt_vocab": self.tgt_vocab.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if "src_vocab" in state and "tgt_vocab" in state:
            self.src_vocab = Vocab.from_state_dict(state["src_vocab"])
            self.tgt_vocab = Vocab.from_state_dict(state["tgt_vocab"])

    # -- artifacts ---------------------------------------------------------------------
    def write_artifacts(self, model: nn.Module, out_dir: Path) -> list[Path]:
        out_dir.mkdir(parents=True, exist_ok=True)
        data = self.split("test")
        if "test" not in self.outputs:
            self.evaluate(model, "test")
        tsv = out_dir / "translations_test.tsv"
        rows = ["source\treference\thypothesis"]
        for row in zip(data.src_raw, data.tgt_raw, self.outputs["test"], strict=True):
            rows.append("\t".join(cell.replace("\t", " ") for cell in row))
        tsv.write_text("\n".join(rows) + "\n", encoding="utf-8")
        return [tsv, *self.attention_heatmaps(model, out_dir)]

    @torch.no_grad()
    def attention_heatmaps(self, model: nn.Module, out_dir: Path) -> list[Path]:
        """PNG heatmaps of greedy-decoding attention for the first few val sentences."""
        if self.heatmaps <= 0:
            return []
        from rnnlab.analysis.plots import use_headless_backend

        use_headless_backend()
        import matplotlib.pyplot as plt

        data = self.split("val")
        model.eval()
        paths = []
        for i in range(min(self.heatmaps, len(data.src_ids))):
            batch = self.make_batch([data.src_ids[i]], None)
            hyps, maps = greedy_decode(
                model,
                batch.src,
                batch.src_lengths,
                bos_index=BOS,
                eos_index=EOS,
                max_len=self.max_decode_len,
                return_attention=True,
            )
            src_tokens = self.src_vocab.decode(data.src_ids[i])
            hyp_tokens = [*self.tgt_vocab.decode(hyps[0]), "</s>"]
            weights = maps[0][: len(hyp_tokens)].numpy()  # (T, S)
            fig, ax = plt.subplots(
                figsize=(1.0 + 0.45 * len(src_tokens), 1.0 + 0.4 * len(hyp_tokens)), dpi=100
            )
            ax.imshow(weights, cmap="viridis", vmin=0.0, vmax=1.0, aspect="auto")
            ax.set_xticks(range(len(src_tokens)), src_tokens, rotation=60, ha="right")
            ax.set_yticks(range(weights.shape[0]), hyp_tokens[: weights.shape[0]])
            ax.set_title(f"val sentence {i}", fontsize=9)
            fig.tight_layout()
            path = out_dir / f"attention_val_{i}.png"
            fig.savefig(path)
            plt.close(fig)
            paths.append(path)
        return paths

    def summary(self, model: nn.Module) -> list[str]:
        if not self.src_vocab:
            return []
        return [
            f"vocab: {len(self.src_vocab)} {self.src_lang}, {len(self.tgt_vocab)} {self.tgt_lang}"
        ]
