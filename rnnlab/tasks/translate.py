"""Machine translation on any parallel corpus with an attentional RNN encoder–decoder.

Data (:mod:`rnnlab.data.parallel`): the registered Multi30k
(``<root>/multi30k/{train,val,test_2016_flickr}.<lang>.gz``, verified against the manifest)
or a folder of ``<stem>.<lang>[.gz]`` files, every split checked (aligned, UTF-8, not empty)
before training. Tokenization (``task.tokenizer``): ``moses``, words with vocabularies built
from train with ``min_freq``; or ``sentencepiece``, BPE/unigram subwords with byte fallback
(:mod:`rnnlab.data.subword`), trained on train (cached), joint or one model per side. Either
is saved with the checkpoint, so a finished run translates without the corpus. Everything is
loaded lazily: ``rnnlab translate`` never reads the training set.

Metrics: ``<split>/loss`` (per target token, no label smoothing), ``<split>/ppl``,
``<split>/bleu`` and ``<split>/chrf``: sacreBLEU's corpus BLEU and chrF of the hypotheses,
decoded to plain text, against the raw reference lines (their signatures become the run tags
``sacrebleu`` and ``sacrebleu_chrf``). Validation decodes greedily (cheap, every epoch); the
test split uses the configured beam search.

The objective is ``val/loss``: it is smooth, computed on every target token, and what the
plateau scheduler should react to; greedy validation BLEU on 1,014 sentences is noisy from
epoch to epoch and, as a maximised number, would need a second negated metric key.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from rnnlab.data.buckets import bucketed_batches, pad, shard, sorted_batches
from rnnlab.data.parallel import SPLITS, PairFiles
from rnnlab.data.subword import SubwordText
from rnnlab.data.text import LANGUAGES, MosesText, WordText
from rnnlab.data.transfer import pinned, to_device
from rnnlab.data.vocab import Vocab
from rnnlab.errors import DataError, RnnlabError
from rnnlab.models.attention import KINDS
from rnnlab.models.beam import Hypothesis, beam_search, greedy_decode, greedy_search
from rnnlab.models.seq2seq import Seq2Seq
from rnnlab.models.stack import StackSpec
from rnnlab.options import (
    FRACTION,
    NON_NEGATIVE,
    POSITIVE,
    PROBABILITY,
    Options,
    Rule,
    one_of,
    option,
)
from rnnlab.tasks.base import (
    AttentionMap,
    DataSource,
    EvalResult,
    ServingSchema,
    Task,
    digest_of,
    epoch_generator,
    perplexity,
)

SPECIALS = ("<pad>", "<unk>", "<s>", "</s>")
PAD, UNK, BOS, EOS = range(4)
#: a language code (de, en, pt_br, ...): it names the files and the sides
#: the longest sentence a served model translates, in characters (a long sentence is ~300)
SERVED_MAX_CHARS = 1000
LANG_CODE = Rule(lambda v: v.replace("_", "").isalpha() and v == v.lower(), "a language code")


@dataclass
class Split:
    """One split: raw lines (for BLEU and the TSV) and tokenized ids."""

    src_raw: list[str]
    tgt_raw: list[str]
    src_ids: list[list[int]]
    tgt_ids: list[list[int]]


@dataclass
class Batch:
    """One batch, built on the host; what the step reads of it on the host (``tokens``,
    ``src_lengths``) is never read back from the device."""

    src: Tensor  # (S, B) on the device
    src_lengths: Tensor  # (B,) on the host (pinned for CUDA): what packing reads
    tgt_in: Tensor  # (T, B): BOS y_1 .. y_n
    tgt_out: Tensor  # (T, B): y_1 .. y_n EOS
    tokens: int  # target tokens, EOS included: the batch's weight
    real: Tensor  # (N,) flat positions t·B + b of the real target tokens, on the device


@dataclass
class SubwordOptions:
    """``task.spm.*``: the sentencepiece model of ``task.tokenizer=sentencepiece``.

    Not frozen: OmegaConf makes a frozen nested dataclass read-only and cannot merge values
    into it. Its rules are checked by :meth:`TranslateOptions.check`.
    """

    model_type: str
    vocab_size: int
    joint: bool


@dataclass(frozen=True)
class TranslateOptions(Options):
    """``task.*`` of ``conf/task/translate.yaml``."""

    section: ClassVar[str] = "task"

    seed: int = option()
    data_dir: str | None = option()
    cache_dir: str | None = option()
    corpus: str = option()
    split_names: dict[str, str] = option()
    src_lang: str = option(LANG_CODE)
    tgt_lang: str = option(LANG_CODE)
    tokenizer: str = option(one_of("moses", "sentencepiece"))
    spm: SubwordOptions = option()
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
        if sorted(self.split_names) != sorted(SPLITS):
            raise ValueError(
                f"task.split_names must name exactly {', '.join(SPLITS)}, got "
                f"{', '.join(self.split_names)}"
            )
        if self.spm.model_type not in ("bpe", "unigram"):
            raise ValueError(
                f"task.spm.model_type must be one of bpe, unigram, got {self.spm.model_type!r}"
            )
        if self.spm.vocab_size <= 0:
            raise ValueError(
                f"task.spm.vocab_size must be a positive integer, got {self.spm.vocab_size}"
            )
        for lang in (self.src_lang, self.tgt_lang):
            if self.tokenizer == "moses" and lang not in LANGUAGES:
                raise ValueError(
                    f"task.tokenizer=moses knows {', '.join(LANGUAGES)}, not '{lang}'; "
                    "task.tokenizer=sentencepiece works for any language"
                )


class Translate(Task):
    """Translate ``src_lang`` into ``tgt_lang`` on Multi30k or a folder of parallel text."""

    name: ClassVar[str] = "translate"
    causal: ClassVar[str | None] = (
        "its decoder is stepped one target token at a time (its encoder is always "
        "bidirectional, with half the hidden size per direction)"
    )
    Options = TranslateOptions
    objective: ClassVar[str] = "val/loss"
    headline: ClassVar[str] = "bleu"
    # provisional: multi30k_cpu's BLEU in bf16 is not measured yet (docs/precision.md)
    tolerates_bf16: ClassVar[bool] = True

    def __init__(self, options: TranslateOptions) -> None:
        super().__init__(options)
        o = options
        self.src_lang, self.tgt_lang = o.src_lang, o.tgt_lang
        # each side's tokenizer and ids: word level gets its vocabulary from train (or the
        # checkpoint); a sentencepiece side exists only once trained (or loaded)
        self.src_text: WordText | SubwordText | None = None
        self.tgt_text: WordText | SubwordText | None = None
        if o.tokenizer == "moses":
            self.src_text = WordText(MosesText(o.src_lang, lowercase=o.lowercase))
            self.tgt_text = WordText(MosesText(o.tgt_lang, lowercase=o.lowercase))
        self._raw: dict[str, tuple[list[str], list[str]]] = {}
        self._splits: dict[str, Split] = {}
        self._tokens: dict[str, tuple[list[list[str]], list[list[str]], list[str], list[str]]] = {}

    # -- data --------------------------------------------------------------------------
    def pair_files(self) -> list[PairFiles]:
        """The source and target file of every split (registered: verified by sha256)."""
        from rnnlab.data.parallel import folder_pairs, is_registered, registered_pairs

        o = self.options
        langs = (o.src_lang, o.tgt_lang)
        if is_registered(o.corpus):
            return registered_pairs(o.corpus, langs, data_dir=o.data_dir)
        return folder_pairs(Path(o.corpus).expanduser(), langs, dict(o.split_names))

    def read_split(self, split: str) -> tuple[list[str], list[str]]:
        """Raw lines of one split; the first call reads and checks every split, so a bad
        file is refused before any training."""
        from rnnlab.data.parallel import is_registered, read_pair

        corpus = self.options.corpus
        if is_registered(corpus):
            fix = f"delete it and run 'rnnlab data fetch {corpus}'"
        else:
            fix = f"then run again (task.corpus={corpus})"
        if not self._raw:
            self._raw = {pair.split: read_pair(pair, fix=fix) for pair in self.pair_files()}
        src, tgt = self._raw[split]
        limit = self.options.max_train if split == "train" else self.options.max_eval
        return (src[:limit], tgt[:limit]) if limit else (src, tgt)

    def data_sources(self) -> list[DataSource]:
        """Each split's source and target file: a registered corpus by the sha256s its
        manifest verifies, a folder by the sha256s of its files (one digest per pair)."""
        from rnnlab.data.fetch import load_manifest
        from rnnlab.data.parallel import REGISTERED, fingerprint, is_registered

        o = self.options
        contexts = {"train": "train", "val": "validation", "test": "test"}
        langs = (o.src_lang, o.tgt_lang)
        sources = []
        if not is_registered(o.corpus):
            stem = Path(o.corpus).expanduser().resolve().name
            for pair in self.pair_files():
                name = f"{stem}-{pair.split}-{o.src_lang}-{o.tgt_lang}"
                where = f"{pair.src} {pair.tgt}"
                sources.append(DataSource(name, contexts[pair.split], fingerprint(pair), where))
            return sources
        manifest = load_manifest(o.corpus)
        for split, context in contexts.items():
            stem = REGISTERED[o.corpus][split]
            entries = [manifest.entry(f"{stem}.{lang}.gz") for lang in langs]
            digest = digest_of(*(e.sha256 for e in entries))
            url = " ".join(e.url for e in entries)
            name = f"{o.corpus}-{split}-{o.src_lang}-{o.tgt_lang}"
            sources.append(DataSource(name, context, digest, url))
        return sources

    def prepare(self) -> None:
        for name in SPLITS:
            self.split(name)

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

    def sides_ready(self) -> bool:
        return all(side is not None and len(side) > 0 for side in (self.src_text, self.tgt_text))

    def train_subwords(self) -> tuple[SubwordText, SubwordText]:
        """Sentencepiece models from the training split (joint, or one per side), cached
        by the digest of that text and the options."""
        from rnnlab.data.cache import cache_dir
        from rnnlab.data.subword import cached_model

        o = self.options
        src, tgt = self.read_split("train")
        if o.lowercase:
            src, tgt = [s.lower() for s in src], [t.lower() for t in tgt]
        settings = {
            "model_type": o.spm.model_type,
            "vocab_size": o.spm.vocab_size,
            "cache_dir": cache_dir(o.cache_dir),
        }
        if o.spm.joint:
            what = f"the {o.src_lang}+{o.tgt_lang} training text of {o.corpus}"
            proto = cached_model(src + tgt, what=what, **settings)
            return (SubwordText(proto, lowercase=o.lowercase),) * 2
        protos = [
            cached_model(lines, what=f"the {lang} training text of {o.corpus}", **settings)
            for lines, lang in ((src, o.src_lang), (tgt, o.tgt_lang))
        ]
        return tuple(SubwordText(p, lowercase=o.lowercase) for p in protos)

    def ensure_vocab(self) -> None:
        """Both sides ready: loaded from a checkpoint, else built from the training split."""
        if self.sides_ready():
            return
        o = self.options
        if o.tokenizer == "sentencepiece":
            self.src_text, self.tgt_text = self.train_subwords()
            self.read_split("train")  # every split checked before training, either way
            return
        src_tok, tgt_tok, _, _ = self.tokens("train")
        build = {"specials": SPECIALS, "min_freq": o.min_freq}
        for side, tokens, lang in (
            (self.src_text, src_tok, o.src_lang),
            (self.tgt_text, tgt_tok, o.tgt_lang),
        ):
            side.vocab = Vocab.build((t for s in tokens for t in s), **build)
            if len(side.vocab) == len(SPECIALS):
                raise DataError(
                    f"The {lang} vocabulary of {o.corpus} is empty: no word occurs "
                    f"task.min_freq={o.min_freq} times in its training split",
                    "Lower task.min_freq, or train on more text",
                )

    def split(self, name: str) -> Split:
        if name not in SPLITS:
            raise RnnlabError(
                f"Task translate has no split '{name}'", f"Choose one of {', '.join(SPLITS)}"
            )
        if name not in self._splits:
            self.ensure_vocab()
            src_tok, tgt_tok, src_raw, tgt_raw = self.tokens(name)
            src_ids = [self.src_text.encode(s) for s in src_tok]
            tgt_ids = [self.tgt_text.encode(t) for t in tgt_tok]
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
        """The padded batch, built on the host and moved to the device in queued copies
        (pinned memory on CUDA: :mod:`rnnlab.data.transfer`); the weight and the positions of
        the real target tokens are known here, before anything reaches the device."""
        src, src_lengths = pad([s or [UNK] for s in src_ids], pad_index=PAD)  # (S, B)
        if tgt_ids is None:
            tgt_in = tgt_out = torch.zeros(0, len(src_ids), dtype=torch.long)
            tokens = 0
        else:
            tgt_in, _ = pad([[BOS, *t] for t in tgt_ids], pad_index=PAD)  # (T, B)
            tgt_out, _ = pad([[*t, EOS] for t in tgt_ids], pad_index=PAD)  # (T, B)
            tokens = sum(len(t) + 1 for t in tgt_ids)
        real = (tgt_out != PAD).flatten().nonzero().squeeze(1)  # (N,) of T·B, on the host
        d = self.device
        src, tgt_in, tgt_out, real = (to_device(t, d) for t in (src, tgt_in, tgt_out, real))
        return Batch(src, pinned(src_lengths, d), tgt_in, tgt_out, tokens, real)

    # -- Task interface ----------------------------------------------------------------
    def build_model(self, *, stack: StackSpec) -> nn.Module:
        self.ensure_vocab()
        o = self.options
        return Seq2Seq(
            stack=stack,
            src_vocab_size=len(self.src_text),
            tgt_vocab_size=len(self.tgt_text),
            pad_index=PAD,
            embed_dim=o.embed_dim,
            attention=o.attention,
            dropout=o.dropout,
            tie_embeddings=o.tie_embeddings,
        )

    def step_positions(self) -> int:
        # an upper bound from the options alone: a step holds at most batch_size pairs of
        # max_train_len tokens a side (Multi30k's mean is about 13 words a side)
        return self.options.batch_size * self.options.max_train_len

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
        # the read-out and the loss run on real target tokens only: the vocabulary-sized
        # matmul is the step's largest, and padding would only be ignored by the loss
        real = batch.real  # (N,) flat positions, found on the host (no wait for the device)
        logits = model(batch.src, batch.src_lengths, batch.tgt_in, teacher_forcing=tf, keep=real)
        # logits: (N, V), N real tokens
        targets = batch.tgt_out.flatten().index_select(0, real)  # (T·B,) -> (N,)
        return nn.functional.cross_entropy(
            logits, targets, reduction="sum", label_smoothing=smoothing
        )

    def train_metrics(self, mean_loss: float, *, weight: float, seconds: float) -> dict[str, float]:
        """The epoch's loss and its target tokens (EOS included) per second of training."""
        return {"train/loss": mean_loss, "tokens_per_s": weight / seconds if seconds > 0 else 0.0}

    def train_loss(self, model: nn.Module, batch: Any, carry: Any) -> tuple[Tensor, Any, int]:
        o = self.options
        total = self.loss_sum(model, batch, smoothing=o.label_smoothing, tf=o.teacher_forcing)
        return total / batch.tokens, carry, batch.tokens

    def decode(
        self, model: nn.Module, src_ids: list[list[int]], *, beam_size: int
    ) -> list[list[int]]:
        """Target ids for each source sentence, in order (greedy when beam_size is 1)."""
        return [found[0].ids for found in self.search(model, src_ids, beam_size=beam_size)]

    def search(
        self,
        model: nn.Module,
        src_ids: list[list[int]],
        *,
        beam_size: int,
        max_len: int | None = None,
        n_best: int = 1,
    ) -> list[list[Hypothesis]]:
        """The ``n_best`` hypotheses of each source sentence, in order, best first (greedy when
        beam_size is 1), decoded in batches of ``eval_batch_size`` sorted by length."""
        out: list[list[Hypothesis]] = [[] for _ in src_ids]
        size = self.options.eval_batch_size
        batches = list(sorted_batches([len(s) for s in src_ids], batch_size=size))
        bar = self.bar(batches, desc=f"decode (beam {beam_size})", unit="batch")
        kwargs = {
            "bos_index": BOS,
            "eos_index": EOS,
            "max_len": max_len or self.options.max_decode_len,
            "alpha": self.options.length_penalty,
        }
        for idx in bar:
            batch = self.make_batch([src_ids[i] for i in idx], None)
            if beam_size == 1:
                found = [[h] for h in greedy_search(model, batch.src, batch.src_lengths, **kwargs)]
            else:
                found = beam_search(
                    model,
                    batch.src,
                    batch.src_lengths,
                    beam_size=beam_size,
                    n_best=n_best,
                    **kwargs,
                )
            for i, hyps in zip(idx, found, strict=True):
                out[i] = hyps
        return out

    def detokenize(self, ids: list[int]) -> str:
        """Target ids as plain text (Moses-detokenized words, or decoded subwords)."""
        return self.tgt_text.decode(ids)

    def bleu(self, hypotheses: list[str], references: list[str]) -> tuple[float, str]:
        """sacreBLEU's corpus BLEU and its signature."""
        from sacrebleu.metrics import BLEU

        metric = BLEU(lowercase=self.options.lowercase)
        score = metric.corpus_score(hypotheses, [references])
        return float(score.score), str(metric.get_signature())

    def chrf(self, hypotheses: list[str], references: list[str]) -> tuple[float, str]:
        """sacreBLEU's corpus chrF (character 6-grams, beta 2) and its signature."""
        from sacrebleu.metrics import CHRF

        metric = CHRF(lowercase=self.options.lowercase)
        score = metric.corpus_score(hypotheses, [references])
        return float(score.score), str(metric.get_signature())

    def scores(
        self, hypotheses: list[str], references: list[str]
    ) -> tuple[dict[str, float], dict[str, str]]:
        """``bleu`` and ``chrf`` of plain-text hypotheses against raw references, ``unk`` (how
        many ``<unk>`` tokens the hypotheses hold: word level writes them for rare words,
        subwords never), and the tags holding the sacreBLEU signatures."""
        bleu, bleu_signature = self.bleu(hypotheses, references)
        chrf, chrf_signature = self.chrf(hypotheses, references)
        tags = {"sacrebleu": bleu_signature, "sacrebleu_chrf": chrf_signature}
        unk = sum(h.count(SPECIALS[UNK]) for h in hypotheses)
        return {"bleu": bleu, "chrf": chrf, "unk": float(unk)}, tags

    @torch.no_grad()
    def evaluate(self, model: nn.Module, split: str) -> EvalResult:
        data = self.split(split)
        was_training = model.training
        model.eval()
        summed = torch.zeros((), dtype=torch.float64, device=self.device)
        tokens = 0
        size = self.options.eval_batch_size
        order = sorted_batches([len(s) for s in data.src_ids], batch_size=size)
        for idx in order:
            batch = self.make_batch([data.src_ids[i] for i in idx], [data.tgt_ids[i] for i in idx])
            summed += self.loss_sum(model, batch, smoothing=0.0, tf=1.0).double()  # on device
            tokens += batch.tokens
        total = summed.item()  # one read of the sum, after every batch is queued
        beam = 1 if split == "val" else self.options.beam_size
        start = time.perf_counter()
        hyps = [self.detokenize(h) for h in self.decode(model, data.src_ids, beam_size=beam)]
        speed = len(hyps) / max(time.perf_counter() - start, 1e-9)  # decoding sentences/s
        model.train(was_training)
        loss = total / max(tokens, 1)
        scores, tags = self.scores(hyps, data.tgt_raw)
        metrics = {f"{split}/loss": loss, f"{split}/ppl": perplexity(loss)}
        metrics.update({f"{split}/{name}": value for name, value in scores.items()})
        metrics[f"{split}/sentences_per_s"] = speed
        return EvalResult(metrics, outputs={"hypotheses": hyps}, tags=tags)

    @torch.no_grad()
    def translate(self, model: nn.Module, sentences: list[str], *, beam_size: int | None = None):
        """Detokenized translations of raw source sentences."""
        found = self.translate_n_best(model, sentences, beam_size=beam_size)
        return [hyps[0][0] for hyps in found]

    @torch.no_grad()
    def translate_n_best(
        self,
        model: nn.Module,
        sentences: list[str],
        *,
        beam_size: int | None = None,
        max_len: int | None = None,
        n_best: int = 1,
    ) -> list[list[tuple[str, float]]]:
        """The ``n_best`` detokenized translations of each raw source sentence, best first,
        with their scores (log-probability over the length penalty)."""
        self.ensure_vocab()
        model.eval()
        ids = [self.src_text.encode(self.src_text.tokenize(s)) for s in sentences]
        beam = beam_size or self.options.beam_size
        found = self.search(model, ids, beam_size=beam, max_len=max_len, n_best=n_best)
        return [[(self.detokenize(h.ids), h.score) for h in hyps] for hyps in found]

    # -- serving (rnnlab.tasks.base.Serves) ----------------------------------------------
    def serving_schema(self) -> ServingSchema:
        """Sentences in; the best translation and its score, and the ``n_best`` list, out."""
        o = self.options
        sentences, _ = self.read_split("val")
        return ServingSchema(
            column="text",
            outputs={
                "translation": "string",
                "score": "double",
                "n_best": "string[]",
                "n_best_scores": "double[]",
            },
            params={"beam": o.beam_size, "max_len": o.max_decode_len, "n_best": 1},
            example=sentences[:2],
            max_chars=SERVED_MAX_CHARS,
        )

    def serve(
        self, model: nn.Module, rows: list[str], params: dict[str, Any]
    ) -> dict[str, list[Any]]:
        beam, max_len, n_best = params["beam"], params["max_len"], params["n_best"]
        if beam < 1 or max_len < 1:
            raise RnnlabError(
                f"beam and max_len must be at least 1, got beam={beam}, max_len={max_len}",
                "Use beam=1 for greedy decoding",
            )
        if not 1 <= n_best <= beam:
            raise RnnlabError(
                f"n_best={n_best} is not between 1 and the beam size {beam}",
                "Ask for at most as many translations as the beam keeps (raise beam)",
            )
        found = self.translate_n_best(model, rows, beam_size=beam, max_len=max_len, n_best=n_best)
        return {
            "translation": [hyps[0][0] for hyps in found],
            "score": [hyps[0][1] for hyps in found],
            "n_best": [[text for text, _ in hyps] for hyps in found],
            "n_best_scores": [[score for _, score in hyps] for hyps in found],
        }

    def state_dict(self) -> dict[str, Any]:
        self.ensure_vocab()
        prefix = "spm" if self.options.tokenizer == "sentencepiece" else "vocab"
        return {
            f"src_{prefix}": self.src_text.state_dict(),
            f"tgt_{prefix}": self.tgt_text.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        o = self.options
        if "src_spm" in state and "tgt_spm" in state:
            self.src_text, self.tgt_text = (
                SubwordText.from_state_dict(state[f"{side}_spm"], lowercase=o.lowercase)
                for side in ("src", "tgt")
            )
        elif "src_vocab" in state and "tgt_vocab" in state:
            self.src_text.vocab = Vocab.from_state_dict(state["src_vocab"])
            self.tgt_text.vocab = Vocab.from_state_dict(state["tgt_vocab"])

    def tokenizer_files(self, out_dir: Path) -> list[Path]:
        """The sentencepiece model(s) as files (``spm.model`` when joint, else one per
        language), for the run's ``tokenizer/`` artifacts; none at word level."""
        if not isinstance(self.tgt_text, SubwordText):
            return []
        out_dir.mkdir(parents=True, exist_ok=True)
        if self.src_text.proto == self.tgt_text.proto:
            sides = {"spm.model": self.src_text}
        else:
            sides = {f"spm.{self.src_lang}.model": self.src_text}
            sides[f"spm.{self.tgt_lang}.model"] = self.tgt_text
        for name, side in sides.items():
            (out_dir / name).write_bytes(side.proto)
        return [out_dir / name for name in sides]

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
            target = [*self.tgt_text.pieces(hyps[0]), "</s>"]
            maps.append(
                AttentionMap(
                    title=f"val sentence {i}",
                    source=self.src_text.pieces(data.src_ids[i]),
                    target=target,
                    weights=weights[0][: len(target)].numpy(),  # (T, S)
                )
            )
        return maps

    def summary(self, model: nn.Module) -> list[str]:
        if not self.sides_ready():
            return []
        return [
            f"vocab ({self.options.tokenizer}): {len(self.src_text)} {self.src_lang}, "
            f"{len(self.tgt_text)} {self.tgt_lang}"
        ]
