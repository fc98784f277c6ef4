"""``rnnlab server``: a shared MLflow tracking server (PostgreSQL or sqlite, served artifacts,
optional basic auth), on loopback by default."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from rnnlab.commands.ui import HOST_OPTION, PORT_OPTION


@click.command()
@click.option(
    "--backend-store-uri",
    "store",
    required=True,
    help="Where runs are kept: postgresql://USER@HOST:PORT/DB, or sqlite:///PATH.",
)
@click.option(
    "--artifacts-destination",
    "artifacts",
    default=None,
    help="Folder (or s3://...) the server stores uploaded artifacts in "
    "[default: mlartifacts beside a sqlite store].",
)
@HOST_OPTION
@PORT_OPTION
@click.option(
    "--allowed-hosts",
    default=None,
    help="Host names clients reach the server by (comma-separated; MLflow allows loopback "
    "and private addresses only).",
)
@click.option(
    "--workers", default=2, show_default=True, type=click.IntRange(min=1), help="Server workers."
)
@click.option(
    "--auth",
    is_flag=True,
    help="MLflow's basic-auth app; the admin's password comes from MLFLOW_AUTH_ADMIN_PASSWORD "
    "or --auth-config, never from the command line.",
)
@click.option(
    "--auth-config",
    type=click.Path(path_type=Path),
    default=None,
    help="An MLflow basic_auth.ini (admin, auth database, default permission) for --auth.",
)
def server(
    store: str,
    artifacts: str | None,
    host: str,
    port: int,
    workers: int,
    auth: bool,
    auth_config: Path | None,
    allowed_hosts: str | None,
) -> None:
    """Start a shared MLflow tracking server for a team (see docs/team.md).

    \b
    Clients point at it with MLFLOW_TRACKING_URI=http://HOST:PORT, and with --auth also
    MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD.
    """
    from rnnlab.tracking.server import serve

    sys.exit(
        serve(
            store=store,
            artifacts=artifacts,
            host=host,
            port=port,
            workers=workers,
            auth=auth,
            auth_config=auth_config,
            allowed_hosts=allowed_hosts,
        )
    )
