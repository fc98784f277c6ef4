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

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from rnnlab.data.buckets import bucketed_batches, pad, shard, sorted_batches
from rnnlab.data.text import LANGUAGES, MosesText
from rnnlab.data.vocab import Vocab
from rnnlab.errors import RnnlabError
from rnnlab.models.attention import KINDS
from rnnlab.models.beam import beam_decode, greedy_decode
from rnnlab.models.seq2seq import Seq2Seq
from rnnlab.models.stack import StackSpec
from rnnlab.options import (
    FRACTION,
    NON_NEGATIVE,
    POSITIVE,
    PROBABILITY,
    Options,
    one_of,
    option,
)
from rnnlab.tasks.base import (
    AttentionMap,
    DataSource,
    EvalResult,
    Task,
    digest_of,
    epoch_generator,
    perplexity,
)

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


@dataclass(frozen=True)
class TranslateOptions(Options):
    """``task.*`` of ``conf/task/translate.yaml``."""

    section: ClassVar[str] = "task"

    seed: int = option()
    data_dir: str | None = option()
    src_lang: str = option(one_of(*LANGUAGES))
    tgt_lang: str = option(one_of(*LANGUAGES))
    lowercase: bool = option()
    min_freq: int = option(POSITIVE)
    max_train: int | None = option(POSITIVE)
    max_eval: int | None = option(POSITIVE)
    max_train_len: int = option(POSITIVE)
    batch_size: int = option(POSITIVE)
    eval_batch_size: int = option(POSITIVE)
    embed_dim: int = option(POSITIVE)
    attention: str = option(one_of(*KINDS))
    dropout: float = option(FRACTION)
    tie_embeddings: bool = option()
    teacher_forcing: float = option(PROBABILITY)
    label_smoothing: float = option(FRACTION)
    beam_size: int = option(POSITIVE)
    length_penalty: float = option()
    max_decode_len: int = option(POSITIVE)
    heatmaps: int = option(NON_NEGATIVE)

    def check(self) -> None:
        if self.src_lang == self.tgt_lang:
            raise ValueError(
                f"task.src_lang and task.tgt_lang must differ, both are '{self.src_lang}'"
            )


class Translate(Task):
    """Translate ``src_lang`` into ``tgt_lang`` (de, en, fr) on Multi30k."""

    name: ClassVar[str] = "translate"
    Options = TranslateOptions
    objective: ClassVar[str] = "val/loss"
    headline: ClassVar[str] = "bleu"

    def __init__(self, options: TranslateOptions) -> None:
        super().__init__(options)
        o = options
        self.src_lang, self.tgt_lang = o.src_lang, o.tgt_lang
        self.src_text = MosesText(o.src_lang, lowercase=o.lowercase)
        self.tgt_text = MosesText(o.tgt_lang, lowercase=o.lowercase)
        self.src_vocab: Vocab | None = None
        self.tgt_vocab: Vocab | None = None
        self._splits: dict[str, Split] = {}
        self._tokens: dict[str, tuple[list[list[str]], list[list[str]], list[str], list[str]]] = {}

    # -- data --------------------------------------------------------------------------
    def read_split(self, split: str) -> tuple[list[str], list[str]]:
        from rnnlab.data.fetch import corpus_file, fetch_command
        from rnnlab.data.text import read_gzip_lines

        sides = []
        for lang in (self.src_lang, self.tgt_lang):
            name = f"{SPLIT_FILES[split]}.{lang}.gz"
            path = corpus_file(CORPUS, name, data_dir=self.options.data_dir)
            sides.append(read_gzip_lines(path, fetch_hint=fetch_command(CORPUS)))
        src, tgt = sides
        if len(src) != len(tgt):
            raise RnnlabError(
                f"The {split} files of {CORPUS} are not line-aligned ({len(src)} {self.src_lang} "
                f"lines, {len(tgt)} {self.tgt_lang} lines)",
                f"Re-fetch the corpus with 'rnnlab data fetch {CORPUS}'",
            )
        limit = self.options.max_train if split == "train" else self.options.max_eval
        return (src[:limit], tgt[:limit]) if limit else (src, tgt)

    def data_sources(self) -> list[DataSource]:
        """Each split's source and target file, by the sha256s the manifest verifies."""
        from rnnlab.data.fetch import load_manifest

        manifest = load_manifest(CORPUS)
        contexts = {"train": "train", "val": "validation", "test": "test"}
        sources = []
        for split, context in contexts.items():
            entries = [
                manifest.entry(f"{SPLIT_FILES[split]}.{lang}.gz")
                for lang in (self.src_lang, self.tgt_lang)
            ]
            digest = digest_of(*(e.sha256 for e in entries))
            url = " ".join(e.url for e in entries)
            name = f"{CORPUS}-{split}-{self.src_lang}-{self.tgt_lang}"
            sources.append(DataSource(name, context, digest, url))
        return sources

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
        build = {"specials": SPECIALS, "min_freq": self.options.min_freq}
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
                longest = self.options.max_train_len
                keep = [
                    i
                    for i, (s, t) in enumerate(zip(src_ids, tgt_ids, strict=True))
                    if 0 < len(s) <= longest and 0 < len(t) <= longest
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
        o = self.options
        return Seq2Seq(
            stack=stack,
            src_vocab_size=len(self.src_vocab),
            tgt_vocab_size=len(self.tgt_vocab),
            pad_index=PAD,
            embed_dim=o.embed_dim,
            attention=o.attention,
            dropout=o.dropout,
            tie_embeddings=o.tie_embeddings,
        )

    def train_batches(self, *, epoch: int) -> Iterator[Batch]:
        data = self.split("train")
        lengths = [len(s) for s in data.src_ids]
        order = epoch_generator(self.options.seed, epoch)  # resumable: (seed, epoch) only
        size = self.options.batch_size * self.world_size  # the global batch, split by shard()
        for batch in bucketed_batches(lengths, batch_size=size, generator=order):
            idx = shard(batch, rank=self.rank, world_size=self.world_size)
            if idx is not None:
                yield self.make_batch(
                    [data.src_ids[i] for i in idx], [data.tgt_ids[i] for i in idx]
                )

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
        o = self.options
        total = self.loss_sum(model, batch, smoothing=o.label_smoothing, tf=o.teacher_forcing)
        return total / batch.tokens, carry, batch.tokens

    def decode(
        self, model: nn.Module, src_ids: list[list[int]], *, beam_size: int
    ) -> list[list[int]]:
        """Target ids for each source sentence, in order (greedy when beam_size is 1)."""
        out: list[list[int]] = [[] for _ in src_ids]
        size = self.options.eval_batch_size
        batches = list(sorted_batches([len(s) for s in src_ids], batch_size=size))
        bar = self.bar(batches, desc=f"decode (beam {beam_size})", unit="batch")
        for idx in bar:
            batch = self.make_batch([src_ids[i] for i in idx], None)
            kwargs = {"bos_index": BOS, "eos_index": EOS, "max_len": self.options.max_decode_len}
            if beam_size == 1:
                hyps, _ = greedy_decode(model, batch.src, batch.src_lengths, **kwargs)
            else:
                hyps = beam_decode(
                    model,
                    batch.src,
                    batch.src_lengths,
                    beam_size=beam_size,
                    alpha=self.options.length_penalty,
                    **kwargs,
                )
            for i, hyp in zip(idx, hyps, strict=True):
                out[i] = hyp
        return out

    def detokenize(self, ids: list[int]) -> str:
        return self.tgt_text.detokenize(self.tgt_vocab.decode(ids))

    def bleu(self, hypotheses: list[str], references: list[str]) -> tuple[float, str]:
        """sacreBLEU's corpus BLEU and its signature."""
        from sacrebleu.metrics import BLEU

        metric = BLEU(lowercase=self.options.lowercase)
        score = metric.corpus_score(hypotheses, [references])
        return float(score.score), str(metric.get_signature())

    @torch.no_grad()
    def evaluate(self, model: nn.Module, split: str) -> EvalResult:
        data = self.split(split)
        was_training = model.training
        model.eval()
        total, tokens = 0.0, 0
        size = self.options.eval_batch_size
        order = sorted_batches([len(s) for s in data.src_ids], batch_size=size)
        for idx in order:
            batch = self.make_batch([data.src_ids[i] for i in idx], [data.tgt_ids[i] for i in idx])
            total += self.loss_sum(model, batch, smoothing=0.0, tf=1.0).item()
            tokens += batch.tokens
        beam = 1 if split == "val" else self.options.beam_size
        hyps = [self.detokenize(h) for h in self.decode(model, data.src_ids, beam_size=beam)]
        model.train(was_training)
        loss = total / max(tokens, 1)
        bleu, signature = self.bleu(hyps, data.tgt_raw)
        metrics = {f"{split}/loss": loss, f"{split}/ppl": perplexity(loss), f"{split}/bleu": bleu}
        return EvalResult(metrics, outputs={"hypotheses": hyps}, tags={"sacrebleu": signature})

    @torch.no_grad()
    def translate(self, model: nn.Module, sentences: list[str], *, beam_size: int | None = None):
        """Detokenized translations of raw source sentences."""
        self.ensure_vocab()
        model.eval()
        ids = [self.src_vocab.encode(self.src_text.tokenize(s)) for s in sentences]
        hyps = self.decode(model, ids, beam_size=beam_size or self.options.beam_size)
        return [self.detokenize(h) for h in hyps]

    def state_dict(self) -> dict[str, Any]:
        self.ensure_vocab()
        return {"src_vocab": self.src_vocab.state_dict(), "tgt_vocab": self.tgt_vocab.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if "src_vocab" in state and "tgt_vocab" in state:
            self.src_vocab = Vocab.from_state_dict(state["src_vocab"])
            self.tgt_vocab = Vocab.from_state_dict(state["tgt_vocab"])

    # -- artifacts ---------------------------------------------------------------------
    def write_artifacts(
        self, model: nn.Module, out_dir: Path, results: dict[str, EvalResult]
    ) -> list[Path]:
        """``translations_test.tsv``: source, reference and hypothesis of every test pair."""
        out_dir.mkdir(parents=True, exist_ok=True)
        data = self.split("test")
        test = results.get("test") or self.evaluate(model, "test")
        tsv = out_dir / "translations_test.tsv"
        rows = ["source\treference\thypothesis"]
        hypotheses = test.outputs["hypotheses"]
        for row in zip(data.src_raw, data.tgt_raw, hypotheses, strict=True):
            rows.append("\t".join(cell.replace("\t", " ") for cell in row))
        tsv.write_text("\n".join(rows) + "\n", encoding="utf-8")
        return [tsv]

    @torch.no_grad()
    def attention_maps(self, model: nn.Module) -> list[AttentionMap]:
        """Greedy-decoding attention of the first ``heatmaps`` validation sentences."""
        data = self.split("val")
        model.eval()
        maps = []
        for i in range(min(self.options.heatmaps, len(data.src_ids))):
            batch = self.make_batch([data.src_ids[i]], None)
            hyps, weights = greedy_decode(
                model,
                batch.src,
                batch.src_lengths,
                bos_index=BOS,
                eos_index=EOS,
                max_len=self.options.max_decode_len,
                return_attention=True,
            )
            target = [*self.tgt_vocab.decode(hyps[0]), "</s>"]
            maps.append(
                AttentionMap(
                    title=f"val sentence {i}",
                    source=self.src_vocab.decode(data.src_ids[i]),
                    target=target,
                    weights=weights[0][: len(target)].numpy(),  # (T, S)
                )
            )
        return maps

    def summary(self, model: nn.Module) -> list[str]:
        if not self.src_vocab:
            return []
        return [
            f"vocab: {len(self.src_vocab)} {self.src_lang}, {len(self.tgt_vocab)} {self.tgt_lang}"
        ]
