"""Runs that MLflow users recognise (issue 13), read back with ``MlflowClient``: the training
experiment kind, source/git/command tags and the description, dataset inputs per split, the
best weights as an MLflow model that reproduces ``test/loss``, system metrics, the reference
beside the result, ``rerun=`` bit for bit, and progress lines off a terminal (bars on one)."""

from __future__ import annotations

import math
import os
import pty
import subprocess
from pathlib import Path

import pytest
from conftest import RNNLAB, cli_inprocess, new_store, runs_of

KIND = "mlflow.experimentKind"
PRESET = ["experiment=bitcount_rmsprop", "trainer.max_epochs=3", "device=cpu"]


def git(folder: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "-C", str(folder), "-c", "user.name=t", "-c", "user.email=t@t", *args],
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.strip()


@pytest.fixture(scope="module")
def runs(tmp_path_factory, empty_store) -> dict:
    """In a git repository, with a ``bitcount`` experiment made before rnnlab (no kind tag):
    a 3-epoch bitcount_rmsprop run, then ``rerun=`` of it with the model registered."""
    from mlflow.tracking import MlflowClient

    workdir = tmp_path_factory.mktemp("native")
    uri = new_store(workdir, empty_store)
    client = MlflowClient(uri)
    location = (workdir / "mlartifacts" / "bitcount").as_uri()
    client.create_experiment("bitcount", artifact_location=location)
    git(workdir, "init", "-q", "-b", "main")
    (workdir / "my_cell.yaml").write_text("hidden_size: 1\n")
    git(workdir, "add", "my_cell.yaml")
    git(workdir, "commit", "-qm", "configs")
    first = cli_inprocess("train", *PRESET, "tracking.system_metrics_interval_s=0.05", cwd=workdir)
    assert first.returncode == 0, first.stderr
    (original,) = runs_of(client, "bitcount")
    again = cli_inprocess(
        "train",
        f"rerun={original.info.run_id}",
        "tracking.register_model=bitcount-elman",
        "tracking.system_metrics=false",
        cwd=workdir,
    )
    assert again.returncode == 0, again.stderr
    (rerun,) = [r for r in runs_of(client, "bitcount") if r.info.run_id != original.info.run_id]
    return {
        "client": client,
        "uri": uri,
        "workdir": workdir,
        "first": first,
        "original": original,
        "rerun": rerun,
        "again": again,
    }


def test_experiment_made_elsewhere_is_marked_as_model_training(runs):
    experiment = runs["client"].get_experiment_by_name("bitcount")
    assert experiment.tags[KIND] == "custom_model_development"


def test_source_git_version_and_command_tags(runs):
    import rnnlab

    tags = runs["original"].data.tags
    assert tags["mlflow.source.name"] == "rnnlab train"
    assert tags["mlflow.source.type"] == "LOCAL"
    assert tags["mlflow.user"]
    assert tags["mlflow.source.git.commit"] == git(runs["workdir"], "rev-parse", "HEAD")
    assert tags["mlflow.source.git.branch"] == "main"
    assert tags["mlflow.source.git.dirty"] == "false"
    assert tags["rnnlab.version"] == rnnlab.__version__
    assert tags["command"] == "rnnlab train " + " ".join(
        [*PRESET, "tracking.system_metrics_interval_s=0.05"]
    )
    assert tags["preset"] == "bitcount_rmsprop"


def test_description_holds_command_preset_and_reference(runs):
    note = runs["original"].data.tags["mlflow.note.content"]
    assert runs["original"].data.tags["command"] in note
    assert "`experiment=bitcount_rmsprop`" in note
    assert "train/loss 0.0068 (rnnlab seed demo)" in note


def test_every_split_is_a_dataset_input_with_the_same_digest_in_both_runs(runs):
    def inputs(run):
        return {
            i.dataset.name: (i.dataset.digest, [t.value for t in i.tags], i.dataset.source_type)
            for i in run.inputs.dataset_inputs
        }

    first, second = inputs(runs["original"]), inputs(runs["rerun"])
    assert set(first) == {"bitcount-train", "bitcount-val", "bitcount-test", "bitcount-test_long"}
    assert first["bitcount-train"][1] == ["train"]
    assert first["bitcount-val"][1] == ["validation"]
    assert first["bitcount-test"][1] == ["test"]
    assert all(source_type == "code" for _, _, source_type in first.values())
    assert first == second


def test_piped_run_prints_one_line_per_epoch_and_the_summary(runs):
    out = runs["first"].stdout
    lines = [line for line in out.splitlines() if line.startswith("epoch ")]
    assert [line.split("  ")[0] for line in lines] == ["epoch 1/3", "epoch 2/3", "epoch 3/3"]
    assert all("train/loss" in line and "val/loss" in line and "eta" in line for line in lines)
    model_uri = runs["original"].data.tags["model_uri"]
    assert f"model: {model_uri}" in out
    loss = runs["original"].data.metrics["train/loss"]
    assert f"train/loss {loss:.6g} (reference 0.0068, rnnlab seed demo: +" in out


def test_logged_model_reproduces_test_loss_on_bitcount(runs):
    run = runs["original"]
    (output,) = run.outputs.model_outputs
    assert run.data.tags["model_uri"] == f"models:/{output.model_id}"
    logged = runs["client"].get_logged_model(output.model_id)
    assert logged.source_run_id == run.info.run_id
    # filed under the run's experiment, its files beside the run's (not ./mlruns)
    assert logged.experiment_id == run.info.experiment_id
    assert logged.artifact_location.startswith((runs["workdir"] / "mlartifacts").as_uri())
    assert not (runs["workdir"] / "mlruns").exists()
    assert reproduced_test_loss(runs["uri"], run) == pytest.approx(
        run.data.metrics["test/loss"], rel=1e-6
    )


def reproduced_test_loss(uri: str, run) -> float:
    """``test/loss`` of the run's MLflow model, evaluated by a task built from its config."""
    import mlflow
    import mlflow.pytorch
    from mlflow.tracking import MlflowClient
    from omegaconf import OmegaConf

    from rnnlab.compose import compose
    from rnnlab.tracking.models import load_task_state

    mlflow.set_tracking_uri(uri)
    model_uri = run.data.tags["model_uri"]
    model = mlflow.pytorch.load_model(model_uri)
    config = MlflowClient(uri).download_artifacts(run.info.run_id, "config.yaml")
    cfg = OmegaConf.create(Path(config).read_text())
    cfg.device = "cpu"
    task = compose(cfg).task
    task.load_state_dict(load_task_state(model_uri))
    model.eval()
    return task.evaluate(model, "test").metrics["test/loss"]


def test_logged_model_reproduces_test_loss_on_ptb_tiny(ptb_tiny_run, shared_data):
    run = ptb_tiny_run["run"]
    assert reproduced_test_loss(ptb_tiny_run["uri"], run) == pytest.approx(
        run.data.metrics["test/loss"], rel=1e-6
    )


def test_system_metrics_are_recorded(runs):
    metrics = runs["original"].data.metrics
    assert "system/cpu_utilization_percentage" in metrics
    assert "system/system_memory_usage_megabytes" in metrics
    assert not any(k.startswith("system/") for k in runs["rerun"].data.metrics)


def test_rerun_reproduces_bitcount_bit_for_bit(runs):
    original, rerun = runs["original"], runs["rerun"]
    assert rerun.data.tags["rerun_of"] == original.info.run_id
    assert "--config-dir" not in rerun.data.tags["command"]
    client = runs["client"]
    for key in ("train/loss", "val/loss", "test/loss", "elman/w_x", "elman/w_rec"):
        first = [m.value for m in client.get_metric_history(original.info.run_id, key)]
        second = [m.value for m in client.get_metric_history(rerun.info.run_id, key)]
        assert first == second, key
    assert rerun.data.params["trainer.max_epochs"] == "3"


def test_register_model_registers_a_version(runs):
    (version,) = runs["client"].search_model_versions("name='bitcount-elman'")
    assert version.run_id == runs["rerun"].info.run_id
    assert "registered: models:/bitcount-elman/1" in runs["again"].stdout


def test_runs_table_shows_the_reference_and_the_difference(runs):
    result = cli_inprocess(
        "runs", "--vs-reference", "--format", "csv", "--uri", runs["uri"], cwd=runs["workdir"]
    )
    assert result.returncode == 0, result.stderr
    header, *rows = result.stdout.strip().splitlines()
    assert "reference" in header.split(",") and "vs_reference" in header.split(",")
    assert not any(c.startswith("system/") for c in header.split(","))
    assert all("train/loss 0.0068 (rnnlab seed demo)" in row for row in rows)
    loss = runs["original"].data.metrics["train/loss"]
    assert f"{(loss - 0.0068) / 0.0068 * 100:+.1f}%" in rows[0]


def test_reference_beside_a_result():
    from rnnlab.compose.reference import Reference

    reference = Reference(
        metric="test/ppl", value=114.5, source="Zaremba et al. 2014", tolerance=None
    )
    assert reference.beside(112.11) == (
        "test/ppl 112.11 (reference 114.5, Zaremba et al. 2014: -2.1%)"
    )
    assert math.isclose(float(reference.tags()["reference.value"]), 114.5)


def run_in_terminal(args: list[str], cwd: Path) -> tuple[int, str]:
    """``rnnlab ARGS`` with stdout and stderr on a pseudo-terminal of 24 x 120 (python's
    ``pty``; a terminal without a size would give tqdm no columns to draw in)."""
    import fcntl
    import struct
    import termios

    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 120, 0, 0))
    proc = subprocess.Popen(
        [*RNNLAB, *args], cwd=cwd, env=env, stdin=slave, stdout=slave, stderr=slave
    )
    os.close(slave)
    output = bytearray()
    while True:
        try:
            data = os.read(master, 4096)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        output.extend(data)
    os.close(master)
    return proc.wait(timeout=300), output.decode(errors="replace")


@pytest.mark.slow  # make test-all (~15 s, a run on a pseudo-terminal): keeps make test under 5 min
def test_terminal_run_shows_bars_and_no_model_when_off(workdir):
    """Under a pseudo-terminal (stderr a TTY) the bars stay and the plain lines do not print;
    ``tracking.log_model=false`` logs no model."""
    args = ["train", "trainer.max_epochs=3", "device=cpu", "tracking.log_model=false"]
    code, text = run_in_terminal(args, workdir)
    assert code == 0, text
    assert "bitcount:" in text and "epoch/s]" in text  # tqdm's epoch bar
    assert "epoch 1/3  " not in text
    assert "model: models:/" not in text
    from mlflow.tracking import MlflowClient

    (run,) = runs_of(MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}"), "bitcount")
    assert not run.outputs.model_outputs


def test_a_long_epoch_prints_a_line_every_log_interval(capsys):
    """Within an epoch, a line comes once ``trainer.log_interval_s`` has passed since the last."""
    import time

    from rnnlab.train.lines import EpochLines

    lines = EpochLines(total=13, first=1, interval_s=0.05, enabled=True)
    assert not lines.due()
    time.sleep(0.06)
    assert lines.due()
    lines.within(1, batches=120, mean_loss=5.25)
    assert not lines.due()  # the line resets the clock
    lines.epoch(1, {"train/loss": 5.0, "val/ppl": 140.2, "tokens_per_s": 5321.4, "lr": 1.0})
    first, second = capsys.readouterr().out.splitlines()
    assert first.startswith("epoch 1/13  batch 120  train/loss 5.25  elapsed 0:00")
    assert second.startswith("epoch 1/13  train/loss 5  val/ppl 140.2  tokens/s 5321  elapsed")
    assert "eta" in second and "lr" not in second
    quiet = EpochLines(total=2, first=1, interval_s=1e-9, enabled=False)
    assert not quiet.due()


def duplicate_from_the_store(client, experiment_id: str, source) -> Exception:
    """What MLflow raises when a run inserts a dataset row another run inserted between its
    check and its insert: the real store refusing a second row for the same key."""
    import uuid

    from mlflow.store.tracking.dbmodels.models import SqlDataset

    from rnnlab.tracking.inputs import dataset_input

    dataset = dataset_input(source).dataset
    store = client._tracking_client.store
    try:
        with store.ManagedSessionMaker(read_only=False) as session:
            session.add(
                SqlDataset(
                    dataset_uuid=uuid.uuid4().hex,
                    experiment_id=int(experiment_id),
                    name=dataset.name,
                    digest=dataset.digest,
                    dataset_source_type=dataset.source_type,
                    dataset_source=dataset.source,
                )
            )
    except Exception as exc:
        from sqlalchemy.exc import IntegrityError

        assert isinstance(exc.__cause__, IntegrityError), exc  # the key, not another fault
        return exc
    raise AssertionError("the store took a second row for the same dataset")


def test_runs_starting_together_on_the_same_data_both_record_it(client):
    """Two runs of one experiment log the same new datasets at once (a sweep's jobs): one
    run's insert meets the other's row, as in MLflow's check-then-insert race. That run tries
    again and links the stored rows; before, it failed at its start."""
    from rnnlab.data.source import DataSource
    from rnnlab.tracking.inputs import log_data_sources

    sources = [
        DataSource("corpus", split, f"{split}-sha256" * 4, "/data/x")
        for split in ("train", "validation", "test")
    ]
    experiment_id = client.create_experiment("together")
    rival, late = (client.create_run(experiment_id).info.run_id for _ in range(2))
    calls = []
    log_inputs = client.log_inputs

    def racing(run_id, datasets=None):
        calls.append(run_id)
        if len(calls) == 1:  # the rival's rows land between this run's check and insert
            log_inputs(rival, datasets=datasets)
            raise duplicate_from_the_store(client, experiment_id, sources[0])
        return log_inputs(run_id, datasets=datasets)

    client.log_inputs = racing
    assert log_data_sources(client, late, sources) == 3
    assert calls == [late, late]
    for run_id in (rival, late):
        inputs = client.get_run(run_id).inputs.dataset_inputs
        assert sorted(i.tags[0].value for i in inputs) == ["test", "train", "validation"]
    store = client._tracking_client.store
    with store.ManagedSessionMaker() as session:
        from mlflow.store.tracking.dbmodels.models import SqlDataset

        assert session.query(SqlDataset).count() == 3  # one row per dataset, two runs linked

    client.log_inputs = log_inputs  # any other store error is raised at once
    calls.clear()
    client.delete_run(late)
    with pytest.raises(Exception, match="deleted|active"):
        log_data_sources(client, late, sources)
