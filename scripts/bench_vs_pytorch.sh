#!/usr/bin/env bash
# cpt against PyTorch on the same machine, back to back: training tokens/s and peak RSS at the
# speed issue's three shapes (forward-only throughput with --forward, greedy KV-cache decoding
# of 64 new tokens after one prompt with --generate), with the ratio.
#
#   scripts/bench_vs_pytorch.sh [--shapes "quick middle 135m"] [--steps N] [--threads T]
#                               [--repeat R] [--forward | --generate]
#                               [--checkpointing none|balanced|layers] [--precision P]
#
# With --repeat R each engine runs R times, alternating, and the median tokens/s is reported
# (a shared 2-core machine varies by ±15% from run to run). --checkpointing and --precision set
# cpt's side only (PyTorch stays fp32 without checkpointing: the memory target's reference);
# the last column is cpt's peak RSS over PyTorch's.
#
# Needs a release build of cpt (built here if missing) and, for the PyTorch column,
# `pip install torch transformers`; without them it says so and prints cpt's numbers alone.
set -euo pipefail
cd "$(dirname "$0")/.."

shapes="quick middle 135m"
steps=""
threads="$(nproc)"
mode=train
repeat=1
checkpointing=none
precision=fp32
while [[ $# -gt 0 ]]; do
    case "$1" in
        --shapes) shapes="$2"; shift 2 ;;
        --steps) steps="$2"; shift 2 ;;
        --threads) threads="$2"; shift 2 ;;
        --repeat) repeat="$2"; shift 2 ;;
        --forward) mode=forward; shift ;;
        --generate) mode=generate; shift ;;
        --checkpointing) checkpointing="$2"; shift 2 ;;
        --precision) precision="$2"; shift 2 ;;
        *) echo "unknown argument: $1" >&2; exit 2 ;;
    esac
done

cargo build --release -q -p cpt-cli
cpt=target/release/cpt
have_torch=1
if ! python3 -c "import torch, transformers" 2>/dev/null; then
    have_torch=0
    echo "note: PyTorch/transformers not installed (pip install torch transformers): cpt only" >&2
fi

# Same thread count on both sides: rayon (cpt's flex backend) and torch.set_num_threads.
export RAYON_NUM_THREADS="$threads"
# The median of one field over JSON lines: median FIELD LINE...
median() {
    python3 -c "import json, statistics, sys
print(round(statistics.median(json.loads(l)[sys.argv[1]] for l in sys.argv[2:]), 1))" "$@"
}

echo "date: $(date -u +%Y-%m-%d), machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), threads: $threads, mode: $mode, cpt: checkpointing $checkpointing, precision $precision"
printf '| %-6s | %14s | %14s | %6s | %14s | %14s | %9s |\n' shape "cpt tokens/s" "torch tokens/s" ratio "cpt RSS MiB" "torch RSS MiB" "RSS ratio"
printf '|%s|\n' "--------|----------------|----------------|--------|----------------|----------------|-----------"
for shape in $shapes; do
    n="$steps"
    if [[ -z "$n" ]]; then
        case "$shape" in quick) n=30 ;; middle) n=10 ;; *) n=3 ;; esac
    fi
    ours=(); theirs=()
    for _ in $(seq "$repeat"); do
        ours+=("$("$cpt" bench --shape "$shape" --steps "$n" --warmup 2 --mode "$mode" \
            --checkpointing "$checkpointing" --precision "$precision" 2>/dev/null)")
        if [[ $have_torch == 1 ]]; then
            theirs+=("$(python3 scripts/bench_vs_pytorch.py --shape "$shape" --steps "$n" \
                --warmup 2 --threads "$threads" --mode "$mode" 2>/dev/null)")
        fi
    done
    ours_tps=$(median tokens_per_sec "${ours[@]}")
    ours_rss=$(median peak_rss_mib "${ours[@]}")
    if [[ $have_torch == 1 ]]; then
        theirs_tps=$(median tokens_per_sec "${theirs[@]}")
        theirs_rss=$(median peak_rss_mib "${theirs[@]}")
        ratio=$(python3 -c "print(f'{$ours_tps / $theirs_tps:.2f}')")
        rss_ratio=$(python3 -c "print(f'{$ours_rss / $theirs_rss:.2f}')")
    else
        theirs_tps="-"; theirs_rss="-"; ratio="-"; rss_ratio="-"
    fi
    printf '| %-6s | %14s | %14s | %6s | %14s | %14s | %9s |\n' "$shape" "$ours_tps" "$theirs_tps" "$ratio" "$ours_rss" "$theirs_rss" "$rss_ratio"
done
