#!/usr/bin/env bash
# GPU check of data-parallel training (issue 15), for a machine with CUDA GPUs and a CUDA build
# of torch in .venv (README, "GPU"): experiment=ptb_medium (2x650 LSTM, fp32) on 1 GPU, then on
# every GPU (trainer.devices=N, NCCL), a few hundred optimizer steps each (one epoch of the
# first TOKENS training tokens), and prints the epoch's tokens/s (every rank's tokens) of each
# and their ratio. The per-rank batch stays 20 (weak scaling: N GPUs train an effective batch
# of 20N). Needs the PTB corpus: RNNLAB_DATA=/path/to/datasets (datasets/ptb inside).
#
#   scripts/gpu_ddp_check.sh            # TOKENS=300000: 428 steps on 1 GPU, 428/N on N
#   TOKENS=600000 scripts/gpu_ddp_check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
TOKENS=${TOKENS:-300000}
N=$("$PY" -c "import torch; print(torch.cuda.device_count())")
if [ "$N" -lt 1 ]; then echo "gpu_ddp_check: torch sees no CUDA GPU" >&2; exit 2; fi
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
"$PY" -c "import torch; print('torch', torch.__version__, 'CUDA', torch.version.cuda, '-', torch.cuda.device_count(), 'x', torch.cuda.get_device_name(0))"
declare -A RATE
for devices in $(printf '%s\n' 1 "$N" | sort -un); do
  start=$(date +%s)
  "$PY" -m rnnlab train experiment=ptb_medium device=cuda trainer.devices="$devices" \
    task.max_tokens="$TOKENS" trainer.max_epochs=1 trainer.progress=false \
    tracking.uri="sqlite:///$WORK/mlflow.db" tracking.experiment="gpu-ddp-$devices" \
    > "$WORK/train-$devices.log" 2>&1 || { tail -30 "$WORK/train-$devices.log"; exit 1; }
  RATE[$devices]=$("$PY" - "$WORK" "$devices" <<'PY'
import sys
from mlflow.tracking import MlflowClient
client = MlflowClient(tracking_uri=f"sqlite:///{sys.argv[1]}/mlflow.db")
exp = client.get_experiment_by_name(f"gpu-ddp-{sys.argv[2]}")
run = client.search_runs([exp.experiment_id])[0]
print(f"{run.data.metrics['tokens_per_s']:.0f}")
PY
)
  echo "ptb_medium, trainer.devices=$devices: ${RATE[$devices]} tokens/s (wall $(( $(date +%s) - start )) s incl. start-up and evaluation)"
done
if [ "$N" -gt 1 ]; then
  "$PY" -c "print(f'RATIO ddp_${N}gpu={${RATE[$N]} / ${RATE[1]}:.2f}  (ideal: $N.00)')"
fi
