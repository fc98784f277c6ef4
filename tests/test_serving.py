"""A run's model served as text: the pyfunc flavour of each task against the CLI on the same
run (``rnnlab translate``, ``eval --text``, ``generate``), the request checks, and one real
``rnnlab serve`` process (MLflow's scoring server) on a free loopback port."""

from __future__ import annotations

import contextlib
import json
import math
import os
import shlex
import shutil
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pandas as pd
import pytest
from conftest import RNNLAB, cli_inprocess
from servers import free_port

from rnnlab.tasks.base import ServingSchema
from rnnlab.tracking.scoring import request_problem
from rnnlab.tracking.serving import rows_problem

SENTENCES = [
    "Ein Mann fährt Fahrrad.",
    "Zwei Hunde spielen im Schnee.",
    "Eine Frau in einem roten Kleid singt auf einer Bühne vor vielen Leuten.",
]


def load_pyfunc(run: dict):
    import mlflow.pyfunc

    with mlflow_uri(run["uri"]):
        return mlflow.pyfunc.load_model(run["run"].data.tags["model_uri"])


@contextlib.contextmanager
def mlflow_uri(uri: str):
    import mlflow

    before = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(before)


def translate_cli(run: dict, *args: str) -> list[str]:
    result = cli_inprocess(
        "translate",
        run["run"].info.run_id,
        "--uri",
        run["uri"],
        *args,
        stdin="\n".join(SENTENCES) + "\n",
        cwd=run["workdir"],
        env={"RNNLAB_DATA": str(run["workdir"] / "nowhere")},  # the model needs no corpus
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()


@pytest.fixture(scope="module")
def translator(multi30k_tiny_run):
    return load_pyfunc(multi30k_tiny_run)


def test_translate_pyfunc_equals_rnnlab_translate(multi30k_tiny_run, translator):
    import mlflow.pytorch

    run = multi30k_tiny_run
    rows = pd.DataFrame({"text": SENTENCES})
    beam = translator.predict(rows)  # the run's own beam (3)
    assert beam["translation"].tolist() == translate_cli(run)
    greedy = translator.predict(rows, params={"beam": 1})
    assert greedy["translation"].tolist() == translate_cli(run, "--beam", "1")
    three = translator.predict(rows, params={"beam": 3, "n_best": 3})
    assert three["translation"].tolist() == beam["translation"].tolist()
    columns = (three["n_best"], three["n_best_scores"], three["score"])
    for texts, scores, best in zip(*columns, strict=True):
        assert len(texts) == 3 and list(scores) == sorted(scores, reverse=True)
        assert scores[0] == pytest.approx(best)
    short = translator.predict(rows, params={"beam": 1, "max_len": 2})
    assert all(len(t.split()) <= 2 for t in short["translation"])
    # the same MLmodel keeps the pytorch flavour: the module itself
    with mlflow_uri(run["uri"]):
        module = mlflow.pytorch.load_model(run["run"].data.tags["model_uri"])
    assert type(module).__name__ == "Seq2Seq"
    signature = translator.metadata.signature
    assert signature.inputs.input_names() == ["text"]
    assert [p.name for p in signature.params.params] == ["beam", "max_len", "n_best"]
    example = translator.input_example  # the UI's example works as it is
    assert example["text"].tolist() and translator.predict(example)["translation"].all()


@pytest.mark.gpu
def test_the_model_loads_on_cuda_and_translates_as_on_the_cpu(multi30k_tiny_run, translator):
    import mlflow.pyfunc

    with mlflow_uri(multi30k_tiny_run["uri"]):
        model_uri = multi30k_tiny_run["run"].data.tags["model_uri"]
        on_gpu = mlflow.pyfunc.load_model(model_uri, model_config={"device": "cuda"})
    assert next(on_gpu.get_raw_model().parameters()).is_cuda
    assert next(translator.get_raw_model().parameters()).device.type == "cpu"
    rows, greedy = pd.DataFrame({"text": SENTENCES}), {"beam": 1}
    gpu, cpu = on_gpu.predict(rows, params=greedy), translator.predict(rows, params=greedy)
    assert gpu["translation"].tolist() == cpu["translation"].tolist()
    assert gpu["score"].tolist() == pytest.approx(cpu["score"].tolist(), abs=1e-3)


def test_model_config_threads_sets_the_torch_threads_it_decodes_on(multi30k_tiny_run):
    """``rnnlab serve --threads N`` reaches each worker as ``model_config={"threads": N}``."""
    import mlflow.pyfunc
    import torch

    before = torch.get_num_threads()
    try:
        with mlflow_uri(multi30k_tiny_run["uri"]):
            model_uri = multi30k_tiny_run["run"].data.tags["model_uri"]
            one = mlflow.pyfunc.load_model(model_uri, model_config={"threads": 1})
        assert torch.get_num_threads() == 1
        assert one.predict(pd.DataFrame({"text": SENTENCES[:2]}))["translation"].all()
    finally:
        torch.set_num_threads(before)


def test_a_bad_param_value_is_refused_in_one_sentence(translator):
    from mlflow.exceptions import MlflowException

    rows = pd.DataFrame({"text": SENTENCES[:1]})
    with pytest.raises(MlflowException, match=r"n_best=4 is not between 1 and the beam size 3"):
        translator.predict(rows, params={"n_best": 4})
    with pytest.raises(MlflowException, match=r"Row 0 of 'text' is empty"):
        translator.predict(pd.DataFrame({"text": ["   "]}))


def store_copy(run: dict, folder: Path) -> str:
    """A copy of the run's sqlite store (the session's run is only read; eval writes)."""
    source = run["uri"].removeprefix("sqlite:///")
    copy = folder / "mlflow.db"
    with (
        contextlib.closing(sqlite3.connect(source)) as src,
        contextlib.closing(sqlite3.connect(copy)) as dst,
    ):
        src.backup(dst)
    return f"sqlite:///{copy}"


def test_lm_pyfunc_scores_one_sentence_as_eval_text_does(ptb_tiny_run, tmp_path):
    run = ptb_tiny_run
    text = "the company said"  # 4 tokens: too few for 5 streams of 2
    sentence = tmp_path / "one.txt"
    sentence.write_text(text + "\n", encoding="utf-8")
    uri = store_copy(run, tmp_path)
    result = cli_inprocess(
        "eval", run["run"].info.run_id, "--text", str(sentence), "--uri", uri, cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    assert "too few for the run's 5 parallel streams: scored as one stream" in result.stderr
    from mlflow.tracking import MlflowClient

    logged = MlflowClient(uri).get_run(run["run"].info.run_id).data.metrics["eval/one/ppl"]
    scored = load_pyfunc(run).predict(pd.DataFrame({"text": [text, "the market fell"]}))
    assert scored["generated"].isna().all()
    assert scored["ppl"][0] == pytest.approx(logged, abs=1e-4)
    assert scored["tokens"].tolist() == [len(text.split()) + 1, 4]  # every word and <eos>
    assert scored["ppl"][1] == pytest.approx(math.exp(-scored["log_prob"][1] / 4), rel=1e-9)


def test_lm_pyfunc_generates_as_rnnlab_generate(ptb_tiny_run):
    run = ptb_tiny_run
    args = ["--words", "12", "--temperature", "0.8", "--seed", "3", "--uri", run["uri"]]
    cli = cli_inprocess(
        "generate", run["run"].info.run_id, *args, "--prime", "the stock market", cwd=run["workdir"]
    )
    assert cli.returncode == 0, cli.stderr
    params = {"generate": 12, "temperature": 0.8, "seed": 3}
    served = load_pyfunc(run).predict(pd.DataFrame({"text": ["the stock market"]}), params=params)
    assert list(served.columns) == ["log_prob", "tokens", "ppl", "generated"]
    assert served["log_prob"].isna().all()  # generating: the scores are not computed
    assert served["generated"][0] == cli.stdout.rstrip("\n")


def test_bitcount_pyfunc_counts_bit_strings(bitcount_run):
    import mlflow.pytorch
    import torch

    with mlflow_uri(bitcount_run["uri"]):
        module = mlflow.pytorch.load_model(bitcount_run["run"].data.tags["model_uri"])
    counted = load_pyfunc(bitcount_run).predict(pd.DataFrame({"bits": ["0110", "1 1 1", "10"]}))
    for bits, count in zip(["0110", "111", "10"], counted["count"], strict=True):
        x = torch.tensor([[float(c)] for c in bits]).unsqueeze(1)  # (T, 1, 1)
        assert count == pytest.approx(module(x).item(), rel=1e-6)


SCHEMA = ServingSchema(
    column="text",
    outputs={"translation": "string"},
    params={"beam": 5},
    example=["Ein Mann."],
    max_chars=10,
)


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ({"inputs": {"text": ["a"]}}, None),
        ({"inputs": {"text": ["a"]}, "params": {"beam": 2}}, None),
        ({"inputs": {"text": [""]}}, "Row 0 of 'text' is empty"),
        ({"inputs": {"text": ["a", 3]}}, "Row 1 of 'text' is an int, not a string"),
        ({"dataframe_records": [{"text": None}]}, "Row 0 of 'text' is missing"),
        ({"dataframe_split": {"columns": ["text"], "data": [["a"], [2.5]]}}, "is a float"),
        ({"instances": ["a", "b" * 11]}, "Row 1 of 'text' is 11 characters long, over"),
        ({"inputs": {"txt": ["a"]}}, "The input has no column 'text'"),
        ({"inputs": {"text": ["a"]}, "params": {"beem": 2}}, "Unknown param beem: this model"),
    ],
)
def test_each_bad_request_is_named_in_one_sentence(body, problem):
    found = request_problem(json.dumps(body).encode(), SCHEMA)
    if problem is None:
        assert found is None
    else:
        assert problem in found and found.count(". ") == 0


def test_a_python_caller_gets_the_same_checks():
    assert rows_problem(["ok", None], SCHEMA) == "Row 1 of 'text' is missing, not a string"
    assert rows_problem([], SCHEMA).startswith("The input has no rows")


# -- a real server -------------------------------------------------------------------------
def post(port: int, body: dict, *, timeout: float = 60) -> tuple[int, dict]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/invocations",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def wait_until_up(process: subprocess.Popen, port: int, errors: Path, timeout: float = 180):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"rnnlab serve exited {process.returncode}: {errors.read_text()}")
        with (
            contextlib.suppress(OSError),
            urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2),
        ):
            return
        time.sleep(0.2)
    pytest.fail(f"rnnlab serve did not answer in {timeout} s: {errors.read_text()}")


@pytest.fixture(scope="module")
def server(multi30k_tiny_run, tmp_path_factory):
    """``rnnlab serve`` on the multi30k_tiny run, as a user starts it; stopped with SIGTERM."""
    run, port = multi30k_tiny_run, free_port()
    errors = tmp_path_factory.mktemp("serve") / "stderr.txt"
    command = [*RNNLAB, "serve", run["run"].info.run_id, "--port", str(port), "--uri", run["uri"]]
    with errors.open("w") as err:
        process = subprocess.Popen(
            command, cwd=run["workdir"], stdout=subprocess.PIPE, stderr=err, text=True
        )
    try:
        curl = process.stdout.readline().strip()
        wait_until_up(process, port, errors)
        yield {"port": port, "curl": curl, "process": process, "errors": errors}
    finally:
        process.terminate()
        process.wait(timeout=60)


def test_the_server_translates_as_the_cli_and_its_curl_line_works(server, multi30k_tiny_run):
    port = server["port"]
    status, answer = post(port, {"inputs": {"text": SENTENCES}, "params": {"beam": 1}})
    assert status == 200
    served = [row["translation"] for row in answer["predictions"]]
    assert served == translate_cli(multi30k_tiny_run, "--beam", "1")
    curl = shlex.split(server["curl"])
    assert curl[:3] == ["curl", "-s", f"http://127.0.0.1:{port}/invocations"]
    if shutil.which("curl"):
        done = subprocess.run(curl, capture_output=True, text=True, timeout=60, check=True)
        assert json.loads(done.stdout)["predictions"][0]["translation"]
    else:  # no curl here: send the line's own body
        assert post(port, json.loads(curl[-1]))[0] == 200


BAD = [
    ({"inputs": {"text": [""]}}, "Row 0 of 'text' is empty: send some text."),
    ({"inputs": {"text": [3]}}, "Row 0 of 'text' is an int, not a string."),
    ({"inputs": {"sentence": ["Ein Mann."]}}, "The input has no column 'text'"),
    ({"inputs": {"text": ["a" * 1001]}}, "is 1,001 characters long, over this model's limit"),
    ({"inputs": {"text": ["Ein Mann."]}, "params": {"beem": 2}}, "Unknown param beem"),
]


@pytest.mark.parametrize(("body", "sentence"), BAD, ids=[s.split()[0] for _, s in BAD])
def test_a_bad_request_is_a_400_and_the_next_one_is_served(server, body, sentence):
    status, answer = post(server["port"], body)
    assert status == 400
    assert answer["error_code"] == "INVALID_PARAMETER_VALUE"
    assert sentence in answer["message"] and "Traceback" not in answer["message"]
    status, answer = post(server["port"], {"inputs": {"text": SENTENCES[:1]}})
    assert status == 200 and answer["predictions"][0]["translation"]
    assert server["process"].poll() is None


def test_serve_refuses_a_run_without_a_model_and_a_port_in_use(multi30k_tiny_run, tmp_path):
    import socket

    run = multi30k_tiny_run
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        busy = cli_inprocess(
            "serve", run["run"].info.run_id, "--port", str(port), "--uri", run["uri"], cwd=tmp_path
        )
    assert busy.returncode == 2
    assert f"Cannot listen on 127.0.0.1:{port}" in busy.stderr and "--port" in busy.stderr
    missing = cli_inprocess("serve", "0" * 32, "--uri", run["uri"], cwd=tmp_path)
    assert missing.returncode == 2 and "there is no run with that id" in missing.stderr


@pytest.mark.slow  # make test-all: a second server start; the one-worker server is in make test
def test_two_workers_answer_requests_in_flight_as_the_cli(multi30k_tiny_run, tmp_path):
    """``rnnlab serve --workers 2`` with four requests in flight at once (how
    scripts/bench_serve.py scores a file for throughput): every answer is the CLI's."""
    from concurrent.futures import ThreadPoolExecutor

    run, port = multi30k_tiny_run, free_port()
    errors = tmp_path / "stderr.txt"
    command = [*RNNLAB, "serve", run["run"].info.run_id, "--port", str(port), "--uri", run["uri"]]
    with errors.open("w") as err:
        process = subprocess.Popen(
            [*command, "--workers", "2"], cwd=run["workdir"], stdout=subprocess.DEVNULL, stderr=err
        )
    try:
        wait_until_up(process, port, errors)
        body = {"inputs": {"text": SENTENCES}, "params": {"beam": 1}}
        with ThreadPoolExecutor(max_workers=4) as pool:
            answers = list(pool.map(lambda _: post(port, body), range(8)))
    finally:
        process.terminate()
        process.wait(timeout=60)
    expected = translate_cli(run, "--beam", "1")
    for status, answer in answers:
        assert status == 200, answer
        assert [row["translation"] for row in answer["predictions"]] == expected


@pytest.mark.slow
def test_mlflow_models_serve_and_predict_take_the_same_model(multi30k_tiny_run, tmp_path):
    """MLflow's own commands on the model, with no rnnlab code in the way: ``mlflow models
    predict`` and ``mlflow models serve --env-manager local``."""
    import mlflow

    run = multi30k_tiny_run
    with mlflow_uri(run["uri"]):
        local = mlflow.artifacts.download_artifacts(
            run["run"].data.tags["model_uri"], dst_path=str(tmp_path)
        )
    request = tmp_path / "request.json"
    request.write_text(json.dumps({"inputs": {"text": SENTENCES}, "params": {"beam": 1}}))
    mlflow_cli = [sys.executable, "-m", "mlflow", "models"]
    predicted = subprocess.run(
        [*mlflow_cli, "predict", "-m", local, "-i", str(request), "-t", "json"]
        + ["--env-manager", "local"],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    expected = translate_cli(run, "--beam", "1")
    assert [row["translation"] for row in json.loads(predicted.stdout)["predictions"]] == expected
    port = free_port()
    errors = tmp_path / "serve.err"
    # MLflow starts `uvicorn` by name: the venv's bin/ on PATH, as an activated venv has it
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    with errors.open("w") as err:
        process = subprocess.Popen(
            [*mlflow_cli, "serve", "-m", local, "-p", str(port), "--env-manager", "local"],
            stdout=err,
            stderr=err,
            env={**os.environ, "PATH": path},
        )
    try:
        wait_until_up(process, port, errors)
        status, answer = post(port, json.loads(request.read_text()))
        assert status == 200
        assert [row["translation"] for row in answer["predictions"]] == expected
    finally:
        process.terminate()
        process.wait(timeout=60)
