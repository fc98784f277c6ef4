"""The command line as users run it: start-up cost, Hydra pass-through, errors, sweeps, runs, UI."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request
import zipfile
from pathlib import Path

import pytest
from conftest import RNNLAB, ROOT, cli_inprocess, compose, run_cli, runs_of

from rnnlab.paths import config_dir

FAST = ["trainer.max_epochs=3", "device=cpu"]


def test_help_and_version_import_neither_torch_nor_mlflow():
    code = (
        "import sys\n"
        "from click.testing import CliRunner\n"
        "from rnnlab.cli import cli\n"
        "for args in (['--help'], ['--version'], ['train', '--help']):\n"
        "    pass\n"
        "r = CliRunner().invoke(cli, ['--help'])\n"
        "assert r.exit_code == 0, r.output\n"
        "r = CliRunner().invoke(cli, ['--version'])\n"
        "assert r.exit_code == 0 and '0.' in r.output, r.output\n"
        "heavy = sorted(m for m in ('torch', 'mlflow', 'hydra', 'pandas') if m in sys.modules)\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_version_prints_package_version(tmp_path):
    """A real process: ``python -m rnnlab.cli`` starts and exits 0 as users run it."""
    from rnnlab import __version__

    result = run_cli("--version", cwd=tmp_path)
    assert result.returncode == 0
    assert __version__ in result.stdout


def selectable_groups() -> list[str]:
    """The groups of train.yaml's defaults list (cell_base/ and task_defaults/ are included
    by other configs, and task_optim/ is picked by interpolation)."""
    import yaml

    defaults = yaml.safe_load((config_dir() / "train.yaml").read_text())["defaults"]
    names = [next(iter(entry)) for entry in defaults if isinstance(entry, dict)]
    return [n for n in names if not n.startswith("optional ")]


def group_options() -> list[tuple[str, str]]:
    base = config_dir()
    return [
        (group, path.stem)
        for group in selectable_groups()
        for path in sorted((base / group).glob("*.yaml"))
    ]


@pytest.mark.parametrize(("group", "option"), group_options())
def test_every_config_group_option_composes(group, option):
    cfg = compose([f"{group}={option}"])
    for key in ("task", "cell", "optim", "sched", "trainer", "tracking", "seed", "device"):
        assert key in cfg
    if group in ("task", "cell", "optim", "sched"):
        assert cfg[group].name == option or group == "experiment"
    for key in ("max_epochs", "clip_grad_norm", "log_every"):
        assert key in cfg.trainer


def test_train_yaml_holds_the_defaults_list_and_the_top_level_keys_only():
    import yaml

    data = yaml.safe_load((config_dir() / "train.yaml").read_text())
    keys = ["defaults", "seed", "device", "resume", "rerun", "reference", "force", "paths"]
    assert list(data) == keys
    hydra_settings = yaml.safe_load((config_dir() / "hydra_settings.yaml").read_text())
    assert "callbacks" in hydra_settings  # Hydra's own settings live in their own file


def test_global_package_is_used_only_by_presets():
    """experiment/ and task_defaults/ are presets (they set several groups); nothing else is."""
    base = config_dir()
    global_files = sorted(
        str(path.relative_to(base))
        for path in base.rglob("*.yaml")
        if "@package _global_" in path.read_text()
    )
    assert global_files and all(
        f.startswith(("experiment/", "task_defaults/")) for f in global_files
    ), global_files
    for path in (base / "task").glob("*.yaml"):
        assert f"/task_defaults/{path.stem}@_global_" in path.read_text()


def test_hydra_mode_is_left_to_the_command_line_so_its_first_composition_can_be_skipped():
    """``job.known_mode`` answers Hydra's ``get_mode`` with None without composing: right only
    while every packaged config leaves ``hydra.mode`` unset, which real Hydra checks here."""
    from hydra._internal.hydra import Hydra
    from hydra._internal.utils import create_config_search_path
    from hydra.core.global_hydra import GlobalHydra

    hydra = Hydra.create_main_hydra2("t", create_config_search_path(str(config_dir())))
    try:
        check_mode_answers(hydra, Hydra)
    finally:  # create_main_hydra2 set the global instance: leave it as compose() needs it
        GlobalHydra.instance().clear()


def check_mode_answers(hydra, Hydra) -> None:
    """Real Hydra says None for the primary config and for every config that names Hydra's
    own settings (no other file can set ``hydra.mode``); the shortcut stands aside when the
    command line names the mode."""
    from rnnlab.session import job

    naming_hydra = [p for p in config_dir().rglob("*.yaml") if "hydra" in p.read_text()]
    experiments = [p.stem for p in naming_hydra if p.parent.name == "experiment"]
    # conf/ (the primary config's own files: composed below), experiments (each composed),
    # hydra/launcher options (packaged under hydra.launcher: they cannot reach hydra.mode)
    assert {p.parent.name for p in naming_hydra} <= {"conf", "experiment", "launcher"}
    for option in ["", *experiments]:
        overrides = [f"experiment={option}"] if option else []
        assert hydra.get_mode(config_name="train", overrides=overrides) is None, option
    real = Hydra.get_mode
    with job.known_mode(["rnnlab-train", "task=lm"]):
        assert Hydra.get_mode is not real
    with job.known_mode(["rnnlab-train", "-m", "hydra.mode=RUN"]):  # Hydra decides
        assert Hydra.get_mode is real
        assert hydra.get_mode(config_name="train", overrides=["hydra.mode=RUN"]).name == "RUN"
    assert Hydra.get_mode is real


def test_task_default_cell_and_command_line_precedence():
    assert compose(["task=bitcount"]).cell.name == "elman"
    assert compose(["task=bitcount", "cell=gru"]).cell.name == "gru"


def test_optimizers_are_partial_torch_optim_configs():
    for name, cls in (("sgd", "SGD"), ("rmsprop", "RMSprop"), ("adam", "Adam")):
        cfg = compose([f"optim={name}"])
        assert cfg.optim._target_ == f"torch.optim.{cls}"
        assert cfg.optim._partial_ is True
    assert {"momentum", "nesterov"} <= set(compose(["optim=sgd"]).optim)
    assert {"alpha", "eps", "centered"} <= set(compose(["optim=rmsprop"]).optim)


def test_cfg_job_and_info_pass_through_to_hydra(workdir):
    result = cli_inprocess("train", "--cfg", "job", "optim=adam", "optim.lr=0.05", cwd=workdir)
    assert result.returncode == 0, result.stderr
    assert "_target_: torch.optim.Adam" in result.stdout
    assert "lr: 0.05" in result.stdout
    info = cli_inprocess("train", "--info", "defaults", cwd=workdir)
    assert info.returncode == 0, info.stderr
    assert "cell/elman" in info.stdout
    assert not (workdir / "mlflow.db").exists()


def test_train_prints_the_summary(workdir):
    result = cli_inprocess("train", "task=bitcount", "optim=rmsprop", *FAST, cwd=workdir)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "final train loss:" in out
    assert "learned weights: w_x = " in out and "w_rec = " in out
    assert "rnnlab ui --uri sqlite:///" in out
    assert (workdir / "mlflow.db").exists()


def test_mistyped_choice_lists_options_and_creates_no_run(workdir):
    result = cli_inprocess("train", "cell=lstmm", cwd=workdir)
    assert result.returncode != 0
    assert "Could not find 'cell/lstmm'" in result.stderr
    for option in ("elman", "lstm", "gru", "rnn_tanh", "rnn_relu"):
        assert option in result.stderr
    assert not (workdir / "mlflow.db").exists()


def test_divergence_fails_the_run_and_keeps_its_metrics(workdir, client):
    result = cli_inprocess(
        "train", "optim=sgd", "optim.lr=0.01", "trainer.max_epochs=50", "device=cpu", cwd=workdir
    )
    assert result.returncode == 3
    assert "diverged" in result.stderr and "epoch 2" in result.stderr
    for hint in ("lower learning rate", "optim=rmsprop", "trainer.clip_grad_norm"):
        assert hint in result.stderr
    assert "Traceback" not in result.stderr
    (run,) = runs_of(client, "bitcount")
    assert run.info.status == "FAILED"
    assert "diverged" in run.data.tags["failure_reason"]
    history = client.get_metric_history(run.info.run_id, "train/loss")
    assert [m.step for m in history] == [1]  # epoch 1 was finite and stays logged


def test_debug_flag_shows_the_traceback(workdir):
    result = cli_inprocess("--debug", "train", "optim.lr=abc", *FAST, cwd=workdir)
    assert result.returncode != 0
    assert "Traceback" in result.stderr


def test_wrong_type_is_a_clear_error_without_a_run(workdir):
    """A real process: the error's exit code, raised inside the Hydra job, is the exit status
    the shell sees (the other error tests run the CLI in-process)."""
    result = run_cli("train", "optim.lr=abc", *FAST, cwd=workdir)
    assert result.returncode == 2
    assert "optim" in result.stderr and "Traceback" not in result.stderr
    assert not (workdir / "mlflow.db").exists()


def test_multirun_groups_four_jobs_under_a_parent(workdir, client):
    result = cli_inprocess(
        "train",
        "-m",
        "task=bitcount",
        "optim=sgd,rmsprop",
        "seed=1,2",
        *FAST,
        cwd=workdir,
    )
    assert result.returncode == 0, result.stderr
    runs = runs_of(client, "bitcount")
    parents = [r for r in runs if r.data.tags.get("sweep_role") == "parent"]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(parents) == 1 and len(children) == 4
    parent_id = parents[0].info.run_id
    assert parents[0].info.status == "FINISHED"
    assert all(r.info.status == "FINISHED" for r in children)
    assert {r.data.tags["mlflow.parentRunId"] for r in children} == {parent_id}
    assert {r.data.tags["sweep"] for r in runs} == {parent_id}
    assert sorted(r.data.tags["overrides"] for r in children)[0].startswith("task=bitcount")
    assert {(r.data.params["optim.name"], r.data.params["seed"]) for r in children} == {
        ("sgd", "1"),
        ("sgd", "2"),
        ("rmsprop", "1"),
        ("rmsprop", "2"),
    }
    # Hydra's output directories are where .gitignore expects them
    assert (workdir / "multirun").is_dir()
    ignored = (ROOT / ".gitignore").read_text().split()
    assert "multirun/" in ignored and "outputs/" in ignored

    table = cli_inprocess("runs", "--experiment", "bitcount", cwd=workdir)
    assert table.returncode == 0, table.stderr
    for run in children:
        assert run.info.run_id in table.stdout
    assert "rmsprop" in table.stdout and "FINISHED" in table.stdout
    csv = cli_inprocess("runs", "--experiment", "bitcount", "--format", "csv", cwd=workdir)
    import io

    import pandas as pd

    frame = pd.read_csv(io.StringIO(csv.stdout))
    assert len(frame) == 5
    assert {"run_name", "status", "optim.lr", "train/loss"} <= set(frame.columns)
    unknown = cli_inprocess("runs", "--experiment", "nope", cwd=workdir)
    assert unknown.returncode == 2 and "bitcount" in unknown.stderr


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow  # make test starts the same server in tests/test_ui_browser.py (with --uri)
def test_ui_serves_http_on_loopback_and_stops(bitcount_run):
    """A real server process, started where the session's bitcount store is (no --uri)."""
    workdir = bitcount_run["workdir"]
    assert (workdir / "mlflow.db").is_file()
    port = free_port()
    server = subprocess.Popen(
        [*RNNLAB, "ui", "--port", str(port)],
        cwd=workdir,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 90
        body = None
        while time.monotonic() < deadline and server.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                    body = r.read().decode()
                    break
            except OSError:
                time.sleep(0.5)
        assert body is not None, f"the UI did not answer: {server.poll()}"
        assert "OK" in body
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as r:
            assert r.status == 200
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert server.returncode is not None


def test_ui_without_a_store_says_how_to_make_one(workdir):
    result = cli_inprocess("ui", cwd=workdir)
    assert result.returncode == 2
    assert "No tracking store" in result.stderr and "rnnlab train" in result.stderr


def test_wheel_carries_the_configs(tmp_path):
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(ROOT)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert built.returncode == 0, built.stderr
    (wheel,) = tmp_path.glob("rnnlab-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        archive.extractall(tmp_path / "site")
    assert "rnnlab/conf/train.yaml" in names
    assert "rnnlab/conf/cell/lstm.yaml" in names
    assert "rnnlab/manifests/ptb/manifest.json" in names
    code = (
        "from rnnlab.paths import config_dir; import rnnlab.data.fetch as f; "
        "print(config_dir()); print(f.load_manifest('ptb').name)"
    )
    out = subprocess.run(
        [
            sys.executable,
            "-I",
            "-c",
            f"import sys; sys.path.insert(0, {str(tmp_path / 'site')!r}); {code}",
        ],
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,
    )
    found, manifest = out.stdout.split()
    assert Path(found) == tmp_path / "site" / "rnnlab" / "conf"
    assert manifest == "ptb"


def test_a_failed_sweep_job_does_not_stop_the_others(workdir, client):
    result = cli_inprocess("train", "-m", "optim=sgd", "optim.lr=0.01,1e-5", *FAST, cwd=workdir)
    assert result.returncode == 0  # the sweep ran every job; the failure is reported
    assert "1 of 2 sweep jobs failed (elman-sgd-lr0.01)" in result.stderr
    assert "Traceback" not in result.stderr
    runs = runs_of(client, "bitcount")
    by_name = {r.info.run_name: r.info.status for r in runs}
    assert by_name["elman-sgd-lr0.01"] == "FAILED"
    assert by_name["elman-sgd-lr1e-5"] == "FINISHED"
    parent = [r for r in runs if r.data.tags.get("sweep_role") == "parent"][0]
    assert parent.info.status == "FAILED"


def test_tracking_uri_precedence(workdir, monkeypatch, tmp_path):
    from rnnlab.tracking.uri import resolve_tracking_uri

    assert resolve_tracking_uri(None) == f"sqlite:///{workdir / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///from-env.db")
    assert resolve_tracking_uri(None) == f"sqlite:///{workdir / 'from-env.db'}"
    assert resolve_tracking_uri("http://127.0.0.1:5000") == "http://127.0.0.1:5000"
    # end to end: the environment and tracking.uri each pick the store the run lands in
    env_store = tmp_path / "env-store"
    env_store.mkdir()
    by_env = cli_inprocess(
        "train", *FAST, cwd=workdir, env={"MLFLOW_TRACKING_URI": f"sqlite:///{env_store / 'a.db'}"}
    )
    assert by_env.returncode == 0, by_env.stderr
    by_cfg = cli_inprocess(
        "train", *FAST, f"tracking.uri=sqlite:///{env_store / 'b.db'}", "tracking.experiment=demo",
        cwd=workdir, env={"MLFLOW_TRACKING_URI": f"sqlite:///{env_store / 'a.db'}"},
    )  # fmt: skip
    assert by_cfg.returncode == 0, by_cfg.stderr
    from mlflow.tracking import MlflowClient

    assert len(runs_of(MlflowClient(f"sqlite:///{env_store / 'a.db'}"), "bitcount")) == 1
    assert len(runs_of(MlflowClient(f"sqlite:///{env_store / 'b.db'}"), "demo")) == 1
    assert not (workdir / "mlflow.db").exists()


def test_in_process_cli_leaves_no_process_state_behind(bitcount_run, tmp_path):
    """``cli_inprocess`` puts back what a command changes process-wide (``--debug`` sets
    RNNLAB_DEBUG, ``rnnlab runs`` sets MLflow's tracking URI and MLFLOW_TRACKING_URI, ``train``
    sets sys.argv and Hydra's global state), so no test sees another's."""
    import os

    import mlflow
    from hydra.core.global_hydra import GlobalHydra

    env, cwd, argv, uri = dict(os.environ), os.getcwd(), sys.argv[:], mlflow.get_tracking_uri()
    table = cli_inprocess("--debug", "runs", "--uri", bitcount_run["uri"], cwd=tmp_path)
    assert table.returncode == 0, table.stderr
    assert bitcount_run["run"].info.run_id in table.stdout
    job = cli_inprocess("train", "--cfg", "job", cwd=tmp_path)
    assert job.returncode == 0, job.stderr
    assert "_target_: torch.optim.RMSprop" in job.stdout
    assert dict(os.environ) == env
    assert (os.getcwd(), sys.argv, mlflow.get_tracking_uri()) == (cwd, argv, uri)
    assert not GlobalHydra.instance().is_initialized()
