"""``trainer.threads``: auto gives each process its share of the cores; N and
OMP_NUM_THREADS win. The joblib sweep's jobs are checked in test_sweeps.py."""

from __future__ import annotations

import os

import pytest
import torch

from rnnlab.train.recorder import MemoryRecorder
from rnnlab.train.threads import available_cores, resolve_threads


@pytest.fixture
def clean_env(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    return monkeypatch


def test_a_single_run_gets_every_core(clean_env):
    cores = available_cores()
    assert resolve_threads("auto") == (cores, f"auto: all {cores} cores, one run")


def test_a_sweep_job_gets_its_share_and_at_least_one(clean_env):
    cores = available_cores()
    threads, reason = resolve_threads("auto", concurrent_jobs=4)
    assert threads == max(1, cores // 4)
    assert reason == f"auto: {cores} cores / 4 sweep jobs at once"
    assert resolve_threads("auto", concurrent_jobs=cores)[0] == 1


def test_a_distributed_rank_gets_cores_over_world_size(clean_env):
    clean_env.setenv("WORLD_SIZE", "2")
    cores = available_cores()
    assert resolve_threads("auto") == (max(1, cores // 2), f"auto: {cores} cores / world size 2")


def test_omp_num_threads_wins_over_auto_and_an_explicit_count_over_both(clean_env):
    clean_env.setenv("OMP_NUM_THREADS", "3")
    assert resolve_threads("auto") == (3, "auto: OMP_NUM_THREADS=3")
    threads, reason = resolve_threads("auto", concurrent_jobs=8)
    assert threads == 3 and reason == "auto: OMP_NUM_THREADS=3, 8 sweep jobs at once"
    assert resolve_threads("5") == (5, "set by trainer.threads")


def test_training_sets_the_thread_count_and_leaves_it_as_it_was(clean_env):
    from dataclasses import replace

    from conftest import compose

    from rnnlab.compose import compose as build
    from rnnlab.train.precision import Workload
    from rnnlab.train.run import machine_settings

    settings = build(compose(["device=cpu"])).trainer
    before = torch.get_num_threads()
    recorder = MemoryRecorder()
    work = Workload(task="bitcount", tolerates_bf16=False, bf16_cost="-", macs=400)
    with machine_settings(
        replace(settings, threads="1"), device=torch.device("cpu"), concurrent_jobs=1,
        recorder=recorder, work=work,
    ) as resolved:  # fmt: skip
        assert torch.get_num_threads() == 1
        assert resolved.precision == "fp32" and resolved.threads == "1"
    assert torch.get_num_threads() == before
    assert recorder.tags["threads"] == "1"
    assert recorder.tags["threads_reason"] == "set by trainer.threads"


def test_a_config_recorded_before_trainer_threads_existed_still_composes():
    """eval, translate and resume compose a run's recorded config: one from before this key
    existed takes today's default."""
    from conftest import compose
    from omegaconf import OmegaConf

    from rnnlab.compose import compose as build

    recorded = OmegaConf.to_yaml(compose(["device=cpu"]), resolve=True)  # as a checkpoint holds it
    cfg = OmegaConf.create(recorded)
    del cfg.trainer["threads"]
    assert build(cfg).trainer.threads == "auto"


def test_a_test_worker_computes_on_its_share_of_the_cores():
    """Under ``make test`` (pytest-xdist) torch in each worker uses the share that
    tests/conftest.py gave it, not every core: it read OMP_NUM_THREADS at import, so the share
    must be set before anything imports torch."""
    share = os.environ.get("OMP_NUM_THREADS")
    if not os.environ.get("PYTEST_XDIST_WORKER") or share is None:
        pytest.skip("not a pytest-xdist worker given a share of the cores (make test is)")
    assert torch.get_num_threads() == int(share)
