"""``rnnlab serve RUN_ID``: MLflow's scoring server on a run's text-in model.

The run's model (its ``model_uri`` tag) is downloaded once, checked to be one that takes
text (:mod:`rnnlab.tracking.serving`), and served by uvicorn running
:mod:`rnnlab.tracking.scoring_app`: the app ``mlflow models serve --env-manager local``
runs (``mlflow.pyfunc.scoring_server``), with a check of each request as sent
(:func:`request_problem`), which MLflow's parser cannot make. The server is a child process: a stop signal to this one
stops it, and the downloaded copy goes with them.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import click

from rnnlab.errors import RnnlabError, TrackingError
from rnnlab.tasks.base import ServingSchema
from rnnlab.tracking.serving import LOADER, SERVING_FILE, rows_problem
from rnnlab.tracking.store import connect, get_run
from rnnlab.tracking.uri import resolve_tracking_uri

#: the model folder the scoring app loads (set for the uvicorn process)
MODEL_VAR = "RNNLAB_SERVE_MODEL"
THREADS_VAR = "RNNLAB_SERVE_THREADS"  # torch threads per worker (rnnlab serve --threads)
LOOPBACK = {"127.0.0.1", "localhost", "::1"}
#: MLflow's JSON request formats (docs/serving.md)
FORMATS = ("dataframe_split", "dataframe_records", "instances", "inputs")


def request_problem(body: bytes, schema: ServingSchema) -> str | None:
    """What is wrong with a JSON request, in one sentence, or None (MLflow parses the rest).

    Checked on the JSON as sent, in each of MLflow's request formats: MLflow's parser turns
    a number in a string column into a string (``3`` becomes ``"3"``) and only warns about
    an unknown param (mlflow PR 9252), so a misspelt ``beem`` would translate with the
    default beam and the client would never know."""
    try:
        payload = json.loads(body)
    except ValueError:
        return None  # not JSON: MLflow's own error says so
    if not isinstance(payload, dict):
        return None
    params = payload.get("params")
    if params is not None:
        if not isinstance(params, dict):
            return "'params' must be a JSON object of name: value"
        if unknown := sorted(set(params) - set(schema.params)):
            known = ", ".join(schema.params) or "no params"
            return f"Unknown param {', '.join(unknown)}: this model takes {known}"
    values = column_values(payload, schema.column)
    if values is None:
        if not any(key in payload for key in FORMATS):
            return None  # not a request MLflow reads: its own error names the keys
        example = json.dumps({"inputs": {schema.column: schema.example[:1]}}, ensure_ascii=False)
        return f"The input has no column '{schema.column}': send rows as {example}"
    return rows_problem(values, schema)


def column_values(payload: dict[str, Any], column: str) -> list[Any] | None:
    """The values of ``column`` in a request of any of MLflow's JSON formats
    (``dataframe_split``, ``dataframe_records``, ``instances``, ``inputs``), or None where
    the request does not have it (MLflow's schema check then names the missing column)."""
    if "dataframe_split" in payload:
        split = payload["dataframe_split"]
        columns = split.get("columns") if isinstance(split, dict) else None
        if not isinstance(columns, list) or column not in columns:
            return None
        j = columns.index(column)
        data = split.get("data") or []
        return [row[j] if isinstance(row, list) and j < len(row) else None for row in data]
    for key in FORMATS[1:]:
        data = payload.get(key)
        if isinstance(data, dict):
            values = data.get(column)
            return None if column not in data else values if isinstance(values, list) else [values]
        if isinstance(data, list):
            if data and all(isinstance(row, dict) for row in data):
                if not any(column in row for row in data):
                    return None
                return [row.get(column) for row in data]
            return data  # bare values: the one column
        if data is not None:
            return [data]
    return None


def guard(app: Any, schema: ServingSchema) -> None:
    """Answer a bad ``/invocations`` request with HTTP 400 and one sentence (MLflow's error
    shape), before MLflow parses it; the next request is served as usual."""
    from fastapi import Request
    from fastapi.responses import JSONResponse

    @app.middleware("http")
    async def refuse_bad_requests(request: Request, call_next):
        json_body = "json" in (request.headers.get("content-type") or "")
        if request.method == "POST" and request.url.path == "/invocations" and json_body:
            problem = request_problem(await request.body(), schema)
            if problem is not None:
                message = problem if problem.endswith(".") else f"{problem}."
                content = {"error_code": "INVALID_PARAMETER_VALUE", "message": message}
                return JSONResponse(content, status_code=400)
        return await call_next(request)


def run_model_uri(run_id: str, uri: str) -> str:
    """The run's logged model, or an error saying why it has none."""
    run = get_run(connect(uri), run_id, uri=uri, asked_as=f"Run '{run_id}'")
    model_uri = run.data.tags.get("model_uri")
    if model_uri is None:
        raise TrackingError(
            f"Run {run_id} ({run.info.run_name}, {run.info.status}) has no logged model",
            "Serve a run that finished with tracking.log_model=true (the default)",
        )
    return model_uri


def download_model(model_uri: str, uri: str, into: Path) -> Path:
    """The model's files under ``into``; refused when its pyfunc is not the text-in one."""
    import mlflow
    import yaml

    mlflow.set_tracking_uri(uri)
    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=str(into)))
    mlmodel = yaml.safe_load((local / "MLmodel").read_text())
    loader = mlmodel.get("flavors", {}).get("python_function", {}).get("loader_module")
    if loader != LOADER or not (local / SERVING_FILE).exists():
        raise RnnlabError(
            f"The model of this run ({model_uri}) takes tensors, not text: it was logged "
            "before rnnlab served text, or by a task that does not serve",
            "Train the run again (rnnlab train rerun=RUN_ID) to log a model that serves",
        )
    return local


def check_port(host: str, port: int) -> None:
    """Refuse a port something already listens on, before the server starts."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise RnnlabError(
                f"Cannot listen on {host}:{port}: {exc.strerror}",
                "Pick another port with --port (or stop what uses it)",
            ) from None


def curl_line(local: Path, host: str, port: int) -> str:
    """A request that works against this model: its first example row."""
    schema = json.loads((local / SERVING_FILE).read_text(encoding="utf-8"))
    body = json.dumps({"inputs": {schema["column"]: schema["example"][:1]}}, ensure_ascii=False)
    address = f"[{host}]" if ":" in host else host
    return (
        f"curl -s http://{address}:{port}/invocations -H 'Content-Type: application/json' "
        f"-d {shlex.quote(body)}"
    )


def server_command(*, host: str, port: int, workers: int) -> list[str]:
    return [
        *(sys.executable, "-m", "uvicorn", "--host", host, "--port", str(port)),
        *("--workers", str(workers), "--log-level", "warning"),
        "rnnlab.tracking.scoring_app:app",
    ]


def serve(
    *,
    run_id: str,
    uri: str | None,
    host: str,
    port: int,
    workers: int,
    device: str,
    threads: int | None = None,
    timeout: int = 60,
) -> int:
    """Serve RUN_ID's model until stopped; the server's exit status."""
    # each worker is a process with its own torch pool: the cores are shared, not multiplied
    threads = threads or max(1, len(os.sched_getaffinity(0)) // workers)
    from mlflow.environment_variables import MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT
    from mlflow.pyfunc.scoring_server import SERVING_MODEL_CONFIG

    uri = resolve_tracking_uri(uri)
    model_uri = run_model_uri(run_id, uri)
    check_port(host, port)
    if device.startswith("cuda"):
        from rnnlab.tracking.serving import pick_device

        pick_device(device)  # no CUDA here: said now, not by each worker as it loads
    with tempfile.TemporaryDirectory(prefix="rnnlab-serve-") as tmp:
        local = download_model(model_uri, uri, Path(tmp))
        env = {**os.environ, MODEL_VAR: str(local)}
        env[SERVING_MODEL_CONFIG] = json.dumps({"device": device, "threads": threads})
        env[THREADS_VAR] = str(threads)  # models logged before "threads" was a config key
        env[MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT.name] = str(timeout)
        if host not in LOOPBACK:
            click.echo(f"warning: binding {host} serves the model to the network", err=True)
        click.echo(
            f"serving {model_uri} (run {run_id}) on http://{host}:{port}/invocations with "
            f"{workers} worker(s); Ctrl-C stops it. Try:",
            err=True,
        )
        click.echo(curl_line(local, host, port))
        sys.stdout.flush()
        server = subprocess.Popen(server_command(host=host, port=port, workers=workers), env=env)
        previous = signal.signal(signal.SIGTERM, lambda *_: server.terminate())
        try:
            return server.wait()
        except KeyboardInterrupt:  # the server got the terminal's Ctrl-C too: let it finish
            return server.wait()
        finally:
            signal.signal(signal.SIGTERM, previous)
            if server.poll() is None:
                server.terminate()
                server.wait()
