"""Serving speed: ``rnnlab serve`` over HTTP against in-process ``rnnlab translate``.

One translation run's model, the same Multi30k test2016 source sentences, greedy decoding
(``beam=1``) and the CPU on both sides:

* **in process**: what ``rnnlab translate RUN_ID --beam 1`` runs once the model is loaded,
  ``task.translate`` on all the sentences at once (sorted batches of ``eval_batch_size``),
  on the run's logged model (the weights the server loads);
* **in process, 64 a call**: the same, called on 64 sentences at a time (what the server is
  asked), each call right after the server answered the same 64 (paired, so drift cancels):
  ``serve_batch64_vs_inprocess_64_a_call`` is the server's own cost;
* **served, batch 64**: ``rnnlab serve RUN_ID --device cpu`` (MLflow's scoring server, one
  worker), the sentences POSTed 64 per request, one request after the other;
* **served, batch 1**: one sentence per request; each request's latency is kept, for the
  one-sentence p50 and p95;
* **served, batch 64, N workers** (``--workers N``, default 2; 0 skips it): ``rnnlab serve
  --workers N`` (its default threads: the cores shared among the workers), the sentences
  POSTed 64 per request with N requests in flight, as a client that scores a file would; each
  round after the whole file in process. ``serve_batch64_workers{N}_vs_inprocess``.

The server gets a few warm-up requests first. Sentences/s are medians over ``--rounds``
(each round: the whole file in process, the paired 64-a-call pass, batch 1). Ends with ``RATIO serve_batch64_vs_inprocess=x.xx`` and
``RATIO serve_batch1_vs_inprocess=x.xx`` (served sentences/s over in-process; goal for
batch 64: >= 0.8) and the latency lines (goal for ``multi30k_cpu`` greedy: p50 < 50 ms).

The model: a finished run (``--run RUN_ID [--uri URI]``, e.g. a ``multi30k_cpu`` run), or,
without one, a run of the ``multi30k_cpu`` architecture trained here on part of the data
(``--train-pairs``, one epoch; the speed depends on the architecture and on how long the
translations are, not on the BLEU).

    python scripts/bench_serve.py [--run RUN_ID] [--uri URI] [--sentences 512] [--quick]
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def rnnlab(*args: str, cwd: Path, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "rnnlab.cli", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        sys.exit(f"rnnlab {' '.join(args)} failed:\n{done.stderr[-3000:]}")
    return done.stdout


def train_here(folder: Path, pairs: int) -> tuple[str, str]:
    """A one-epoch ``multi30k_cpu`` run on ``pairs`` training pairs; (run id, store URI)."""
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    overrides = [
        "experiment=multi30k_cpu",
        f"task.max_train={pairs}",
        "task.max_eval=100",
        "trainer.max_epochs=1",
        "device=cpu",
        f"tracking.uri={uri}",
    ]
    print(f"training: rnnlab train {' '.join(overrides[:-1])}", flush=True)
    rnnlab("train", *overrides, cwd=folder)
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("translate")
    (run,) = client.search_runs([experiment.experiment_id], max_results=1)
    return run.info.run_id, uri


def test_sentences(count: int) -> list[str]:
    from rnnlab.data.fetch import data_root

    path = data_root(None) / "multi30k" / "test_2016_flickr.de.gz"
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        lines = [line.strip() for line in handle if line.strip()]
    return (lines * (count // len(lines) + 1))[:count]


def load_translator(run_id: str, uri: str):
    """``task.translate`` (greedy, the CPU), what ``rnnlab translate`` runs, on the run's
    logged model (the weights the server loads): a function of a list of sentences."""
    import mlflow

    from rnnlab.tracking.serving import _load_pyfunc

    mlflow.set_tracking_uri(uri)
    model_uri = mlflow.get_run(run_id).data.tags["model_uri"]
    with tempfile.TemporaryDirectory(prefix="rnnlab-bench-model-") as tmp:
        local = mlflow.artifacts.download_artifacts(model_uri, dst_path=tmp)
        loaded = _load_pyfunc(local, {"device": "cpu"})
    task, module = loaded.task, loaded.module
    task.translate(module, ["ein Hund ."], beam_size=1)  # warm-up
    return lambda rows: task.translate(module, rows, beam_size=1)


def in_process(translate, sentences: list[str]) -> tuple[float, list[str]]:
    """Sentences/s of the whole file in one call (sorted batches of eval_batch_size)."""
    start = time.perf_counter()
    out = translate(sentences)
    return len(sentences) / (time.perf_counter() - start), out


def post(port: int, rows: list[str]) -> list[str]:
    body = json.dumps({"inputs": {"text": rows}, "params": {"beam": 1}}).encode()
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/invocations",
        data=body,
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=300) as answer:
        return [row["translation"] for row in json.loads(answer.read())["predictions"]]


def served(port: int, sentences: list[str], batch: int) -> tuple[float, list[float], list[str]]:
    """Sentences/s through the server at ``batch`` sentences a request, and each request's
    latency in seconds."""
    latencies, out = [], []
    start = time.perf_counter()
    for i in range(0, len(sentences), batch):
        sent = time.perf_counter()
        out += post(port, sentences[i : i + batch])
        latencies.append(time.perf_counter() - sent)
    return len(sentences) / (time.perf_counter() - start), latencies, out


def paired(port: int, translate, sentences: list[str]) -> tuple[float, float, list[str]]:
    """Sentences/s at 64 a call through the server and in process, each 64 sent to the
    server and then translated in process, so both sides see the same machine state."""
    spent, out = [0.0, 0.0], []
    for i in range(0, len(sentences), 64):
        rows = sentences[i : i + 64]
        start = time.perf_counter()
        out += post(port, rows)
        middle = time.perf_counter()
        translate(rows)
        spent[0], spent[1] = spent[0] + middle - start, spent[1] + time.perf_counter() - middle
    return len(sentences) / spent[0], len(sentences) / spent[1], out


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def in_flight(port: int, sentences: list[str], batch: int, requests: int) -> tuple[float, list]:
    """Sentences/s through the server at ``batch`` sentences a request, ``requests`` of them
    in flight at a time (a thread each); the translations in order."""
    from concurrent.futures import ThreadPoolExecutor

    chunks = [sentences[i : i + batch] for i in range(0, len(sentences), batch)]
    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=requests) as pool:
        answers = list(pool.map(lambda rows: post(port, rows), chunks))
    return len(sentences) / (time.perf_counter() - start), [t for a in answers for t in a]


def start_server(
    run_id: str, uri: str, folder: Path, workers: int = 1
) -> tuple[subprocess.Popen, int]:
    port = free_port()
    log = (folder / "serve.log").open("w")
    command = [sys.executable, "-m", "rnnlab.cli", "serve", run_id, "--port", str(port)]
    command += ["--workers", str(workers)]
    server = subprocess.Popen(
        [*command, "--uri", uri, "--device", "cpu", "--timeout", "900"],
        cwd=folder,
        stdout=log,
        stderr=log,
    )
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if server.poll() is not None:
            sys.exit(f"rnnlab serve exited:\n{(folder / 'serve.log').read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2):
                return server, port
        except OSError:
            time.sleep(0.2)
    server.terminate()
    sys.exit("rnnlab serve did not answer within 300 s")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", default=None, help="a finished translation run's id")
    parser.add_argument("--uri", default=None, help="its tracking store")
    parser.add_argument("--sentences", type=int, default=512)
    parser.add_argument("--single", type=int, default=200, help="sentences sent one by one")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--train-pairs", type=int, default=10_000)
    parser.add_argument("--workers", type=int, default=2, help="the many-worker server (0: skip)")
    parser.add_argument("--quick", action="store_true", help="fewer sentences and rounds")
    args = parser.parse_args()
    if args.quick:
        args.sentences, args.single, args.rounds = 256, 100, 2
        args.train_pairs = min(args.train_pairs, 5_000)
    with tempfile.TemporaryDirectory(prefix="rnnlab-bench-serve-") as tmp:
        folder = Path(tmp)
        run_id, uri = (args.run, args.uri) if args.run else train_here(folder, args.train_pairs)
        from rnnlab.tracking.uri import resolve_tracking_uri

        uri = resolve_tracking_uri(uri)
        measure(run_id, uri, folder, args)


def measure(run_id: str, uri: str, folder: Path, args) -> None:
    sentences = test_sentences(args.sentences)
    server, port = start_server(run_id, uri, folder)
    translate = load_translator(run_id, uri)
    try:
        for _ in range(3):  # warm-up: the first requests pay for lazy imports
            post(port, sentences[:64])
        local, local64, batch64, batch1, latencies = [], [], [], [], []
        for _ in range(args.rounds):
            speed, expected = in_process(translate, sentences)
            local.append(speed)
            speed, per64, got = paired(port, translate, sentences)
            batch64.append(speed)
            local64.append(per64)
            one, times, _ = served(port, sentences[: args.single], 1)
            batch1.append(one)
            latencies += times
        assert got == expected, "served translations differ from in-process ones"
    finally:
        server.terminate()
        server.wait(timeout=60)
    report(local, local64, batch64, batch1, latencies, args)
    if args.workers > 1:
        many_workers(run_id, uri, folder, translate, sentences, args)


def many_workers(run_id: str, uri: str, folder: Path, translate, sentences, args) -> None:
    """``rnnlab serve --workers N`` with N requests of 64 in flight, against the whole file
    in process, round after round."""
    n = args.workers
    server, port = start_server(run_id, uri, folder, workers=n)
    try:
        for _ in range(3):  # warm-up: every worker's first requests pay for lazy imports
            in_flight(port, sentences[: 64 * n], 64, n)
        local, many = [], []
        for _ in range(args.rounds):
            speed, expected = in_process(translate, sentences)
            local.append(speed)
            speed, got = in_flight(port, sentences, 64, n)
            many.append(speed)
        assert got == expected, "served translations differ from in-process ones"
    finally:
        server.terminate()
        server.wait(timeout=60)
    local_s, many_s = statistics.median(local), statistics.median(many)
    print(f"in process (the same rounds):        {local_s:8.1f} sentences/s  {local}")
    print(f"served, batch 64, {n} workers, {n} in flight: {many_s:8.1f} sentences/s  {many}")
    print(f"RATIO serve_batch64_workers{n}_vs_inprocess={many_s / local_s:.2f}")


def report(local, local64, batch64, batch1, latencies, args) -> None:
    local_s, l64, b64, b1 = (statistics.median(v) for v in (local, local64, batch64, batch1))
    print(f"sentences: {args.sentences} (one by one: {args.single}), rounds: {args.rounds}")
    print(f"in process (task.translate, greedy): {local_s:8.1f} sentences/s  {local}")
    print(f"in process, 64 a call:               {l64:8.1f} sentences/s  {local64}")
    print(f"served, batch 64:                    {b64:8.1f} sentences/s  {batch64}")
    print(f"served, batch 1:                     {b1:8.1f} sentences/s  {batch1}")
    p50, p95 = percentile(latencies, 0.5) * 1000, percentile(latencies, 0.95) * 1000
    print(f"one-sentence latency: p50 {p50:.1f} ms, p95 {p95:.1f} ms ({len(latencies)} requests)")
    print(f"LATENCY serve_one_sentence_p50_ms={p50:.1f}")
    print(f"LATENCY serve_one_sentence_p95_ms={p95:.1f}")
    print(f"RATIO serve_batch64_vs_inprocess={b64 / local_s:.2f}")
    print(f"RATIO serve_batch1_vs_inprocess={b1 / local_s:.2f}")
    # the server's own cost: the same 64-sentence calls, with and without HTTP and MLflow
    print(f"RATIO serve_batch64_vs_inprocess_64_a_call={b64 / l64:.2f}")


if __name__ == "__main__":
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    main()
