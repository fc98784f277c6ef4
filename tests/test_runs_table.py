"""`rnnlab runs` on a real 2 x 2 x 2-seed sweep: filters in MLflow's search syntax, columns,
sorting, the pivot (mean ± std over seeds, checked against MlflowClient), every format."""

from __future__ import annotations

import csv
import io
import json
import statistics
from pathlib import Path

import pytest
from conftest import cli_inprocess, new_store

GRID = ["optim=adam,rmsprop", "optim.lr=1e-3,1e-2", "seed=1,2"]


@pytest.fixture(scope="module")
def grid(tmp_path_factory, empty_store) -> tuple[Path, str]:
    """One sequential sweep of 8 tiny bitcount runs, shared by this module's tests."""
    workdir = tmp_path_factory.mktemp("runs_grid")
    new_store(workdir, empty_store)
    done = cli_inprocess("train", "-m", *GRID, "trainer.max_epochs=5", "device=cpu", cwd=workdir)
    assert done.returncode == 0, done.stderr[-4000:]
    return workdir, f"sqlite:///{workdir / 'mlflow.db'}"


def cli(grid, *args: str):
    """``rnnlab runs ARGS`` in-process (click's runner), with exit code, stdout and stderr."""
    from click.testing import CliRunner

    from rnnlab.cli import cli as rnnlab

    _, uri = grid
    return CliRunner().invoke(rnnlab, ["runs", "--uri", uri, *args])


def children(uri: str):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("bitcount")
    runs = client.search_runs([experiment.experiment_id], max_results=100)
    return [r for r in runs if "mlflow.parentRunId" in r.data.tags]


def test_pivot_is_mean_and_std_over_seeds(grid):
    workdir, uri = grid
    done = cli_inprocess(
        "runs", "--uri", uri, "--pivot", "optim.name", "optim.lr", "--metric", "val/loss",
        "--format", "json", cwd=workdir,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    cells = json.loads(done.stdout)
    expected: dict[tuple[str, float], list[float]] = {}
    for run in children(uri):
        key = (run.data.params["optim.name"], float(run.data.params["optim.lr"]))
        expected.setdefault(key, []).append(run.data.metrics["val/loss"])
    assert len(expected) == 4 and all(len(v) == 2 for v in expected.values())
    assert len(cells) == 4
    for cell in cells:
        values = expected[(cell["optim.name"], float(cell["optim.lr"]))]
        assert cell["n"] == 2
        assert cell["mean"] == pytest.approx(statistics.mean(values), rel=1e-12)
        assert cell["std"] == pytest.approx(statistics.stdev(values), rel=1e-9)

    table = cli(grid, "--pivot", "optim.name", "optim.lr", "--metric", "val/loss")
    assert table.exit_code == 0, table.stderr
    for name in ("adam", "rmsprop"):
        row = next(line for line in table.stdout.splitlines() if f" {name} " in line)
        for lr in (1e-3, 1e-2):
            values = expected[(name, lr)]
            text = f"{statistics.mean(values):.4g} ± {statistics.stdev(values):.2g}"
            assert text in row, (text, row)
    assert "optim.lr=0.001" in table.stdout and "optim.lr=0.01" in table.stdout

    markdown = cli(
        grid, "--pivot", "optim.name", "optim.lr", "-m", "val/loss", "--format", "markdown"
    )
    lines = markdown.stdout.splitlines()
    assert lines[0] == "| optim.name | optim.lr=0.001 | optim.lr=0.01 |"
    assert lines[1] == "|---|---|---|"
    assert len(lines) == 4


def test_where_status_param_and_tag_filters(grid):
    _, uri = grid
    kids = children(uri)
    parent_id = kids[0].data.tags["mlflow.parentRunId"]

    def ids(*args: str) -> set[str]:
        done = cli(grid, *args, "--format", "json", "-c", "run_id")
        assert done.exit_code == 0, done.stderr
        return {row["run_id"] for row in json.loads(done.stdout)}

    rmsprop = {r.info.run_id for r in kids if r.data.params["optim.name"] == "rmsprop"}
    assert ids("--where", "params.optim._target_ LIKE '%RMSprop%'") == rmsprop
    assert ids("-e", "bitcount", "--status", "FINISHED", "-p", "seed=1") == {
        r.info.run_id for r in kids if r.data.params["seed"] == "1"
    }
    assert ids("--tag", f"sweep={parent_id}", "--tag", "sweep_role=parent") == {parent_id}
    threshold = statistics.median(r.data.metrics["val/loss"] for r in kids)
    assert ids("--where", f"metrics.`val/loss` < {threshold}", "-p", "optim.name=adam") == {
        r.info.run_id
        for r in kids
        if r.data.params["optim.name"] == "adam" and r.data.metrics["val/loss"] < threshold
    }
    assert ids("--status", "FAILED") == set()


def test_columns_sort_and_formats(grid):
    _, uri = grid
    kids = children(uri)
    done = cli(
        grid,
        "-p",
        "seed=2",
        "-c",
        "run_name,optim.lr",
        "-c",
        "val/loss",
        "--sort",
        "val/loss",
        "--format",
        "csv",
    )
    assert done.exit_code == 0, done.stderr
    rows = list(csv.DictReader(io.StringIO(done.stdout)))
    assert list(rows[0]) == ["run_name", "optim.lr", "val/loss"]
    expected = sorted(r.data.metrics["val/loss"] for r in kids if r.data.params["seed"] == "2")
    assert [float(r["val/loss"]) for r in rows] == pytest.approx(expected)

    descending = cli(
        grid, "-p", "seed=2", "-c", "optim.lr", "--sort", "optim.lr", "--desc", "--format", "json"
    )
    lrs = [float(row["optim.lr"]) for row in json.loads(descending.stdout)]
    assert lrs == [1e-2, 1e-2, 1e-3, 1e-3]

    table = cli(grid, "-p", "seed=1", "-c", "run_name,status,val/loss")
    assert table.exit_code == 0
    lines = table.stdout.splitlines()
    assert "run_name" in lines[1] and "val/loss" in lines[1]
    assert sum("FINISHED" in line for line in lines) == 4
    assert {"elman-adam-lr0.01", "elman-rmsprop-lr1e-3"} <= {
        part.strip() for line in lines for part in line.split("│")
    }


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--where", "bogus = 1"], "MLflow's search syntax"),
        (["-c", "nope"], "No column 'nope'"),
        (["--pivot", "optim.name", "seed"], "--pivot needs the metric"),
        (["--pivot", "optim.name", "seed", "-m", "val/ppl"], "No column 'val/ppl'"),
        (["-p", "seed=99", "--pivot", "optim.name", "seed", "-m", "val/loss"], "No runs match"),
        (["-e", "nosuch"], "No experiment named 'nosuch'"),
        (["--status", "DONE"], "Unknown run status"),
        (["-p", "seed"], "KEY=VALUE"),
    ],
)
def test_bad_input_is_one_clear_paragraph(grid, args, message):
    done = cli(grid, *args)
    assert done.exit_code == 2
    assert message in done.stderr
    assert "Traceback" not in done.stderr
