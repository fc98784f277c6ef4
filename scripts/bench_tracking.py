"""What MLflow's system metrics and model logging cost a run: wall time of whole runs.

Each round trains the same run four ways, interleaved (so load drifts hit every variant
alike): everything on (rnnlab's defaults), ``tracking.system_metrics=false``,
``tracking.log_model=false``, and both off. Runs are in-process (``run_job`` on a composed
config, as ``rnnlab train`` runs them) into one sqlite store created before timing. Prints
the median wall time of each variant and the ratios against both-off.

    .venv/bin/python scripts/bench_tracking.py                 # bitcount, 5 runs each
    .venv/bin/python scripts/bench_tracking.py --ptb-small     # + one ptb_small epoch each
    .venv/bin/python scripts/bench_tracking.py --quick         # 2 runs each, 20 epochs
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

VARIANTS = {
    "all on": [],
    "no system metrics": ["tracking.system_metrics=false"],
    "no model": ["tracking.log_model=false"],
    "both off": ["tracking.system_metrics=false", "tracking.log_model=false"],
}


def compose(overrides: list[str]):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from rnnlab.paths import config_dir

    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        return hydra_compose(config_name="train", overrides=overrides)


def one_run(overrides: list[str], uri: str) -> float:
    from rnnlab.session.run import run_job

    cfg = compose([*overrides, f"tracking.uri={uri}", "device=cpu"])
    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        run_job(cfg)
    return time.perf_counter() - start


def bench(name: str, base: list[str], *, runs: int, uri: str, warm_up: bool) -> dict[str, float]:
    times: dict[str, list[float]] = {v: [] for v in VARIANTS}
    if warm_up:  # imports and the first store writes, paid once per process
        one_run([*base, *VARIANTS["all on"]], uri)
    for _ in range(runs):
        for variant, extra in VARIANTS.items():
            times[variant].append(one_run([*base, *extra], uri))
    medians = {v: statistics.median(t) for v, t in times.items()}
    for variant, values in times.items():
        spread = ", ".join(f"{t:.2f}" for t in values)
        print(f"{name:10s} {variant:18s} median {medians[variant]:7.2f} s  ({spread})")
    return medians


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 runs each, 20 bitcount epochs")
    parser.add_argument("--ptb-small", action="store_true", help="also one ptb_small epoch")
    args = parser.parse_args()
    runs = 2 if args.quick else 5
    bitcount = ["task=bitcount"] + (["trainer.max_epochs=20"] if args.quick else [])
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    with tempfile.TemporaryDirectory(prefix="rnnlab-bench-") as tmp:
        os.chdir(tmp)
        uri = f"sqlite:///{Path(tmp) / 'mlflow.db'}"
        from rnnlab.tracking.store import connect

        connect(uri)  # the schema exists before timing
        results = {"bitcount": bench("bitcount", bitcount, runs=runs, uri=uri, warm_up=True)}
        if args.ptb_small:
            ptb = ["experiment=ptb_small", "trainer.max_epochs=1"]
            results["ptb_small"] = bench("ptb_small", ptb, runs=1, uri=uri, warm_up=False)
    for name, medians in results.items():
        base = medians["both off"]
        print(f"RATIO {name}_system_metrics={medians['no model'] / base:.3f}")
        print(f"RATIO {name}_log_model={medians['no system metrics'] / base:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
