"""Throwaway servers for the tests of ``rnnlab server`` and its benchmark: a PostgreSQL cluster
in a temp dir (Debian's initdb/pg_ctl, as an unprivileged user when we are root: PostgreSQL
refuses to run as root) and ``rnnlab server`` itself as a real process."""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
ADMIN_PASSWORD = "admin-pw-for-tests"


def free_port() -> int:
    with contextlib.closing(socket.socket()) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def postgres_bin() -> Path | None:
    """The folder holding initdb and pg_ctl: on PATH, else Debian's newest versioned one."""
    initdb = shutil.which("initdb")
    if initdb:
        return Path(initdb).resolve().parent  # a symlink into the versioned folder
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4])
    )
    return Path(found[-1]).parent if found else None


def cluster_user() -> str | None:
    """Who runs the cluster: ourselves, or (as root) Debian's postgres user, else nobody."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            pwd.getpwnam(name)
            return name
    raise RuntimeError("running as root with neither a postgres nor a nobody user")


@contextlib.contextmanager
def postgres_cluster(bindir: Path) -> Iterator[str]:
    """A fresh cluster on a free loopback port with one database, ``mlflow``; its URI.

    Trust authentication on loopback and no fsync: a test cluster that lives seconds. The temp
    dir sits directly in /tmp (pytest's own are root-only, 0700) and belongs to the user the
    cluster runs as."""
    user = cluster_user()
    as_user = ["runuser", "-u", user, "--"] if user else []
    folder = Path(tempfile.mkdtemp(prefix="rnnlab-pg-"))
    if user:
        shutil.chown(folder, user)
    data, port = folder / "data", free_port()
    options = (
        f"-c listen_addresses=127.0.0.1 -p {port} -k {folder} "
        "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
    )

    def run(*args: str) -> None:
        subprocess.run([*as_user, *args], check=True, capture_output=True, text=True, timeout=120)

    try:
        run(str(bindir / "initdb"), "-D", str(data), "-U", "rnnlab", "-A", "trust", "--no-sync")
        run(str(bindir / "pg_ctl"), "-D", str(data), "-l", str(folder / "log"), "-o", options,
            "-w", "start")  # fmt: skip
        run(str(bindir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "rnnlab", "mlflow")
        yield f"postgresql://rnnlab@127.0.0.1:{port}/mlflow"
    finally:
        with contextlib.suppress(subprocess.SubprocessError):
            run(str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop")
        shutil.rmtree(folder, ignore_errors=True)


@contextlib.contextmanager
def rnnlab_server(
    store: str, artifacts: Path, log: Path, *, auth: bool = True, timeout: float = 180
) -> Iterator[str]:
    """``rnnlab server`` as a real process (its own session, so that its workers stop with
    it); its URL once ``/health`` answers."""
    port = free_port()
    args = ["--backend-store-uri", store, "--artifacts-destination", str(artifacts)]
    args += ["--port", str(port), "--workers", "1", *(["--auth"] if auth else [])]
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env["MLFLOW_AUTH_ADMIN_PASSWORD"] = ADMIN_PASSWORD
    with log.open("w") as out:
        server = subprocess.Popen(
            [sys.executable, "-m", "rnnlab.cli", "server", *args],
            env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, cwd=log.parent,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if server.poll() is not None:
                raise RuntimeError(f"rnnlab server exited {server.returncode}:\n{log.read_text()}")
            with contextlib.suppress(requests.ConnectionError):
                if requests.get(f"{url}/health", timeout=2).ok:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"rnnlab server not up in {timeout} s:\n{log.read_text()}")
            time.sleep(0.3)
        yield url
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=5)  # a throwaway server: no need to wait out a slow shutdown
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
