"""``rnnlab serve RUN_ID``: a run's model behind MLflow's scoring server (text in, JSON out)."""

from __future__ import annotations

import click

from rnnlab.commands.runs import URI_HELP


@click.command()
@click.argument("run_id")
@click.option(
    "--port", default=5001, show_default=True, type=click.IntRange(1, 65535), help="Port."
)
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to bind.")
@click.option(
    "--workers",
    default=1,
    show_default=True,
    type=click.IntRange(min=1),
    help="Server processes (each loads the model).",
)
@click.option(
    "--device",
    default="auto",
    show_default=True,
    help="auto (CUDA where there is one) | cpu | cuda",
)
@click.option(
    "--threads",
    default=None,
    type=click.IntRange(min=1),
    help="Torch threads per worker [default: the cores shared among the workers, at least 1].",
)
@click.option(
    "--timeout",
    default=60,
    show_default=True,
    type=click.IntRange(min=1),
    help="Seconds a request may take before the server answers 504 (MLflow's limit).",
)
@click.option("--uri", default=None, help=URI_HELP)
def serve(
    run_id: str,
    port: int,
    host: str,
    workers: int,
    device: str,
    threads: int | None,
    timeout: int,
    uri: str | None,
) -> None:
    """Serve RUN_ID's model over HTTP: POST /invocations with one string per row, get its
    translations, scores or counts back (docs/serving.md). Prints a curl line that works.

    \b
    Examples:
      rnnlab serve 3f2a...
      rnnlab serve 3f2a... --port 8080 --workers 2
    """
    from rnnlab.errors import RnnlabError
    from rnnlab.tracking.scoring import serve as run_server

    if device not in ("auto", "cpu") and not device.startswith("cuda"):
        raise RnnlabError(f"--device {device} is not a device", "Use auto, cpu or cuda")
    raise SystemExit(
        run_server(
            run_id=run_id,
            uri=uri,
            host=host,
            port=port,
            workers=workers,
            device=device,
            threads=threads,
            timeout=timeout,
        )
    )
