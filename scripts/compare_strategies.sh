#!/usr/bin/env bash
# Runs the quickstart stream (Austen → Shakespeare → Rust) once per strategy and prints a
# Markdown table of final perplexity, forgetting, backward transfer, throughput and memory.
#   scripts/compare_strategies.sh [extra --set overrides...]
# Each run takes a few minutes on 2 cores; results land in runs/compare/<strategy>/.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build -q -p cpt-cli
cpt=target/debug/cpt
out=runs/compare
mkdir -p "$out"

run() {
    local name=$1; shift
    rm -rf "$out/$name"
    "$cpt" run examples/quickstart.toml --out "$out/$name" "$@" "${extra[@]}" >/dev/null 2>"$out/$name.log" \
        || { echo "run $name failed, see $out/$name.log" >&2; exit 1; }
}

extra=("$@")
run naive    --set 'strategies=["naive"]'
run replay   --set 'strategies=["replay"]'
run ewc      --set 'strategies=["ewc"]' --set ewc.lambda=1000.0 --set ewc.fisher_batches=8
run l2       --set 'strategies=["l2"]' --set l2.lambda=0.01
run distill  --set 'strategies=["distill"]' --set distill.alpha=1.0 --set distill.temperature=2.0
run ema      --set 'strategies=["ema"]' --set ema.decay=0.98
run merge    --set 'strategies=["merge"]' --set merge.scale=0.7
run weight_ensemble --set 'strategies=["weight_ensemble"]' --set weight_ensemble.every_steps=10
run lora     --set 'strategies=["lora"]' --set lora.rank=8 --set lora.alpha=16.0 \
             --set 'lora.target_modules=["q", "k", "v", "o", "gate", "up", "down"]' --set lora.mode=merge
run replay_ewc_distill --set 'strategies=["replay", "ewc", "distill"]' --set ewc.lambda=1000.0

"$cpt" compare "$out"/naive "$out"/replay "$out"/ewc "$out"/l2 "$out"/distill "$out"/ema "$out"/merge \
    "$out"/weight_ensemble "$out"/lora "$out"/replay_ewc_distill
