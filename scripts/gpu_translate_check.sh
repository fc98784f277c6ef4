#!/usr/bin/env bash
# multi30k_gpu on words (as it ships) against the same preset on subwords (the joint 8k BPE
# that multi30k_cpu ships), for a lent CUDA machine: the measurement that decides whether
# multi30k_gpu switches to subwords (issue 12). EPOCHS each (default 6, sized for one 10-minute
# call on an H100); compare the two summaries' test/bleu, test/chrf, test/unk and time.
#
#   RNNLAB_DATA=/path/to/datasets EPOCHS=6 bash scripts/gpu_translate_check.sh
set -u
PY=${PY:-python3}
WORK=$(mktemp -d)
export PYTHONUNBUFFERED=1 MLFLOW_TRACKING_URI="sqlite:///$WORK/mlflow.db"
export RNNLAB_DATA=${RNNLAB_DATA:-$PWD/datasets}
EPOCHS=${EPOCHS:-6}
SUBWORDS=(task.tokenizer=sentencepiece task.spm.model_type=bpe task.spm.vocab_size=8000 task.spm.joint=true)
for side in words subwords; do
  echo; echo "== multi30k_gpu, $side, $EPOCHS epochs ($(date +%T))"
  extra=()
  [ "$side" = subwords ] && extra=("${SUBWORDS[@]}")
  timeout 280 "$PY" -m rnnlab.cli train experiment=multi30k_gpu trainer.max_epochs="$EPOCHS" \
    trainer.progress=false tracking.experiment="gpu-mt-$side" "${extra[@]}" 2>&1 | tail -n 9
done
