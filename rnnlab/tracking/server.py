"""``rnnlab server``: a shared MLflow tracking server (``mlflow server``) for a team.

It takes a PostgreSQL (or sqlite) backend store and an artifact destination that clients
upload to through the server (``--serve-artifacts``), so a client needs only the server's
address, never the database or the artifact file system. ``--auth`` turns on MLflow's
basic-auth app; its admin credentials come from the environment
(``MLFLOW_AUTH_ADMIN_USERNAME`` / ``MLFLOW_AUTH_ADMIN_PASSWORD``, read by MLflow itself) or
from an MLflow ``basic_auth.ini`` (``--auth-config``), never from argv: a password on a
command line is visible to every user of the machine in ``ps``.
"""

from __future__ import annotations

import os
import re
import secrets
import signal
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import click

from rnnlab.errors import TrackingError
from rnnlab.tracking.store import prepare
from rnnlab.tracking.ui import LOOPBACK
from rnnlab.tracking.ui_app import APP_NAME, require_plugin
from rnnlab.tracking.uri import absolutize, sqlite_path

#: stores a team server can hold runs in (SQLAlchemy URIs); MLflow's file store is deprecated
STORE_SCHEMES = ("postgresql", "sqlite", "mysql", "mssql")
ADMIN_USER_VAR = "MLFLOW_AUTH_ADMIN_USERNAME"
ADMIN_PASSWORD_VAR = "MLFLOW_AUTH_ADMIN_PASSWORD"
#: seconds a worker trusts a checked password (MLflow's auth cache; off by default)
AUTH_CACHE_TTL_S = 60


def check_store(uri: str) -> str:
    """The backend store URI, made absolute for sqlite; an error for what cannot hold runs."""
    scheme = uri.split("://", 1)[0].split("+", 1)[0] if "://" in uri else ""
    if scheme not in STORE_SCHEMES:
        raise TrackingError(
            f"--backend-store-uri {redact(uri)} is not a database URI",
            "Pass postgresql://USER@HOST:PORT/DB (a team server) or sqlite:///PATH (one machine); "
            "put a database password in ~/.pgpass or PGPASSWORD, not in the URI",
        )
    if uri.startswith("postgresql://"):
        # name the driver rnnlab installs (psycopg 3): SQLAlchemy's default for a bare
        # postgresql:// is psycopg2 before 2.1 and psycopg from 2.1 on
        uri = "postgresql+psycopg://" + uri.removeprefix("postgresql://")
    if uri.startswith("postgresql+psycopg://"):
        try:
            import psycopg  # noqa: F401
        except ImportError as exc:
            raise TrackingError(
                "The PostgreSQL driver psycopg is not installed",
                "pip install 'psycopg[binary]' (a dependency of rnnlab: reinstall with make install)",
            ) from exc
    return absolutize(uri)


def probe_database(uri: str, *, timeout_s: int = 5) -> None:
    """Connect to a database store once before the server starts, so that a database that
    cannot be reached is one paragraph here rather than a traceback from every worker."""
    if sqlite_path(uri) is not None:
        return  # a sqlite file is created on first use; its folder was checked already
    import sqlalchemy

    args = {"connect_timeout": timeout_s} if uri.startswith("postgresql") else {}
    engine = sqlalchemy.create_engine(uri, connect_args=args)
    try:
        with engine.connect():
            return
    except sqlalchemy.exc.SQLAlchemyError as exc:
        cause = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        raise TrackingError(
            f"Cannot reach the backend store {redact(uri)}: {cause}",
            "Check that the database server is running and that the host, port, user and "
            "database name in --backend-store-uri are right (a password belongs in ~/.pgpass "
            "or PGPASSWORD); the tracking server was not started",
        ) from exc
    finally:
        engine.dispose()


def require_destination(destination: str | None, store: str) -> None:
    """A database store needs an artifact destination (a sqlite one has a default)."""
    if destination is None and sqlite_path(store) is None:
        raise TrackingError(
            "A database store needs --artifacts-destination: checkpoints and plots do not "
            "go into the database",
            "Pass --artifacts-destination /shared/mlartifacts (a folder the server can write) "
            "or an object store URI (s3://bucket/path)",
        )


def artifacts_uri(destination: str | None, store: str) -> str:
    """Where served artifacts go: the destination given, else ``mlartifacts`` beside a sqlite
    store; a local path is created and made an absolute ``file://`` URI."""
    require_destination(destination, store)
    if destination is None:
        db = sqlite_path(store)
        assert db is not None  # require_destination: only a sqlite store has a default
        destination = str(db.parent / "mlartifacts")
    if "://" in destination and not destination.startswith("file://"):
        return destination  # s3://, gs://, ...: MLflow's artifact repositories
    path = Path(destination.removeprefix("file://")).resolve()
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise TrackingError(
            f"Cannot create the artifact destination {path}: {exc.strerror}",
            "Pass an --artifacts-destination the server's user can write",
        ) from exc
    return path.as_uri()


def auth_config_file(*, config: Path | None, store: str, folder: Path) -> Path:
    """The basic_auth.ini MLflow's auth app reads (``MLFLOW_AUTH_CONFIG_PATH``).

    Given one, it is checked: it must exist and not be readable by other users when it holds
    a password. Otherwise one is written into ``folder`` that keeps users and permissions in
    the backend store itself (MLflow's auth tables have their own migration table,
    ``alembic_version_auth``), so one database holds and backs up everything; it holds no
    password: MLflow reads the admin's from ``MLFLOW_AUTH_ADMIN_PASSWORD``.
    """
    if config is not None:
        if not config.is_file():
            raise TrackingError(
                f"--auth-config {config} does not exist",
                "Pass an MLflow basic_auth.ini (docs/team.md shows one), or leave --auth-config "
                f"out and set {ADMIN_USER_VAR} and {ADMIN_PASSWORD_VAR}",
            )
        if "admin_password" in config.read_text() and config.stat().st_mode & 0o077:
            click.echo(
                f"warning: {config} holds the admin password and other users can read it; "
                f"chmod 600 {config}",
                err=True,
            )
        return config.resolve()
    if not os.environ.get(ADMIN_PASSWORD_VAR):
        raise TrackingError(
            f"--auth needs the admin's credentials, and {ADMIN_PASSWORD_VAR} is not set",
            f"Set {ADMIN_USER_VAR} (default admin) and {ADMIN_PASSWORD_VAR} in the server's "
            "environment, or pass --auth-config basic_auth.ini; never put a password on the "
            "command line (ps shows it to every user)",
        )
    path = folder / "basic_auth.ini"
    path.write_text(
        "[mlflow]\n"
        "default_permission = READ\n"
        f"database_uri = {store}\n"
        "admin_username = admin\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
        # a password is checked once a minute per worker, not hashed (PBKDF2) on every
        # request: a training run sends hundreds; a changed password takes up to 60 s
        f"auth_cache_ttl_seconds = {AUTH_CACHE_TTL_S}\n"
    )
    path.chmod(stat.S_IRUSR | stat.S_IWUSR)
    return path


def server_command(
    *,
    store: str,
    artifacts: str,
    host: str,
    port: int,
    workers: int,
    auth: bool,
    allowed_hosts: str | None = None,
) -> list[str]:
    """The ``mlflow server`` command line (clients upload artifacts through the server).

    MLflow answers only requests whose Host header is loopback or a private address unless
    ``--allowed-hosts`` names more (its DNS-rebinding guard): a server known by name needs it.
    """
    command = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", store]
    command += ["--serve-artifacts", "--artifacts-destination", artifacts]
    command += ["--host", host, "--port", str(port), "--workers", str(workers)]
    if allowed_hosts:
        command += ["--allowed-hosts", allowed_hosts]
    return [*command, "--app-name", "basic-auth" if auth else APP_NAME]


def redact(uri: str) -> str:
    """``uri`` with any password in it replaced by ``***`` (for what is printed)."""
    return re.sub(r"://([^:/@]+):[^@/]*@", r"://\1:***@", uri)


def warn_exposed(host: str, auth: bool) -> None:
    """A non-loopback bind is the user's choice, said out loud."""
    if host in LOOPBACK:
        return
    what = "with basic auth (plain HTTP: put TLS in front of it)" if auth else "with NO auth"
    click.echo(
        f"warning: binding {host} exposes the tracking server, its REST API (which can "
        f"delete runs) and its artifacts to the network, {what}",
        err=True,
    )


def serve(
    *,
    store: str,
    artifacts: str | None,
    host: str,
    port: int,
    workers: int,
    auth: bool,
    auth_config: Path | None,
    allowed_hosts: str | None = None,
) -> int:
    """Run the tracking server until Ctrl-C or SIGTERM; its exit status."""
    if auth_config is not None and not auth:
        raise TrackingError("--auth-config is given without --auth", "Add --auth, or drop it")
    store = check_store(store)
    require_destination(artifacts, store)
    probe_database(store)
    prepare(store)  # a sqlite schema the server would create or upgrade: under rnnlab's lock
    if not auth:
        require_plugin()  # the app that opens the UI on Model training (ui_app.py)
    warn_exposed(host, auth)
    env = dict(os.environ)
    env.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")  # see rnnlab.tracking.ui
    with tempfile.TemporaryDirectory(prefix="rnnlab-server-") as folder:
        if auth:
            config = auth_config_file(config=auth_config, store=store, folder=Path(folder))
            env["MLFLOW_AUTH_CONFIG_PATH"] = str(config)
            # the CSRF secret: one per server start, shared by its workers through the env
            env.setdefault("MLFLOW_FLASK_SERVER_SECRET_KEY", secrets.token_hex(32))
        artifacts = artifacts_uri(artifacts, store)  # created once every check has passed
        click.echo(
            f"MLflow tracking server on http://{host}:{port} for {redact(store)}, artifacts in "
            f"{artifacts}{', basic auth' if auth else ''} (Ctrl-C to stop)",
            err=True,
        )
        command = server_command(
            store=store,
            artifacts=artifacts,
            host=host,
            port=port,
            workers=workers,
            auth=auth,
            allowed_hosts=allowed_hosts,
        )
        return run_until_stopped(command, env)


def run_until_stopped(command: list[str], env: dict[str, str]) -> int:
    """Run ``command``, passing SIGTERM on to it (Ctrl-C reaches it through the terminal)."""
    sys.stdout.flush()
    sys.stderr.flush()
    child = subprocess.Popen(command, env=env)  # noqa: S603 - our own mlflow command line
    previous = signal.signal(signal.SIGTERM, lambda *_: child.terminate())
    try:
        while True:
            try:
                return child.wait()
            except KeyboardInterrupt:
                continue  # the child got the same SIGINT; wait for it to shut down
    finally:
        signal.signal(signal.SIGTERM, previous)
