#!/usr/bin/env bash
# The CUDA checks of issue 24, one STAGE per device call (each under 9 minutes on one
# H100-class GPU: the timeouts of a stage's steps add up to at most 520 s; the stage goes on
# after a step fails or times out):
#
#   tests         pytest -m gpu (the sync-free step under set_sync_debug_mode("error"), bf16
#                 LSTM), the sync report, bench_ptb small and medium (CUDA protocol, with a
#                 cuda_graphs=on side: it decides trainer.cuda_graphs=auto)
#   ptb_medium    experiment=ptb_medium to the end (39 epochs; Zaremba medium: test ppl 82.7)
#   multi30k_gpu  bench_translate on CUDA (training ratio, decoding sentences/s), then
#                 experiment=multi30k_gpu for EPOCHS epochs (default 5) with its wall time
#   ptb_large     bench_ptb large, then experiment=ptb_large for EPOCHS epochs (default 2):
#                 seconds per epoch and the projected 55-epoch total
#   cells         the other issues' device figures, small enough to follow `tests` in one
#                 session: rnnlab bench cells at T = 256, 1024, 4096 (issue 25: the scan cells
#                 against cuDNN's LSTM, goal 10x at T = 1024), then ptb_small in fp32 and
#                 bf16 side by side (issue 31's quality table, scripts/gpu_precision_check.sh)
#
# Every figure is appended to $OUT/figures.txt (OUT: the device tool's output folder; else
# ./gpu-out), each stage's whole log to $OUT/STAGE.log, and each stage starts with the machine:
# card, driver, Python, torch, CUDA, cuDNN, and what precision=auto and cuda_graphs=auto pick.
# Wheels carried in .whl/ are installed when rnnlab's needs (hydra, mlflow) are missing, and
# the corpora are read from .gpudata/ (scripts/gpu_prepare.sh makes both; docs/gpu.md).
#
#   bash scripts/gpu_check.sh tests                      # on the GPU machine, repository root
#   GPU_CHECK_DRY=1 bash scripts/gpu_check.sh tests      # rehearsal on a CPU: tiny sizes
set -u
STAGE=${1:-}
case "$STAGE" in
  tests|ptb_medium|multi30k_gpu|ptb_large|cells) ;;
  *) echo "usage: scripts/gpu_check.sh tests|ptb_medium|multi30k_gpu|ptb_large|cells" >&2; exit 2 ;;
esac
cd "$(dirname "$0")/.."
ROOT=$PWD
OUT=${OUT:-$ROOT/gpu-out}
mkdir -p "$OUT"
FIG="$OUT/figures.txt"
LOG="$OUT/$STAGE.log"
DRY=${GPU_CHECK_DRY:-0}
PY=${PY:-python3}
[ "$DRY" = 1 ] && [ -x "$ROOT/.venv/bin/python" ] && PY=$ROOT/.venv/bin/python
WORK=$(mktemp -d)
export PYTHONUNBUFFERED=1 MLFLOW_TRACKING_URI="sqlite:///$WORK/mlflow.db" RNNLAB_CACHE="$WORK/cache"
if [ -d "$ROOT/.gpudata" ]; then export RNNLAB_DATA="$ROOT/.gpudata"; fi
export RNNLAB_DATA=${RNNLAB_DATA:-$(cd "$ROOT/.." && pwd)/shared/datasets}
exec > >(tee -a "$LOG") 2>&1

fig() { echo "$*" | tee -a "$FIG"; }  # a figure: to the log and to the figures file
step() { echo; echo "== $STAGE: $1 ($(date +%T))"; }
# the dry run shrinks every step and trains on the CPU, one thread per process (a shared
# machine), with every timeout scaled by GPU_CHECK_TIMEOUT_SCALE (default 4 there, else 1)
if [ "$DRY" = 1 ]; then
  DEVICE=cpu SCALE=${GPU_CHECK_TIMEOUT_SCALE:-4}
  export OMP_NUM_THREADS=1
else
  DEVICE=cuda SCALE=${GPU_CHECK_TIMEOUT_SCALE:-1}
fi
limit() { timeout -s TERM "$(($1 * SCALE))" "${@:2}"; }  # limit SECONDS COMMAND...
export BENCH_DEVICE=$DEVICE

install_wheels() {
  if "$PY" -c "import hydra, mlflow, sacremoses" 2>/dev/null; then return; fi
  if ! ls "$ROOT"/.whl/*.whl >/dev/null 2>&1; then
    echo "gpu_check: hydra/mlflow missing and no wheels in .whl/ (scripts/gpu_prepare.sh)" >&2
    exit 2
  fi
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site "$ROOT"/.whl/*.whl || exit 2
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
}

machine() {
  step "the machine"
  fig "### stage $STAGE, $(date -u +%FT%TZ), $( [ "$DRY" = 1 ] && echo 'DRY RUN on the CPU (tiny sizes)' || echo 'CUDA')"
  fig "rnnlab commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
  if command -v nvidia-smi >/dev/null; then
    fig "gpu: $(nvidia-smi --query-gpu=name,compute_cap,memory.total,driver_version --format=csv,noheader)"
  fi
  limit 40 "$PY" - <<'PY' | tee -a "$FIG"
import platform, torch
from rnnlab.train.graphs import resolve_cuda_graphs
from rnnlab.train.precision import bf16_verdict
print("python", platform.python_version(), "| torch", torch.__version__, "| CUDA", torch.version.cuda,
      "| cuDNN", torch.backends.cudnn.version())
device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
if device.type == "cuda":
    print("device:", torch.cuda.get_device_name(0), "capability",
          ".".join(map(str, torch.cuda.get_device_capability(0))))
print(f"bf16 hardware verdict on {device}:", bf16_verdict(device), "(auto also asks the task and the step's size: each run's precision_reason tag)")
print(f"cuda_graphs=auto on {device} (lm):", *resolve_cuda_graphs("auto", device, fixed_shape=True))
PY
}

# the training-run figures of one MLflow experiment: status, metrics, wall time
run_figures() {
  limit 30 "$PY" - "$1" <<'PY' | tee -a "$FIG"
import sys, mlflow
client = mlflow.MlflowClient()
exp = client.get_experiment_by_name(sys.argv[1])
runs = client.search_runs([exp.experiment_id]) if exp else []
for run in runs:
    m, t = run.data.metrics, run.data.tags
    wall = (run.info.end_time or run.info.start_time) - run.info.start_time
    keys = ("test/ppl", "val/ppl", "test/bleu", "test/chrf", "test/unk", "tokens_per_s",
            "test/sentences_per_s")
    shown = ", ".join(f"{k} {m[k]:.4g}" for k in keys if k in m)
    epochs = len(client.get_metric_history(run.info.run_id, "train/loss"))
    planned = int(run.data.params.get("trainer.max_epochs", epochs))
    per_epoch = wall / 1000 / max(epochs, 1)
    print(f"{sys.argv[1]}: {run.info.status}, {epochs} of {planned} epochs, wall {wall / 1000:.0f} s, "
          f"{per_epoch:.1f} s/epoch (all {planned}: ~{per_epoch * planned / 60:.0f} min); {shown}; "
          f"precision {t.get('precision')} "
          f"({t.get('precision_reason')}), cuda_graphs {t.get('cuda_graphs')}, optimizer "
          f"{t.get('optimizer_impl')}")
PY
}

train() {  # train NAME TIMEOUT OVERRIDES...: one rnnlab run, its figures
  local name=$1 secs=$2
  shift 2
  local start=$SECONDS
  limit "$secs" "$PY" -m rnnlab.cli train "$@" device="$DEVICE" \
    trainer.progress=null tracking.experiment="$name"
  fig "$name: exit $?, $((SECONDS - start)) s end to end (timeout $((secs * SCALE)) s)"
  run_figures "$name"
}

bench() {  # bench TIMEOUT SCRIPT ARGS...: its RATIO lines and summaries go to the figures
  local secs=$1
  shift
  limit "$secs" "$PY" "$@" | tee "$WORK/bench.txt"
  fig "$*: exit ${PIPESTATUS[0]}"
  grep -E "^== |throughput|RATIO|tok/s \(|tok/s  |validation ppl|decoding|auto picks|warm-up s" \
    "$WORK/bench.txt" | sed 's/^/  /' >> "$FIG"
}

install_wheels
export PYTHONPATH=$ROOT${PYTHONPATH:+:$PYTHONPATH}
machine
case "$STAGE" in
  tests)
    step "pytest -m gpu"
    limit 150 "$PY" -m pytest -q -p no:cacheprovider -m gpu $(grep -l "mark.gpu" tests/test_*.py) \
      2>&1 | tee "$WORK/pytest.txt" | tail -n 30
    fig "pytest -m gpu: $(tail -n 1 "$WORK/pytest.txt")"
    step "sync report"
    tasks=bitcount,lm,translate
    [ "$DRY" = 1 ] && tasks=bitcount
    limit 60 "$PY" scripts/sync_report.py --tasks "$tasks" 2>&1 | tee -a "$FIG"
    step "bench_ptb small and medium"
    if [ "$DRY" = 1 ]; then
      bench 300 scripts/bench_ptb.py --quick --tiny --sizes small,medium
    else
      bench 270 scripts/bench_ptb.py --sizes small,medium --graphs
    fi
    ;;
  ptb_medium)
    step "experiment=ptb_medium to the end"
    if [ "$DRY" = 1 ]; then
      train gpu-ptb-medium 240 experiment=ptb_medium cell.hidden_size=16 task.max_tokens=4000 \
        trainer.max_epochs=2
    else
      train gpu-ptb-medium 450 experiment=ptb_medium
    fi
    ;;
  multi30k_gpu)
    step "bench_translate"
    if [ "$DRY" = 1 ]; then
      bench 240 scripts/bench_translate.py --quick --experiment multi30k_tiny --decode 30 --check
      train gpu-multi30k 240 experiment=multi30k_gpu task.max_train=1000 task.max_eval=40 \
        task.spm.vocab_size=500 cell.hidden_size=16 task.embed_dim=16 trainer.max_epochs=1
    else
      bench 190 scripts/bench_translate.py
      train gpu-multi30k 260 experiment=multi30k_gpu trainer.max_epochs="${EPOCHS:-5}"
    fi
    ;;
  ptb_large)
    step "bench_ptb large, then ptb_large epochs"
    if [ "$DRY" = 1 ]; then
      bench 240 scripts/bench_ptb.py --quick --tiny --sizes large
      train gpu-ptb-large 240 experiment=ptb_large cell.hidden_size=16 task.max_tokens=4000 \
        trainer.max_epochs=1
    else
      bench 225 scripts/bench_ptb.py --sizes large --no-check
      train gpu-ptb-large 225 experiment=ptb_large trainer.max_epochs="${EPOCHS:-2}"
    fi
    ;;
  cells)
    step "rnnlab bench cells (scan cells against the fused LSTM)"
    if [ "$DRY" = 1 ]; then
      bench 60 -m rnnlab.cli bench cells --device cpu --cells minlstm --length 64 --quick
    else
      bench 150 -m rnnlab.cli bench cells --device cuda --length 256,1024,4096 --rounds 3
    fi
    step "ptb_small in fp32 and bf16 side by side (quality table of docs/precision.md)"
    if [ "$DRY" = 1 ]; then
      EXTRA="cell.hidden_size=16 task.max_tokens=4000 trainer.max_epochs=2" DEVICE=cpu \
        LIMIT=$((60 * SCALE)) PY="$PY" PART=ptb bash scripts/gpu_precision_check.sh 2>&1 | tee -a "$FIG"
    else
      LIMIT=300 PY="$PY" PART=ptb bash scripts/gpu_precision_check.sh 2>&1 | tee -a "$FIG"
    fi
    ;;
esac
step "done"
fig "### end of stage $STAGE ($SECONDS s)"
rm -rf "$WORK"
