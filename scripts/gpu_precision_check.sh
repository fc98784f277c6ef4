#!/usr/bin/env bash
# bf16 against fp32 quality where trainer.precision=auto picks bf16, for a lent CUDA machine
# (or an AMX CPU, with DEVICE=cpu and hours to spare): the measurements docs/precision.md's
# quality table waits for (issue 31, part 3). Prepared, not yet run. Each part trains its
# preset twice at once on the one device, trainer.precision=fp32 and =bf16, same seed, then
# prints the figures the table needs:
#
#   PART=ptb       ptb_small, 13 epochs: val/ppl after epoch 1 and after epoch 13, test/ppl
#   PART=multi30k  multi30k_cpu, 12 epochs: test2016 BLEU and chrF
#
#   RNNLAB_DATA=/path/to/datasets PART=ptb bash scripts/gpu_precision_check.sh
#
# EXTRA adds overrides to both runs (a rehearsal at tiny sizes: scripts/gpu_check.sh cells).
#
# auto keeps bf16 for a task only where the gap is within 2 % in perplexity or 0.5 BLEU.
# On CUDA, cuDNN's RNNs run in fp16 under bf16 autocast (recurrent-speed-facts.md): what is
# measured there is what trainer.precision=bf16 really runs.
set -u
PY=${PY:-python3}
PART=${PART:-ptb}
DEVICE=${DEVICE:-cuda}
LIMIT=${LIMIT:-560}
WORK=$(mktemp -d)
export PYTHONUNBUFFERED=1 MLFLOW_TRACKING_URI="sqlite:///$WORK/mlflow.db"
export RNNLAB_DATA=${RNNLAB_DATA:-$PWD/datasets}
case "$PART" in
  ptb) preset=ptb_small ;;
  multi30k) preset=multi30k_cpu ;;
  *) echo "PART must be ptb or multi30k, not $PART" >&2; exit 2 ;;
esac
# one store, created before the two runs race to create it
"$PY" -c "from mlflow.tracking import MlflowClient as C; C('$MLFLOW_TRACKING_URI').search_experiments()"
for precision in fp32 bf16; do
  timeout "$LIMIT" "$PY" -m rnnlab.cli train experiment="$preset" device="$DEVICE" \
    trainer.precision="$precision" trainer.progress=false tracking.experiment="quality-$PART" ${EXTRA:-} \
    > "$WORK/$precision.log" 2>&1 &
done
wait
for precision in fp32 bf16; do echo "== $precision"; tail -n 8 "$WORK/$precision.log"; done
"$PY" - "$MLFLOW_TRACKING_URI" <<'PY'
import sys
from mlflow.tracking import MlflowClient

client = MlflowClient(sys.argv[1])
for run in client.search_runs([e.experiment_id for e in client.search_experiments()]):
    tags, metrics = run.data.tags, run.data.metrics
    val = {m.step: m.value for m in client.get_metric_history(run.info.run_id, "val/ppl")}
    line = [tags.get("precision", "?"), run.info.status]
    if val:
        line += [f"val/ppl epoch 1 {val.get(1, float('nan')):.2f}",
                 f"epoch 13 {val.get(13, float('nan')):.2f}"]
    line += [f"{k} {v:.2f}" for k, v in sorted(metrics.items()) if k.startswith("test/")]
    print(" | ".join(line))
PY
