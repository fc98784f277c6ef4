"""Where a text corpus's splits are read from, and the digest that names each one.

A corpus is either registered (``ptb``: its files live under the data root and are verified
against the sha256 of their manifest, :mod:`rnnlab.data.fetch`) or the user's own: a folder
holding ``train.txt``, ``valid.txt`` and ``test.txt``, or three files named one by one. A
user's file is not checksummed (nothing says what it should hold) but fingerprinted: its
sha256 is the digest the run records and the key of the token cache (:mod:`rnnlab.data.cache`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from rnnlab.data.fetch import corpus_file, fetch_command, known_corpora, load_manifest, sha256_of
from rnnlab.errors import DataError

#: the splits of a language-model corpus, and the file each has in a user's folder
SPLITS = ("train", "val", "test")
FOLDER_FILES = {"train": "train.txt", "val": "valid.txt", "test": "test.txt"}
#: the option that names each split's file (task.train, task.valid, task.test)
SPLIT_KEYS = {"train": "train", "val": "valid", "test": "test"}
#: MLflow's dataset context of each split
CONTEXTS = {"train": "train", "val": "validation", "test": "test"}
#: registered text corpora: split -> file name in the corpus's manifest
REGISTERED = {"ptb": {"train": "ptb.train.txt", "val": "ptb.valid.txt", "test": "ptb.test.txt"}}


@dataclass(frozen=True)
class SplitFile:
    """One split of a corpus: the file, its sha256 and where it came from."""

    #: the corpus (a registered name, or the folder's or file's name)
    corpus: str
    split: str
    path: Path
    digest: str
    #: the upstream URL of a registered file, else the local path
    source: str


def fingerprint(path: Path) -> SplitFile:
    """A user's file as one split of its own corpus (the file's stem): its sha256."""
    path = existing_file(path, what="file")
    return SplitFile(path.stem, "test", path, sha256_of(path), str(path))


def existing_file(path: str | os.PathLike, *, what: str) -> Path:
    """``path`` resolved, or a DataError saying it does not exist."""
    resolved = Path(path).expanduser().resolve()
    if not resolved.is_file():
        kind = "is a folder, not a file" if resolved.is_dir() else "does not exist"
        raise DataError(
            f"The {what} {resolved} {kind}",
            "Check the path (relative paths are read from the directory rnnlab runs in)",
        )
    return resolved


def registered_splits(name: str, *, data_dir: str | None) -> dict[str, SplitFile]:
    """The verified files of registered corpus ``name``, by the sha256 of its manifest."""
    manifest = load_manifest(name)
    splits = {}
    for split, filename in REGISTERED[name].items():
        path = corpus_file(name, filename, data_dir=data_dir)  # verified against the manifest
        entry = manifest.entry(filename)
        splits[split] = SplitFile(name, split, path, entry.sha256, entry.url)
    return splits


def folder_splits(folder: str, *, need_valid: bool = True) -> dict[str, SplitFile]:
    """``train.txt``, ``valid.txt`` and ``test.txt`` of a user's folder, fingerprinted
    (``need_valid=False``: no ``valid.txt``, validation is held out of train)."""
    root = Path(folder).expanduser().resolve()
    if not root.is_dir():
        known = ", ".join(n for n in known_corpora() if n in REGISTERED)
        raise DataError(
            f"task.corpus={folder}: {root} is not a folder, nor a registered corpus ({known})",
            "Point task.corpus at a folder holding train.txt, valid.txt and test.txt, name a "
            f"registered corpus (fetch it with '{fetch_command('ptb')}'), or name the three "
            "files one by one (task.corpus=null task.train=A task.valid=B task.test=C)",
        )
    wanted = {s: n for s, n in FOLDER_FILES.items() if need_valid or s != "val"}
    missing = [name for name in wanted.values() if not (root / name).is_file()]
    if missing:
        found = sorted(p.name for p in root.iterdir())[:20]
        raise DataError(
            f"The corpus folder {root} has no {', '.join(missing)} (it holds: "
            f"{', '.join(found) or 'nothing'})",
            "A language-model corpus folder holds train.txt, valid.txt and test.txt, one "
            "sentence or paragraph per line; rename the files, or name each one (task.corpus="
            "null task.train=A task.valid=B task.test=C); without a validation file, "
            "task.valid_fraction=0.1 holds out the end of train.txt",
        )
    return {split: named_split(root.name, split, root / name) for split, name in wanted.items()}


def named_split(corpus: str, split: str, path: Path) -> SplitFile:
    path = existing_file(path, what=f"{split} file")
    return SplitFile(corpus, split, path, sha256_of(path), str(path))


def file_splits(files: dict[str, str | None]) -> dict[str, SplitFile]:
    """The files named one by one (``task.train``, ``task.valid``, ``task.test``; a missing
    ``task.valid`` when validation is held out of train)."""
    corpus = Path(str(files["train"])).expanduser().resolve().parent.name or "corpus"
    return {
        split: named_split(corpus, split, Path(str(files[split])).expanduser())
        for split in SPLITS
        if files.get(split)
    }


def resolve_splits(
    *,
    corpus: str | None,
    files: dict[str, str | None],
    data_dir: str | None,
    valid_fraction: float | None = None,
) -> dict[str, SplitFile]:
    """The splits a language model reads: files named one by one, else a registered corpus,
    else a folder (a folder of the same name as a registered corpus wins). With
    ``valid_fraction`` there is no validation file: the caller holds val out of train
    (:mod:`rnnlab.data.holdout`)."""
    if any(files.values()):
        return file_splits(files)
    assert corpus is not None  # the task's options insist on one or the other
    if corpus in REGISTERED and not Path(corpus).is_dir():
        if valid_fraction is not None:
            raise DataError(
                f"task.valid_fraction={valid_fraction} holds validation out of train, but "
                f"the registered corpus {corpus} has its own validation file",
                "Drop task.valid_fraction (task.valid_fraction=null)",
            )
        return registered_splits(corpus, data_dir=data_dir)
    splits = folder_splits(corpus, need_valid=valid_fraction is None)
    if valid_fraction is not None and (Path(corpus).expanduser() / "valid.txt").is_file():
        raise DataError(
            f"task.valid_fraction={valid_fraction} holds validation out of train, but the "
            f"folder {corpus} has a valid.txt",
            "Drop task.valid_fraction to use valid.txt, or remove valid.txt from the folder",
        )
    return splits
