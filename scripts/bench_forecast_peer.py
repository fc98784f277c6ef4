"""rnnlab's task=forecast against NeuralForecast's LSTM: same table, model size, steps, loss.

NeuralForecast is NOT an rnnlab dependency: it runs in a venv of its own, and this script
drives both sides as subprocesses, each timing its own training:

    python3 -m venv /tmp/nf && /tmp/nf/bin/pip install torch==2.13.0 neuralforecast
    python scripts/bench_forecast_peer.py --peer-python /tmp/nf/bin/python [--quick]

The table: one hourly series (``tests/numeric_data.seasonal``: trend, daily and weekly
cycles, noise 0.3), split 60/20/20. Both sides: lookback 96, horizon 24, a one-layer LSTM of
64 reading the lookback, a linear map to the 24 steps (NeuralForecast's ``recurrent=False``
LSTM with one decoder layer), MSE loss, Adam at 1e-3, batches of 128 windows, the same
number of optimizer steps, per-window normalisation (rnnlab ``task.revin=true``,
NeuralForecast ``scaler_type='standard'``), one thread each. Quality: MSE of every test
window (stride 1) in the series' units. Each round runs both sides once, in alternating order;
the last line, ``RATIO forecast_vs_neuralforecast=x.xx``, is the median over rounds of
rnnlab's training windows/s over NeuralForecast's (this machine's speed drifts by ±14 % over
minutes, so one round decides little).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LOOKBACK, HORIZON, BATCH = 96, 24, 128

PEER = r"""
import json, sys, time, numpy as np, pandas as pd, torch
torch.set_num_threads(1)
from neuralforecast import NeuralForecast
from neuralforecast.models import LSTM
from neuralforecast.losses.pytorch import MSE
path, steps, n_train, n_val, n_test = sys.argv[1], int(sys.argv[2]), *map(int, sys.argv[3:6])
frame = pd.read_csv(path, parse_dates=["ds"])
frame["unique_id"] = "s"
model = LSTM(h=24, input_size=96, encoder_n_layers=1, encoder_hidden_size=64, decoder_layers=1,
             decoder_hidden_size=64, recurrent=False, loss=MSE(), max_steps=steps, learning_rate=1e-3,
             batch_size=1, windows_batch_size=128, scaler_type="standard", random_seed=0,
             accelerator="cpu", enable_progress_bar=False, logger=False, enable_checkpointing=False)
nf = NeuralForecast(models=[model], freq="h")
train = frame.iloc[:n_train]
start = time.perf_counter()
nf.fit(train)
seconds = time.perf_counter() - start
end = n_train + n_val + n_test
cv = nf.cross_validation(frame.iloc[:end], n_windows=n_test - 24 + 1, step_size=1, refit=False)
mse = float(((cv["LSTM"] - cv["y"]) ** 2).mean())
print(json.dumps({"windows_per_s": steps * 128 / seconds, "test_mse_units": mse, "seconds": seconds}))
"""

RNNLAB = r"""
import json, sys, time, torch
sys.path.insert(0, sys.argv[7] + "/tests")
torch.set_num_threads(1)
from conftest import compose
from rnnlab.compose import compose as build
path, steps, n_train, n_val, n_test = sys.argv[1], int(sys.argv[2]), *map(int, sys.argv[3:6])
overrides = ["task=forecast", f"task.data={path}", "task.time=ds", "task.target=[y]",
             f"task.split=[{n_train},{n_val},{n_test}]", "task.lookback=96", "task.horizon=24",
             "task.model=direct", "task.revin=true", "cell=lstm", "cell.hidden_size=64",
             "task.batch_size=128", "optim.lr=0.001", "trainer.clip_grad_norm=null"]
spec = build(compose(overrides))
task = spec.task
task.prepare()
torch.manual_seed(0)
model = task.build_model(stack=spec.stack)
opt = spec.optimizer(model.parameters())
done, epoch, start = 0, 0, time.perf_counter()
while done < steps:
    epoch += 1
    model.train()
    for batch in task.train_batches(epoch=epoch):
        loss, _, _ = task.train_loss(model, batch, None)
        opt.zero_grad(); loss.backward(); opt.step()
        done += 1
        if done == steps:
            break
seconds = time.perf_counter() - start
m = task.evaluate(model, "test").metrics
print(json.dumps({"windows_per_s": steps * 128 / seconds, "test_mse_units": m["test/rmse_units"] ** 2,
                  "seconds": seconds}))
"""


def write_table(folder: Path, rows: int) -> Path:
    sys.path.insert(0, str(ROOT / "tests"))
    import pandas as pd
    from numeric_data import seasonal

    frame = pd.DataFrame({"ds": pd.date_range("2020-01-01", periods=rows, freq="h")})
    frame["y"] = seasonal(rows, seed=0, noise=0.3)
    path = folder / "series.csv"
    frame.to_csv(path, index=False)
    return path


def side(python: str, code: str, args: list[str]) -> dict:
    done = subprocess.run([python, "-c", code, *args], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{python} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--peer-python", required=True, help="python of the venv with neuralforecast"
    )
    parser.add_argument("--quick", action="store_true", help="2,000 rows, 50 steps")
    parser.add_argument("--rows", type=int, default=8000)
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=3, help="rounds (--quick: 1)")
    args = parser.parse_args()
    rows, steps = (2000, 50) if args.quick else (args.rows, args.steps)
    rounds = 1 if args.quick else args.rounds
    n_train, n_val = int(rows * 0.6), int(rows * 0.2)
    n_test = rows - n_train - n_val
    with tempfile.TemporaryDirectory(prefix="bench-peer-") as tmp:
        path = write_table(Path(tmp), rows)
        common = [str(path), str(steps), str(n_train), str(n_val), str(n_test), "", str(ROOT)]
        started, ratios = time.perf_counter(), []
        for r in range(rounds):
            order = [
                ("ours", sys.executable, RNNLAB, common),
                ("peer", args.peer_python, PEER, common[:5]),
            ]
            found = {
                name: side(py, code, a) for name, py, code, a in order[:: 1 if r % 2 == 0 else -1]
            }
            ours, peer = found["ours"], found["peer"]
            ratios.append(ours["windows_per_s"] / peer["windows_per_s"])
            print(
                f"round {r + 1}: rnnlab {ours['windows_per_s']:.0f} windows/s, test MSE "
                f"{ours['test_mse_units']:.4f}; neuralforecast {peer['windows_per_s']:.0f} "
                f"windows/s, test MSE {peer['test_mse_units']:.4f}; ratio {ratios[-1]:.2f}",
                flush=True,
            )
    print(f"({time.perf_counter() - started:.0f} s in all)")
    print(f"RATIO forecast_vs_neuralforecast={statistics.median(ratios):.2f}")


if __name__ == "__main__":
    main()
