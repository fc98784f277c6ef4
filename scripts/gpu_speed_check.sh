#!/usr/bin/env bash
# GPU speed check for a lent CUDA machine (prepared, not run on the CPU-only dev machine).
# Prints auto precision's hardware verdict on this GPU (bench_ptb prints what auto picks
# for its model), then the quick PTB and translation benchmarks on CUDA, each ending with
# its RATIO lines. About 5 minutes.
#
#   bash scripts/gpu_speed_check.sh            # from the repository root, after make install
set -euo pipefail
PY=${PY:-.venv/bin/python}
export RNNLAB_DATA=${RNNLAB_DATA:-$(cd .. && pwd)/shared/datasets}

echo "== device and precision=auto"
nvidia-smi --query-gpu=name,compute_cap,memory.total --format=csv,noheader || true
$PY - <<'PY'
import torch
from rnnlab.train.precision import bf16_verdict
from rnnlab.train.threads import resolve_threads
print("torch", torch.__version__, "cuda", torch.version.cuda, "cudnn", torch.backends.cudnn.version())
for name in ("cuda", "cpu"):
    if name == "cuda" and not torch.cuda.is_available():
        print("cuda: not available"); continue
    print(f"{name}: bf16 hardware verdict ->", bf16_verdict(torch.device(name)))
print("threads=auto ->", *resolve_threads("auto"))
PY

echo "== bf16 LSTM on CUDA (tests/test_precision.py, gpu marker)"
timeout 120 $PY -m pytest -q -p no:cacheprovider -m gpu tests/test_precision.py || true

echo "== bench_ptb --quick on CUDA (BENCH_DEVICE=cuda)"
BENCH_DEVICE=cuda timeout 240 $PY scripts/bench_ptb.py --quick --bf16 || true

echo "== bench_translate --quick on CUDA (BENCH_DEVICE=cuda)"
BENCH_DEVICE=cuda timeout 240 $PY scripts/bench_translate.py --quick || true
