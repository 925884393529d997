#!/usr/bin/env bash
# The wgpu backend, run for real: on a machine without a GPU through Mesa's software Vulkan
# driver (lavapipe). Trains the toy stream for 3+3+3 steps on flex and on wgpu and requires the
# two eval matrices to agree within 1e-4 relative. Builds the wgpu binary in any case; skips the
# run (saying so) only where no Vulkan driver can be installed.
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export CPT_LOG=warn
args=(examples/tiny.toml --set 'experiences[0].steps=3' --set 'experiences[1].steps=3'
      --set 'experiences[2].steps=3' --set eval.every_steps=0 --set eval.max_sequences=2)

cargo build -q -p cpt-cli
target/debug/cpt run "${args[@]}" --out "$work/flex" >/dev/null

if ! ls /usr/share/vulkan/icd.d/lvp_icd*.json >/dev/null 2>&1; then
    if command -v apt-get >/dev/null 2>&1; then
        { apt-get install -y -q mesa-vulkan-drivers libvulkan1 || sudo -n apt-get install -y -q mesa-vulkan-drivers libvulkan1; } >/dev/null 2>&1 || true
    fi
fi
cargo build -q -p cpt-cli --no-default-features --features wgpu
if ! ls /usr/share/vulkan/icd.d/*.json >/dev/null 2>&1; then
    echo "wgpu parity: skipped the run (no Vulkan driver could be installed); the wgpu build passed"
    exit 0
fi
target/debug/cpt run "${args[@]}" --backend wgpu --out "$work/wgpu" >/dev/null
# Leave the default (flex) binary in place for whatever runs next.
cargo build -q -p cpt-cli

paste -d, "$work/flex/eval_matrix.csv" "$work/wgpu/eval_matrix.csv" | awk -F, '
    NR == 1 { n = NF / 2; next }
    {
        for (i = 2; i <= n; i++) {
            a = $i; b = $(i + n); d = (a > b ? a - b : b - a) / a
            if (d > worst) worst = d
        }
    }
    END {
        printf "wgpu parity: eval matrices of flex and wgpu agree within %.2g relative\n", worst
        exit (worst > 1e-4)
    }'
