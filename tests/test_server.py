"""``rnnlab server`` against a real PostgreSQL cluster with MLflow's basic auth: a joblib sweep
of 8 jobs logs through it with credentials, and clients without the right password are
refused in one paragraph (exit 2) before any run exists. Checked through the REST API.

The cluster is a throwaway one (initdb/pg_ctl in a temp dir); the module skips, saying why,
only where PostgreSQL is not installed (``.ci/run`` installs Debian's ``postgresql``)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import requests
from conftest import cli_inprocess, run_cli
from servers import ADMIN_PASSWORD, postgres_bin, postgres_cluster, rnnlab_server

pytestmark = pytest.mark.server

EPOCHS = 3
USER, PASSWORD = "alice", "alice-pw-for-tests"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """One PostgreSQL cluster and one ``rnnlab server --auth`` on it for the module, with a
    team member, alice, created through the admin API."""
    bindir = postgres_bin()
    if bindir is None:
        pytest.skip("PostgreSQL is not installed (no initdb): apt-get install postgresql")
    folder = tmp_path_factory.mktemp("server")
    artifacts = folder / "mlartifacts"
    with (
        postgres_cluster(bindir) as store,
        rnnlab_server(store, artifacts, folder / "server.log") as url,
    ):
        created = requests.post(
            f"{url}/api/2.0/mlflow/users/create",
            json={"username": USER, "password": PASSWORD},
            auth=("admin", ADMIN_PASSWORD),
            timeout=30,
        )
        assert created.ok, created.text
        created = requests.post(
            f"{url}/api/2.0/mlflow/users/create",
            json={"username": "bob", "password": "bob-pw-for-tests"},
            auth=("admin", ADMIN_PASSWORD),
            timeout=30,
        )
        assert created.ok, created.text
        yield url, artifacts


def api(url: str, endpoint: str, **params):
    """GET a REST endpoint as alice; its JSON."""
    response = requests.get(
        f"{url}/api/2.0/mlflow/{endpoint}", params=params, auth=(USER, PASSWORD), timeout=30
    )
    assert response.ok, response.text
    return response.json()


def all_runs(url: str) -> list[dict]:
    experiments = requests.post(
        f"{url}/api/2.0/mlflow/experiments/search",
        json={"max_results": 100},
        auth=(USER, PASSWORD),
        timeout=30,
    ).json()
    ids = [e["experiment_id"] for e in experiments.get("experiments", [])]
    found = requests.post(
        f"{url}/api/2.0/mlflow/runs/search",
        json={"experiment_ids": ids, "max_results": 1000},
        auth=(USER, PASSWORD),
        timeout=30,
    ).json()
    return found.get("runs", [])


def client_env(url: str, **credentials: str) -> dict[str, str]:
    env = {"MLFLOW_TRACKING_URI": url, "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}
    return env | {f"MLFLOW_TRACKING_{k.upper()}": v for k, v in credentials.items()}


@pytest.mark.parametrize(
    "jobs", [2, pytest.param(8, marks=pytest.mark.slow)], ids=["2 jobs", "8 jobs"]
)
def test_a_joblib_sweep_logs_its_runs_and_their_checkpoints_through_the_server(
    server, tmp_path, jobs
):
    """Two jobs in ``make test`` (the paths: parallel workers, the parent, uploads through
    the server); the eight-job sweep of the team issue in ``make test-all`` (28 s more)."""
    url, artifacts = server
    seeds = ",".join(str(seed) for seed in range(1, jobs + 1))
    # 2 workers: each imports torch, Hydra and MLflow once; 4 cost 40 s of CPU against 25 s
    # for the same 8 jobs (measured), on CI's 2 cores
    done = run_cli(
        "train", "-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2",
        f"seed={seeds}", f"trainer.max_epochs={EPOCHS}", "device=cpu",
        cwd=tmp_path, env=client_env(url, username=USER, password=PASSWORD), timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-5000:]
    runs = all_runs(url)
    tags = [{t["key"]: t["value"] for t in r["data"].get("tags", [])} for r in runs]
    (parent,) = [r for r, t in zip(runs, tags, strict=True) if t.get("sweep_role") == "parent"]
    assert parent["info"]["status"] == "FINISHED"
    children = [r for r, t in zip(runs, tags, strict=True) if t.get("mlflow.parentRunId")]
    assert len(children) == len(runs) - 1 == jobs, [t.get("sweep_role") for t in tags]
    for run in children:
        info = run["info"]
        assert info["status"] == "FINISHED"
        assert info["artifact_uri"].startswith("mlflow-artifacts:/")
        for key in ("train/loss", "val/loss"):
            history = api(url, "metrics/get-history", run_id=info["run_id"], metric_key=key)
            assert sorted(m["step"] for m in history["metrics"]) == list(range(1, EPOCHS + 1))
        # uploaded through the server into its artifact destination, not the client's disk
        landed = artifacts / info["experiment_id"] / info["run_id"] / "artifacts"
        assert (landed / "checkpoints" / "last.pt").is_file()
        assert (landed / "config.yaml").is_file()
    assert not list(tmp_path.glob("mlflow-artifacts*"))


WRONG = {"username": USER, "password": "wrong"}


@pytest.mark.parametrize(
    ("sweep", "credentials", "says"),
    [
        ([], WRONG, "refused the password of user 'alice'"),
        ([], {}, "needs a user name and password"),
        (["-m", "hydra/launcher=joblib", "seed=1,2"], WRONG, "refused the password"),
    ],
    ids=["wrong password", "no password", "sweep with a wrong password"],
)
def test_a_client_without_the_right_password_is_refused_before_any_run(
    server, tmp_path, sweep, credentials, says
):
    url, _ = server
    before = len(all_runs(url))
    start = time.monotonic()
    done = cli_inprocess(
        "train", *sweep, "trainer.max_epochs=1", "device=cpu", cwd=tmp_path,
        env=client_env(url, **credentials),
    )  # fmt: skip
    # asked once: MLflow's retries (7, backoff factor 2) would take minutes
    assert time.monotonic() - start < 60
    assert done.returncode == 2, done.stderr
    assert says in done.stderr and "HTTP 401" in done.stderr
    assert "MLFLOW_TRACKING_PASSWORD" in done.stderr  # the fix
    assert "Traceback" not in done.stderr
    assert done.stderr.count("rnnlab: error:") == 1  # a sweep stops before launching jobs
    assert len(all_runs(url)) == before


def test_a_user_who_may_only_read_an_experiment_is_refused_before_any_run(server, tmp_path):
    """MLflow's default permission is READ: bob cannot train into alice's experiment."""
    url, _ = server
    made = requests.post(
        f"{url}/api/2.0/mlflow/experiments/create",
        json={"name": "alice-only"},
        auth=(USER, PASSWORD),
        timeout=30,
    )
    assert made.ok, made.text
    before = len(all_runs(url))
    done = cli_inprocess(
        "train", "trainer.max_epochs=1", "device=cpu", "tracking.experiment=alice-only",
        cwd=tmp_path, env=client_env(url, username="bob", password="bob-pw-for-tests"),
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert "does not let user 'bob' write there (HTTP 403" in done.stderr
    assert "EDIT permission" in done.stderr and "Traceback" not in done.stderr
    assert len(all_runs(url)) == before


def test_the_admin_password_never_reaches_argv_and_other_hosts_are_warned_about(
    tmp_path, monkeypatch
):
    """What ``rnnlab server --auth`` hands to ``mlflow server`` (captured where it would start
    it): loopback unless told otherwise, served artifacts, the auth app, and the password only
    in the environment; the auth config it writes is private and holds no password."""
    from rnnlab.tracking import server as module

    started = {}

    def capture(command, env):
        config = Path(env["MLFLOW_AUTH_CONFIG_PATH"])
        started.update(command=command, env=env, mode=config.stat().st_mode & 0o777)
        started["config"] = config.read_text()
        return 0

    monkeypatch.setattr(module, "run_until_stopped", capture)
    # no database answers here: the probe (tested on a closed port in test_bad_inputs) records
    probed = []
    monkeypatch.setattr(module, "probe_database", lambda uri, **_: probed.append(uri))
    secret = "never-in-argv-123"
    store = "postgresql://team@127.0.0.1:5432/mlflow"
    args = ["server", "--backend-store-uri", store, "--artifacts-destination", "art", "--auth"]
    env = {"MLFLOW_AUTH_ADMIN_PASSWORD": secret}
    done = cli_inprocess(*args, cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr
    command = started["command"]
    assert secret not in " ".join(command) and secret not in started["config"]
    assert command[command.index("--host") + 1] == "127.0.0.1"
    assert "--serve-artifacts" in command
    assert command[command.index("--app-name") + 1] == "basic-auth"
    assert command[command.index("--artifacts-destination") + 1] == (tmp_path / "art").as_uri()
    assert started["env"]["MLFLOW_AUTH_ADMIN_PASSWORD"] == secret
    assert started["mode"] == 0o600
    assert probed == ["postgresql+psycopg://team@127.0.0.1:5432/mlflow"]
    assert "database_uri = postgresql+psycopg://team@127.0.0.1:5432/mlflow" in started["config"]
    assert "warning" not in done.stderr

    done = cli_inprocess(*args, "--host", "0.0.0.0", cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr
    assert "warning: binding 0.0.0.0 exposes the tracking server" in done.stderr
