"""End to end: `rnnlab ui` serves the MLflow UI on loopback, and a real headless Chromium
renders the experiment page with our runs and their `train/loss` metric.

The MLflow UI is a single-page React app: `--virtual-time-budget` lets Chromium run its
scripts and API calls to completion before `--dump-dom` prints the rendered document. The
chart view lists every run and draws one chart per metric key; a tall window makes its lazily
rendered charts all visible."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
from conftest import RNNLAB, ROOT, runs_of, train

pytestmark = pytest.mark.browser

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def find_chromium() -> str | None:
    explicit = os.environ.get("RNNLAB_CHROMIUM")
    if explicit:
        return explicit if Path(explicit).is_file() else None
    for name in CHROMIUM_NAMES:
        found = shutil.which(name)
        if found:
            return found
    return None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until_up(url: str, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"rnnlab ui exited early with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise AssertionError(f"rnnlab ui did not answer at {url} within {timeout} s")


def render(chromium: str, url: str, profile: Path, *, budget_ms: int) -> str:
    """The DOM of ``url`` after Chromium ran the page's scripts for ``budget_ms`` of virtual time."""
    return chromium_run(chromium, url, profile, budget_ms=budget_ms, output="--dump-dom")


def screenshot_on_failure(chromium: str, url: str, profile: Path, name: str) -> Path:
    """Save what Chromium shows at ``url`` as a test artifact (``$RNNLAB_TEST_ARTIFACTS``,
    else ``test-artifacts/`` in the repository); the path, for the failure message."""
    folder = Path(os.environ.get("RNNLAB_TEST_ARTIFACTS", ROOT / "test-artifacts"))
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.png"
    chromium_run(chromium, url, profile, budget_ms=30_000, output=f"--screenshot={path}")
    return path


def chromium_run(chromium: str, url: str, profile: Path, *, budget_ms: int, output: str) -> str:
    command = [
        chromium,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={profile}",
        "--window-size=1600,8000",
        f"--virtual-time-budget={budget_ms}",
        output,
        url,
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=180, check=False)
    assert done.returncode == 0, f"chromium failed ({done.returncode}): {done.stderr[-2000:]}"
    return done.stdout


@pytest.fixture
def chromium() -> str:
    found = find_chromium()
    if found is None:
        pytest.skip(
            "no Chromium on this machine (looked for "
            + ", ".join(CHROMIUM_NAMES)
            + " on PATH and $RNNLAB_CHROMIUM); .ci/run installs Debian's with "
            "'apt-get install -y chromium', which failed or was not run here"
        )
    return found


def test_ui_shows_runs_and_metrics_in_a_real_browser(chromium, workdir, client, store_uri):
    names = []
    for optim, lr in (("rmsprop", "1e-3"), ("sgd", "1e-5")):
        train([f"optim={optim}", f"optim.lr={lr}", "trainer.max_epochs=5", "device=cpu"])
        names.append(f"elman-{optim}-lr{lr}")
    runs = runs_of(client, "bitcount")
    assert sorted(r.info.run_name for r in runs) == sorted(names)
    experiment_id = runs[0].info.experiment_id

    port = free_port()
    server = subprocess.Popen(
        [*RNNLAB, "ui", "--port", str(port), "--uri", store_uri],
        cwd=workdir,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own process group: mlflow ui starts a uvicorn child
    )
    try:
        base = f"http://127.0.0.1:{port}"
        wait_until_up(f"{base}/health", server)
        url = f"{base}/#/experiments/{experiment_id}/runs?compareRunsMode=CHART"
        dom = ""
        for budget in (20_000, 60_000):  # a loaded machine may need more virtual time
            dom = render(chromium, url, workdir / "chromium-profile", budget_ms=budget)
            if all(n in dom for n in names) and "train/loss" in dom:
                break
        assert "bitcount" in dom, "the experiment page did not render"
        for name in names:
            assert name in dom, f"run {name} is not on the rendered experiment page"
        assert "train/loss" in dom, "the train/loss metric chart is not on the rendered page"
        check_experiment_from_home_page(chromium, base, workdir, names)
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=30)
    assert server.returncode is not None


def check_experiment_from_home_page(chromium: str, base: str, workdir: Path, names) -> None:
    """In a browser that has never opened the UI, follow the experiment's link on the MLflow
    home page: it lands on the training runs (not MLflow 3.17's default GenAI overview), whose
    Dataset column names the data they read."""
    import re

    from rnnlab.tracking.ui_app import TRAINING_DEFAULT

    with urllib.request.urlopen(f"{base}/", timeout=10) as response:
        assert TRAINING_DEFAULT in response.read().decode(), "the index page sets no default view"
    profile = workdir / "chromium-home"  # a new browser profile: no view chosen yet
    home = render(chromium, f"{base}/#/", profile, budget_ms=20_000)
    links = re.findall(r'href="(#/experiments/[0-9]+)"[^>]*>\s*(?:<[^>]+>\s*)*bitcount<', home)
    url = f"{base}/{links[0]}" if links else f"{base}/#/"
    dom = ""
    try:
        assert links, "the home page has no link to the bitcount experiment"
        for budget in (20_000, 60_000):
            dom = render(chromium, url, profile, budget_ms=budget)
            if "bitcount-train" in dom:
                break
        assert "Run Name" in dom and all(n in dom for n in names), "not on the training runs"
        assert "Dataset" in dom, "the runs table has no Dataset column"
        assert "bitcount-train" in dom, "the Dataset column does not name the dataset"
        assert "rnnlab train" in dom, "the Source column does not show rnnlab train"
        assert re.search(r'href="#/experiments/[0-9]+/models/m-[0-9a-f]+"', dom), (
            "the Models column does not link the run's logged model"
        )
    except AssertionError as exc:
        shot = screenshot_on_failure(chromium, url, profile, "experiment-from-home-page")
        raise AssertionError(f"{exc} (screenshot: {shot})") from exc


def test_ui_binds_loopback_and_warns_when_exposed(bitcount_run, monkeypatch, capsys):
    """The command rnnlab would exec, captured instead of run (nothing is exposed)."""
    from rnnlab.tracking import ui

    store_uri = bitcount_run["uri"]  # a store with a finished run, only read here
    executed = []
    monkeypatch.setattr(ui.os, "execv", lambda path, argv: executed.append(argv))
    ui.serve(uri=store_uri, host="127.0.0.1", port=5000)
    ui.serve(uri=store_uri, host="0.0.0.0", port=5000)
    loopback, exposed = executed
    assert loopback[loopback.index("--host") + 1] == "127.0.0.1"
    assert loopback[loopback.index("--workers") + 1] == "1"
    assert loopback[loopback.index("--app-name") + 1] == "rnnlab"  # opens on Model training
    assert exposed[exposed.index("--host") + 1] == "0.0.0.0"
    err = capsys.readouterr().err
    assert err.count("warning: binding") == 1
    assert "warning: binding 0.0.0.0 exposes the MLflow UI" in err


def test_ui_without_its_mlflow_app_installed_says_how_to_fix_it(bitcount_run, monkeypatch):
    """Metadata from an install older than the mlflow.app plugin: one clear error naming the
    fix, and no server started (MLflow itself would exit with a traceback)."""
    from rnnlab.errors import TrackingError
    from rnnlab.tracking import ui, ui_app

    monkeypatch.setattr(ui_app, "entry_points", lambda group: [])
    executed = []
    monkeypatch.setattr(ui.os, "execv", lambda path, argv: executed.append(argv))
    with pytest.raises(TrackingError, match="make install") as raised:
        ui.serve(uri=bitcount_run["uri"], host="127.0.0.1", port=5000)
    assert "mlflow.app entry point 'rnnlab'" in str(raised.value)
    assert executed == []
