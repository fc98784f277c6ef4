#!/usr/bin/env bash
# Issue 28's check, as a user runs it from the shell: 3 `rnnlab train` started together on a
# new store, then 8, each time in a fresh folder, ROUNDS times (default 10). Every process must
# exit 0, every store must hold all its runs FINISHED, and none may need a repair backup.
#   bash scripts/new_store_loop.sh [ROUNDS]      (RNNLAB=... picks the executable)
set -uo pipefail
rounds=${1:-10}
rnnlab=${RNNLAB:-rnnlab}
base=$(mktemp -d /tmp/rnnlab-new-store.XXXXXX)
failed=0
for round in $(seq 1 "$rounds"); do
    for n in 3 8; do
        dir="$base/round$round-n$n"
        mkdir -p "$dir"
        pids=()
        for s in $(seq 1 "$n"); do
            (cd "$dir" && $rnnlab train task=bitcount trainer.max_epochs=3 seed="$s" \
                >"out$s.log" 2>"err$s.log") &
            pids+=($!)
        done
        bad=0
        for p in "${pids[@]}"; do wait "$p" || bad=$((bad + 1)); done
        finished=$($rnnlab runs --uri "sqlite:///$dir/mlflow.db" --status FINISHED -c run_id \
            --format csv 2>/dev/null | tail -n +2 | grep -c . || true)
        backups=$(ls "$dir" | grep -c "mlflow.db.bak-" || true)
        echo "round $round, $n at once: $((n - bad))/$n exit 0, $finished FINISHED, $backups backups"
        if [ "$bad" -ne 0 ] || [ "$finished" -ne "$n" ] || [ "$backups" -ne 0 ]; then
            failed=$((failed + 1))
            tail -n 3 "$dir"/err*.log
        fi
    done
done
echo "new-store loop: $rounds rounds of 3 and 8, $failed failed ($base)"
[ "$failed" -eq 0 ]
