#!/usr/bin/env bash
# The kill test: start a run, SIGKILL it at random moments (at least KILLS times), resume each
# time, and require the final weights to equal those of a run never interrupted.
#   scripts/kill_test.sh [KILLS]      (default 10; uses examples/tiny.toml, 800 steps per experience:
#   long enough that the run outlives the kills, ~20 s uninterrupted in a dev build)
set -euo pipefail
cd "$(dirname "$0")/.."
kills=${1:-10}
cargo build -q -p cpt-cli
cpt=target/debug/cpt
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export CPT_LOG=warn
args=(examples/tiny.toml --set 'experiences[0].steps=800' --set 'experiences[1].steps=800'
      --set 'experiences[2].steps=800' --set checkpoint.every_steps=4)

"$cpt" run "${args[@]}" --out "$work/reference" >/dev/null 2>&1

out="$work/killed"
killed=0
starts=0
RANDOM=7
while [ ! -f "$out/summary.json" ]; do
    starts=$((starts + 1))
    resume=()
    [ -f "$out/config.toml" ] && resume=(--resume)
    "$cpt" run "${args[@]}" --out "$out" "${resume[@]}" >/dev/null 2>&1 &
    pid=$!
    if [ "$killed" -lt "$kills" ]; then
        # A random moment 0.3–1.2 s into the process: loading, training, evaluating or
        # checkpointing, whatever it is doing then.
        sleep "$(awk -v r=$RANDOM 'BEGIN { printf "%.2f", 0.3 + 0.9 * r / 32767 }')"
        kill -9 "$pid" 2>/dev/null && killed=$((killed + 1))
    fi
    wait "$pid" 2>/dev/null || true
    [ "$starts" -gt $((kills * 3 + 10)) ] && { echo "kill test: no progress after $starts starts" >&2; exit 1; }
done
[ "$killed" -ge "$kills" ] || { echo "kill test: the run finished after only $killed kills" >&2; exit 1; }

last() { ls -d "$1"/checkpoints/step-* | sort | tail -1; }
if cmp -s "$(last "$work/reference")/model.safetensors" "$(last "$out")/model.safetensors" \
    && cmp -s "$work/reference/eval_matrix.csv" "$out/eval_matrix.csv"; then
    echo "kill test: $killed SIGKILLs over $starts starts; final weights and eval matrix identical to an uninterrupted run"
else
    echo "kill test: results differ after $killed SIGKILLs" >&2
    exit 1
fi
