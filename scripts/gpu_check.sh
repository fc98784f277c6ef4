#!/usr/bin/env bash
# One-shot checks for a lent CUDA machine, sized for a 10-minute call: what precision=auto
# picks there, the gpu-marked tests, a ptb_medium slice on the GPU (tokens/s, GPU system
# metrics, the logged MLflow model reloaded on CUDA), NCCL through torchrun, a char-level LM
# with `rnnlab eval --text`, then the quick PTB and translation benches on CUDA and one
# multi30k_gpu epoch. Every step has its own timeout and the script goes on after a failure.
#
#   RNNLAB_DATA=/path/to/datasets bash scripts/gpu_check.sh      # from the repository root
set -u
PY=${PY:-python3}
WORK=$(mktemp -d)
export PYTHONUNBUFFERED=1 MLFLOW_TRACKING_URI="sqlite:///$WORK/mlflow.db"
export RNNLAB_DATA=${RNNLAB_DATA:-$PWD/datasets}
RN=("$PY" -m rnnlab.cli)
step() { echo; echo "== $1 ($(date +%T))"; }

step "device, precision=auto, threads=auto"
nvidia-smi --query-gpu=name,compute_cap,memory.total,driver_version --format=csv,noheader
"$PY" - <<'PY'
import torch
from rnnlab.train.precision import bf16_verdict
from rnnlab.train.threads import resolve_threads
print("torch", torch.__version__, "cuda", torch.version.cuda, "cudnn", torch.backends.cudnn.version())
for name in ("cuda", "cpu"):
    print(f"{name}: bf16 hardware verdict ->", bf16_verdict(torch.device(name)))
print("threads=auto ->", *resolve_threads("auto"))
PY

step "gpu-marked tests"
timeout 120 "$PY" -m pytest -q -p no:cacheprovider -m gpu tests 2>&1 | tail -n 5

step "ptb_medium, 300k tokens, one epoch on CUDA (system metrics every 2 s)"
timeout 150 "${RN[@]}" train experiment=ptb_medium device=cuda task.max_tokens=300000 \
  trainer.max_epochs=1 trainer.progress=false tracking.experiment=gpu-ptb \
  tracking.system_metrics_interval_s=2 2>&1 | tail -n 12
timeout 90 "$PY" - <<'PY'
import mlflow, mlflow.pytorch, torch
client = mlflow.MlflowClient()
run = client.search_runs([client.get_experiment_by_name("gpu-ptb").experiment_id])[0]
m, t = run.data.metrics, run.data.tags
print("status", run.info.status, "tokens_per_s", round(m.get("tokens_per_s", 0)),
      "precision", t.get("precision"), "-", t.get("precision_reason"))
print("test/ppl", m.get("test/ppl"), "gpu system metrics:", sorted(k for k in m if "gpu" in k))
models = client.search_logged_models([run.info.experiment_id])
model = mlflow.pytorch.load_model(f"models:/{models[0].model_id}", map_location="cuda")
print("reloaded", type(model).__name__, "on", next(model.parameters()).device)
PY

step "NCCL: torchrun, one rank, ptb_tiny on CUDA"
timeout 120 "$PY" -m torch.distributed.run --nproc-per-node=1 -m rnnlab.cli train \
  experiment=ptb_tiny device=cuda tracking.experiment=gpu-nccl trainer.progress=false 2>&1 | tail -n 6

step "task=lm, char level, on CUDA, then rnnlab eval --text"
mkdir -p "$WORK/text"
for s in train valid test; do head -c 200000 "$RNNLAB_DATA/ptb/ptb.$s.txt" > "$WORK/text/$s.txt"; done
timeout 120 "${RN[@]}" train task=lm task.corpus="$WORK/text" task.level=char device=cuda \
  trainer.max_epochs=2 trainer.progress=false tracking.experiment=gpu-char 2>&1 | tail -n 4
RUN=$("$PY" -c "import mlflow; c=mlflow.MlflowClient(); print(c.search_runs([c.get_experiment_by_name('gpu-char').experiment_id])[0].info.run_id)")
timeout 60 "${RN[@]}" eval "$RUN" --text "$WORK/text/test.txt" --device cuda 2>&1 | tail -n 2

step "bench_ptb --quick on CUDA"
BENCH_DEVICE=cuda timeout 110 "$PY" scripts/bench_ptb.py --quick 2>&1 | tail -n 12
step "bench_translate --quick on CUDA"
BENCH_DEVICE=cuda timeout 110 "$PY" scripts/bench_translate.py --quick 2>&1 | tail -n 10

step "multi30k_gpu, one epoch"
timeout 100 "${RN[@]}" train experiment=multi30k_gpu trainer.max_epochs=1 trainer.progress=false \
  tracking.experiment=gpu-mt 2>&1 | tail -n 8
step "done"
