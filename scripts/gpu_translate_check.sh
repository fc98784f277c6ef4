#!/usr/bin/env bash
# multi30k_gpu on subwords (the joint 8k BPE it ships since stop 20) against the same preset
# on Moses words, for a lent CUDA machine: the CPU measurement that switched the preset (5
# epochs, docs/benchmarks.md) repeated on a GPU, with its wall times. EPOCHS each (default 6,
# sized for one 10-minute call on an H100); compare the two summaries' test/bleu, test/chrf,
# test/unk and time.
#
#   RNNLAB_DATA=/path/to/datasets EPOCHS=6 bash scripts/gpu_translate_check.sh
set -u
PY=${PY:-python3}
WORK=$(mktemp -d)
export PYTHONUNBUFFERED=1 MLFLOW_TRACKING_URI="sqlite:///$WORK/mlflow.db"
export RNNLAB_DATA=${RNNLAB_DATA:-$PWD/datasets}
EPOCHS=${EPOCHS:-6}
for side in subwords words; do
  echo; echo "== multi30k_gpu, $side, $EPOCHS epochs ($(date +%T))"
  extra=()
  [ "$side" = words ] && extra=(task.tokenizer=moses)
  timeout 280 "$PY" -m rnnlab.cli train experiment=multi30k_gpu trainer.max_epochs="$EPOCHS" \
    trainer.progress=false tracking.experiment="gpu-mt-$side" "${extra[@]}" 2>&1 | tail -n 9
done
