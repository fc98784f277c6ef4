"""A run's model as a Spark UDF (``mlflow.pyfunc.spark_udf``) in local mode: 1,000 lines scored
by a ptb_tiny run's language model and sentences translated by a multi30k_tiny run, each
against the same model's ``predict`` in this process. Needs pyspark (``make install-spark``)
and Java 17+ (``apt-get install default-jre-headless``); skips, saying which is missing."""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from test_serving import SENTENCES, load_pyfunc, mlflow_uri

# about a minute on the idle 2-core machine (docs/benchmarks.md, "Serving"): make test-all only
pytestmark = [pytest.mark.spark, pytest.mark.slow]


def java_problem() -> str | None:
    java = shutil.which("java")
    if java is None:
        return "no java on PATH (apt-get install default-jre-headless)"
    done = subprocess.run([java, "-version"], capture_output=True, text=True, check=False)
    first = (done.stderr or done.stdout).splitlines()[0] if done.returncode == 0 else ""
    return None if first else f"java -version failed: {done.stderr.strip()}"


@pytest.fixture(scope="module")
def spark():
    pytest.importorskip("pyspark", reason="pyspark is not installed (make install-spark)")
    if problem := java_problem():
        pytest.skip(problem)
    from pyspark.sql import SparkSession

    os.environ["PYSPARK_PYTHON"] = sys.executable  # the executors run this venv's Python
    session = (
        SparkSession.builder.master("local[2]")
        .appName("rnnlab-test")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.shuffle.partitions", "2")
        .getOrCreate()
    )
    yield session
    session.stop()


def lines_from(vocabulary: list[str], count: int, seed: int = 0) -> list[str]:
    """``count`` lines of 1 to 20 words of the run's vocabulary, drawn from ``seed``."""
    rng = random.Random(seed)
    return [" ".join(rng.choices(vocabulary, k=rng.randint(1, 20))) for _ in range(count)]


def test_a_spark_udf_scores_1000_lines_as_the_model_does_in_process(spark, ptb_tiny_run, tmp_path):
    import mlflow.pyfunc

    run = ptb_tiny_run
    model_uri = run["run"].data.tags["model_uri"]
    vocab = run["client"].download_artifacts(
        run["run"].info.run_id, "samples/vocab.txt", str(tmp_path)
    )
    words = [w for w in Path(vocab).read_text(encoding="utf-8").split() if w != "<eos>"]
    lines = pd.DataFrame({"id": range(1000), "text": lines_from(words, 1000)})
    with mlflow_uri(run["uri"]):
        udf = mlflow.pyfunc.spark_udf(spark, model_uri, env_manager="local")
    frame = spark.createDataFrame(lines).repartition(2)
    scored = frame.withColumn("out", udf("text")).select("id", "out.*").toPandas()
    scored = scored.sort_values("id").reset_index(drop=True)
    expected = load_pyfunc(run).predict(lines[["text"]])
    assert len(scored) == 1000
    assert scored["tokens"].tolist() == expected["tokens"].tolist()
    # other batches (Spark's partitions), so float sums may differ in the last bits
    assert scored["log_prob"].tolist() == pytest.approx(expected["log_prob"].tolist(), rel=1e-5)
    assert scored["ppl"].tolist() == pytest.approx(expected["ppl"].tolist(), rel=1e-5)
    assert scored["generated"].isna().all()


def test_a_spark_udf_translates_a_column(spark, multi30k_tiny_run):
    import mlflow.pyfunc

    run = multi30k_tiny_run
    sentences = pd.DataFrame({"id": range(60), "text": SENTENCES * 20})
    with mlflow_uri(run["uri"]):
        udf = mlflow.pyfunc.spark_udf(
            spark,
            run["run"].data.tags["model_uri"],
            env_manager="local",
            result_type="string",
            params={"beam": 1},
        )
    frame = spark.createDataFrame(sentences)
    out = frame.withColumn("translation", udf("text")).toPandas().sort_values("id")
    expected = load_pyfunc(run).predict(sentences[["text"]], params={"beam": 1})
    assert out["translation"].tolist() == expected["translation"].tolist()
