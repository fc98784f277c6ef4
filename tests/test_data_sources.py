"""What each task says it reads: one source per split, with a digest that names the data."""

from __future__ import annotations

from conftest import task_from_config

from rnnlab.data.fetch import load_manifest, sha256_of


def test_registered_corpora_are_described_by_their_verified_sha256(shared_data):
    ptb = {s.name: s for s in task_from_config("ptb").data_sources()}
    assert sorted(s.split for s in ptb.values()) == ["test", "train", "validation"]
    assert ptb["ptb-train"].digest == sha256_of(shared_data / "ptb" / "ptb.train.txt")
    assert ptb["ptb-train"].source == load_manifest("ptb").entry("ptb.train.txt").url
    translate = task_from_config("translate").data_sources()
    assert [s.split for s in translate] == ["train", "validation", "test"]
    assert len({s.digest for s in translate}) == 3
    swapped = task_from_config("translate", src_lang="en", tgt_lang="de").data_sources()
    assert swapped[0].digest != translate[0].digest  # the pair's direction is part of it


def test_generated_data_are_described_by_generator_options_and_split():
    first = task_from_config("bitcount", seed=1).data_sources()
    again = task_from_config("bitcount", seed=1).data_sources()
    other = task_from_config("bitcount", seed=2).data_sources()
    assert [s.digest for s in first] == [s.digest for s in again]
    assert len({s.digest for s in first}) == len(first) == 4
    assert all(a.digest != b.digest for a, b in zip(first, other, strict=True))
