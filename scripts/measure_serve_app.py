"""The scoring app's own cost, without HTTP: a run's text-in pyfunc called directly against
the same calls sent through the app ``rnnlab serve`` runs (``rnnlab.tracking.scoring_app``:
MLflow's scoring server plus rnnlab's request check), driven in this process as ASGI.

Both sides decode the same sentences, 64 per call, greedy (``beam=1``), on the same torch
threads, the request's JSON built and parsed on the app side as the server does. A ratio near
1 means the app (routing, the request check, MLflow's schema parsing, the worker thread) costs
nothing worth measuring, and the gap ``scripts/bench_serve.py`` reports lies in the HTTP
server and in the client sharing the machine's cores.

    python scripts/measure_serve_app.py --run RUN_ID --uri sqlite:///PATH/mlflow.db \
        --source test_2016_flickr.de.gz [--sentences 512] [--rounds 2]
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import json
import os
import statistics
import tempfile
import time
from pathlib import Path


def asgi_post(app, loop, body: bytes) -> tuple[int, bytes]:
    """POST ``body`` to ``/invocations`` through ``app`` as uvicorn would hand it over."""
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
        "scheme": "http", "path": "/invocations", "raw_path": b"/invocations",
        "query_string": b"", "root_path": "", "headers": headers,
        "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80),
    }  # fmt: skip
    pending = [{"type": "http.request", "body": body, "more_body": False}]
    status, chunks = [0], []

    async def receive():
        if pending:
            return pending.pop()
        await asyncio.Event().wait()  # the client never disconnects

    async def send(message):
        if message["type"] == "http.response.start":
            status[0] = message["status"]
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))

    loop.run_until_complete(app(scope, receive, send))
    return status[0], b"".join(chunks)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True)
    parser.add_argument("--uri", required=True)
    parser.add_argument("--source", required=True, help="a .gz file of source sentences")
    parser.add_argument("--sentences", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()

    from rnnlab.tracking.scoring import MODEL_VAR, download_model, run_model_uri

    folder = download_model(run_model_uri(args.run, args.uri), args.uri, Path(tempfile.mkdtemp()))
    os.environ[MODEL_VAR] = str(folder)
    with gzip.open(args.source, "rt", encoding="utf-8") as f:
        lines = [line.strip() for line in f][: args.sentences]
    batches = [lines[i : i + 64] for i in range(0, len(lines), 64)]

    import mlflow.pyfunc
    import pandas as pd

    import rnnlab.tracking.scoring_app as served  # loads the model as a server worker does

    model = mlflow.pyfunc.load_model(str(folder))
    column = model.metadata.get_input_schema().input_names()[0]
    loop = asyncio.new_event_loop()

    def direct() -> None:
        for batch in batches:
            model.predict(pd.DataFrame({column: batch}), params={"beam": 1})

    def through_app() -> None:
        for batch in batches:
            split = {"columns": [column], "data": [[s] for s in batch]}
            body = json.dumps({"dataframe_split": split, "params": {"beam": 1}}).encode()
            status, answer = asgi_post(served.app, loop, body)
            if status != 200:
                raise SystemExit(f"the app answered {status}: {answer[:500]!r}")

    rates: dict[str, list[float]] = {"pyfunc": [], "app": []}
    direct(), through_app()  # warm-up
    for round_ in range(args.rounds):
        sides = [("pyfunc", direct), ("app", through_app)]
        for name, call in sides if round_ % 2 == 0 else sides[::-1]:
            start = time.perf_counter()
            call()
            rates[name].append(len(lines) / (time.perf_counter() - start))
    for name, values in rates.items():
        print(f"{name}: {statistics.median(values):.1f} sentences/s ({values})")
    ratio = statistics.median(rates["app"]) / statistics.median(rates["pyfunc"])
    print(f"RATIO serve_app_vs_pyfunc={ratio:.2f}")


if __name__ == "__main__":
    main()
