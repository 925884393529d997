#!/usr/bin/env bash
# The GPU run, ready to go: build cpt for a GPU backend, check it against the CPU backend (flex),
# train on it, and time it beside PyTorch.
#
#   scripts/gpu_check.sh [--backend cuda|wgpu] [--steps N] [--peak-tflops X] [--dev]
#                        [--low-precision bf16-mixed|f16-mixed] [--compile-timeout S] [--no-torch]
#                        [--build-only]
#
# 1. build   cpt with flex (the reference) and with the backend's feature (release; --dev for a
#            debug build where a release build is too slow, as on a 2-core machine).
#            --build-only stops here: where one command may run for only so long, build in one
#            and check in the next (the build is then up to date and takes seconds).
# 2. parity  a. `cpt score` of every LLaMA fixture of tests/fixtures/hf (random tiny models with
#               transformers' reference outputs): per-token log-probabilities of the backend
#               within 1e-4 of flex's (and of transformers'), in fp32;
#            b. examples/tiny.toml trained 3+3+3 steps on both: fp32 per-step losses and eval
#               matrices within 1e-4 (relative), and the same run in the low precision
#               (bf16-mixed) with per-step losses within 0.02 of flex's in that precision — the
#               bound bf16-mixed keeps against fp32 over 50 steps on flex
#               (cpt-continual/tests/precision.rs). The measured worst differences are printed.
# 3. train   examples/quickstart.toml (its median step) and `cpt bench --shape 135m` (SmolLM2-135M's shape, seq 256,
#            batch 4, AdamW) in fp32 and the low precision: tokens/s, device memory, and
#            MFU = 6·N·tokens/s / peak FLOP/s (N: parameters; peak: --peak-tflops, else the bf16
#            dense peak of a detected H100/H200, 989 TFLOP/s; "-" when unknown).
# 4. torch   the same steps in PyTorch (scripts/bench_vs_pytorch.py at the same shapes: the
#            quickstart model is its `quick` shape), eager and torch.compile'd, bf16 through
#            torch.autocast; on the GPU with --backend cuda, on the CPU otherwise. A compile that
#            fails or outlasts --compile-timeout is reported as skipped.
#
# Ends with one table and exits non-zero if a parity check failed. Step counts default to a few
# hundred on cuda and to one or two on wgpu, where the "GPU" is usually Mesa's software Vulkan
# driver (lavapipe): there the run is a functional check of the whole path, not a speed figure.
# A device without bf16 (lavapipe) runs f16-mixed as the low precision instead, and says so.
set -euo pipefail
cd "$(dirname "$0")/.."

backend=""
steps=""
peak_tflops=""
profile=release
low=""
compile_timeout=""
torch=1
build_only=0
while [[ $# -gt 0 ]]; do
    case "$1" in
        --backend) backend="$2"; shift 2 ;;
        --steps) steps="$2"; shift 2 ;;
        --peak-tflops) peak_tflops="$2"; shift 2 ;;
        --dev) profile=dev; shift ;;
        --low-precision) low="$2"; shift 2 ;;
        --compile-timeout) compile_timeout="$2"; shift 2 ;;
        --no-torch) torch=0; shift ;;
        --build-only) build_only=1; shift ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
    esac
done
if [[ -z "$backend" ]]; then
    if nvidia-smi -L >/dev/null 2>&1; then backend=cuda; else backend=wgpu; fi
fi
case "$backend" in
    cuda)
        bench_steps="${steps:-200}"; bench_warmup=10; quick_steps=150
        torch_device=cuda; compile_timeout="${compile_timeout:-1200}" ;;
    wgpu)
        bench_steps="${steps:-1}"; bench_warmup=0; quick_steps=2
        torch_device=cpu; compile_timeout="${compile_timeout:-240}" ;;
    *) echo "--backend must be cuda or wgpu" >&2; exit 2 ;;
esac
low="${low:-bf16-mixed}"
if [[ -z "$peak_tflops" && "$backend" == cuda ]]; then
    gpu=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1 || true)
    case "$gpu" in
        *H100*PCIe*) peak_tflops=756 ;;
        *H100*|*H200*) peak_tflops=989 ;;
    esac
    echo "GPU: ${gpu:-unknown}; peak bf16 dense: ${peak_tflops:-unknown (pass --peak-tflops)} TFLOP/s"
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export CPT_LOG=warn
script_started=$SECONDS
stage_started=$SECONDS
failed=0
stage() {
    if [[ -n "${stage_name:-}" ]]; then
        echo "== $stage_name: $((SECONDS - stage_started)) s"
    fi
    stage_name="$1"
    stage_started=$SECONDS
    [[ -n "$1" ]] && echo "== $1"
    return 0
}
# Run a command with its output in $work/logs/NAME; on failure show the log's tail and stop.
logged() {
    local name="$1"; shift
    mkdir -p "$work/logs"
    if ! "$@" >"$work/logs/$name.out" 2>"$work/logs/$name.err"; then
        echo "FAILED: $*" >&2
        tail -n 20 "$work/logs/$name.err" >&2
        exit 1
    fi
}

stage "build ($profile): flex and $backend"
if [[ "$profile" == release ]]; then flag=--release; dir=release; else flag=; dir=debug; fi
cargo build $flag -q -p cpt-cli
cp "target/$dir/cpt" "$work/cpt-flex"
if [[ "$backend" == wgpu ]] && ! ls /usr/share/vulkan/icd.d/*.json >/dev/null 2>&1; then
    echo "no Vulkan driver (/usr/share/vulkan/icd.d is empty): apt-get install mesa-vulkan-drivers" >&2
    exit 1
fi
cargo build $flag -q -p cpt-cli --no-default-features --features "$backend"
cp "target/$dir/cpt" "$work/cpt-gpu"
# Leave the default (flex) binary in place for whatever runs next.
cargo build $flag -q -p cpt-cli
flex="$work/cpt-flex"
gpu="$work/cpt-gpu"
if [[ "$build_only" == 1 ]]; then
    stage ""
    echo "built: target/$dir/cpt (flex) and the $backend binary; run again without --build-only"
    exit 0
fi

# The low precision must be one the device computes in: `cpt bench` says so at once if not.
if ! "$gpu" bench --backend "$backend" --shape quick --steps 0 --warmup 0 --precision "$low" \
        >/dev/null 2>"$work/low.err"; then
    if grep -q "has no" "$work/low.err" && [[ "$low" == bf16-mixed ]]; then
        echo "note: $(grep -o 'this backend.s device has no [A-Z0-9]* arithmetic' "$work/low.err"): f16-mixed stands in for bf16-mixed"
        low=f16-mixed
    else
        cat "$work/low.err" >&2
        exit 1
    fi
fi
# PyTorch's low precision is cpt's, except on the CPU (the wgpu stand-in), where autocast's
# float16 has no fast kernels (135M: 189 s a step here, against 65 s in bfloat16) and bf16 is
# what CPU autocast is for; the table names what each side ran.
torch_dtype=bf16
[[ "$low" == f16-mixed && "$torch_device" == cuda ]] && torch_dtype=f16

stage "parity a: cpt score of the HF fixtures, $backend against flex (fp32)"
python3 - "$work/requests" <<'EOF'
"""Requests for `cpt score` from each LLaMA fixture's reference.safetensors (stdlib only)."""
import json, os, struct, sys
out = sys.argv[1]
os.makedirs(out)
root = "tests/fixtures/hf"
for name in sorted(os.listdir(root)):
    path = os.path.join(root, name, "reference.safetensors")
    if not name.startswith("llama-") or not os.path.exists(path):
        continue
    raw = open(path, "rb").read()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + n])
    def tensor(key, code):
        a, b = header[key]["data_offsets"]
        data = raw[8 + n + a:8 + n + b]
        return list(struct.unpack(f"<{len(data) // struct.calcsize(code)}{code}", data)), header[key]["shape"]
    if "score_ids" not in header or header["score_ids"]["dtype"] != "I64":
        continue
    # cpt score refuses sequences past max_position_embeddings (which dynamic RoPE's fixture
    # sets below the reference's lengths): such requests are cut to it, and lose the reference.
    limit = json.load(open(os.path.join(root, name, "config.json")))["max_position_embeddings"]
    ids, _ = tensor("score_ids", "q")
    want, _ = tensor("score_logprobs", "f")
    start = len(ids) - len(want)
    lines = []
    if len(ids) <= limit:
        lines.append({"context_ids": ids[:start], "continuation_ids": ids[start:]})
        json.dump(want, open(os.path.join(out, name + ".want"), "w"))
    rows, shape = tensor("input_ids", "q")
    lines += [{"ids": rows[i * shape[1]:(i + 1) * shape[1]][:limit]} for i in range(shape[0])]
    with open(os.path.join(out, name + ".jsonl"), "w") as f:
        f.write("".join(json.dumps(line) + "\n" for line in lines))
EOF
for requests in "$work"/requests/*.jsonl; do
    name=$(basename "$requests" .jsonl)
    logged "score-flex-$name" "$flex" score --model "tests/fixtures/hf/$name" --input "$requests"
    logged "score-gpu-$name" "$gpu" score --backend "$backend" --model "tests/fixtures/hf/$name" --input "$requests"
done
python3 - "$work" <<'EOF' || failed=1
import glob, json, os, sys
work = sys.argv[1]
worst_all = 0.0
for path in sorted(glob.glob(f"{work}/requests/*.jsonl")):
    name = os.path.basename(path)[:-6]
    read = lambda side: [json.loads(l)["logprobs"] for l in open(f"{work}/logs/score-{side}-{name}.out")]
    flex, gpu = read("flex"), read("gpu")
    assert len(flex) == len(gpu), name
    worst = max(abs(a - b) for f, g in zip(flex, gpu) for a, b in zip(f, g))
    worst_all = max(worst_all, worst)
    tokens = sum(len(f) for f in flex)
    versus_hf = "(sequences cut to max_position_embeddings: no reference)"
    if os.path.exists(f"{work}/requests/{name}.want"):
        want = json.load(open(f"{work}/requests/{name}.want"))
        versus_hf = f"|backend - transformers| <= {max(abs(a - b) for a, b in zip(gpu[0], want)):.2e}"
    print(f"  {name:20s} {tokens:3d} log-probs: |backend - flex| <= {worst:.2e}, {versus_hf}")
ok = worst_all <= 1e-4
print(f"  parity a: {'ok' if ok else 'FAILED'} (worst {worst_all:.2e}, bound 1e-4)")
sys.exit(0 if ok else 1)
EOF

stage "parity b: examples/tiny.toml 3+3+3 steps, $backend against flex (fp32 and $low)"
tiny=(examples/tiny.toml --set 'experiences[0].steps=3' --set 'experiences[1].steps=3'
      --set 'experiences[2].steps=3' --set eval.every_steps=0 --set eval.max_sequences=2)
for precision in fp32 "$low"; do
    logged "tiny-flex-$precision" "$flex" run "${tiny[@]}" --set "train.precision=\"$precision\"" --out "$work/tiny-flex-$precision"
    logged "tiny-gpu-$precision" "$gpu" run "${tiny[@]}" --set "train.precision=\"$precision\"" --backend "$backend" --out "$work/tiny-gpu-$precision"
done
python3 - "$work" "$low" <<'EOF' || failed=1
import csv, json, sys
work, low = sys.argv[1], sys.argv[2]
def losses(run):
    return [(r["loss"], r["skipped"]) for r in map(json.loads, open(f"{work}/{run}/metrics.jsonl"))]
def matrix(run):
    rows = list(csv.reader(open(f"{work}/{run}/eval_matrix.csv")))[1:]
    return [float(v) for row in rows for v in row[1:]]
ok = True
# fp32: relative 1e-4 on every step's loss and every eval-matrix entry.
a, b = losses("tiny-flex-fp32"), losses("tiny-gpu-fp32")
worst = max(abs(x - y) / abs(x) for (x, _), (y, _) in zip(a, b))
ma, mb = matrix("tiny-flex-fp32"), matrix("tiny-gpu-fp32")
worst_m = max(abs(x - y) / abs(x) for x, y in zip(ma, mb))
good = len(a) == len(b) and worst <= 1e-4 and worst_m <= 1e-4
ok &= good
print(f"  fp32: {len(a)} step losses within {worst:.2e} relative, eval matrix within {worst_m:.2e} (bound 1e-4): {'ok' if good else 'FAILED'}")
# The low precision: absolute 0.02 per step against flex in the same precision; steps skipped
# by loss scaling must be the same ones.
a, b = losses(f"tiny-flex-{low}"), losses(f"tiny-gpu-{low}")
same_skips = [s for _, s in a] == [s for _, s in b]
pairs = [(x, y) for (x, s), (y, _) in zip(a, b) if not s]
worst = max(abs(x - y) for x, y in pairs)
fp32 = [x for x, _ in losses("tiny-flex-fp32")]
versus_fp32 = max(abs(x - y) for (y, s), x in zip(b, fp32) if not s)
good = len(a) == len(b) and same_skips and worst <= 0.02
ok &= good
print(f"  {low}: {len(pairs)} step losses within {worst:.2e} of flex {low} (bound 0.02), {versus_fp32:.2e} of flex fp32; "
      f"skipped steps {'identical' if same_skips else 'DIFFER'}: {'ok' if good else 'FAILED'}")
sys.exit(0 if ok else 1)
EOF

stage "train: examples/quickstart.toml and cpt bench --shape 135m on $backend (fp32, $low)"
quick=(examples/quickstart.toml --set eval.max_sequences=16 --set checkpoint.every_steps=0
       --set train.log_every_steps=1)
for i in 0 1 2; do quick+=(--set "experiences[$i].steps=$quick_steps"); done
if [[ "$quick_steps" -lt 50 ]]; then quick+=(--set eval.every_steps=0 --set schedule.warmup_steps=1); fi
quick_parameters=$("$flex" plan examples/quickstart.toml | awk '$1 == "total" && !done { print $2; done = 1 }')
for precision in fp32 "$low"; do
    logged "quickstart-$precision" "$gpu" run "${quick[@]}" --set "train.precision=\"$precision\"" \
        --backend "$backend" --out "$work/quickstart-$precision"
    logged "bench-$precision" "$gpu" bench --backend "$backend" --shape 135m --precision "$precision" \
        --steps "$bench_steps" --warmup "$bench_warmup"
    tail -n 1 "$work/logs/bench-$precision.out"
done

if [[ "$torch" == 1 ]] && ! python3 -c "import torch, transformers" 2>/dev/null; then
    echo "note: PyTorch/transformers not installed (pip install torch transformers): no PyTorch columns"
    torch=0
fi
if [[ "$torch" == 1 ]]; then
    stage "torch: scripts/bench_vs_pytorch.py on $torch_device (eager, then torch.compile within ${compile_timeout} s)"
    for shape in quick 135m; do
        if [[ "$shape" == quick ]]; then tsteps=$((bench_steps > 20 ? bench_steps : 20)); twarm=2; else tsteps=$bench_steps; twarm=$bench_warmup; fi
        for dtype in fp32 "$torch_dtype"; do
            for compiled in eager compiled; do
                extra=(); [[ "$compiled" == compiled ]] && extra=(--compile)
                out="$work/logs/torch-$shape-$dtype-$compiled"
                started=$SECONDS
                set +e
                timeout "$compile_timeout" python3 scripts/bench_vs_pytorch.py --shape "$shape" \
                    --device "$torch_device" --dtype "$dtype" --steps "$tsteps" --warmup "$twarm" \
                    "${extra[@]}" >"$out.out" 2>"$out.err"
                rc=$?
                set -e
                if [[ $rc == 124 ]]; then
                    echo "{\"skipped\": \"did not finish within ${compile_timeout} s (--compile-timeout)\"}" >"$out.out"
                elif [[ $rc != 0 && $rc != 3 ]]; then
                    echo "{\"skipped\": \"failed with status $rc: $(tail -n 1 "$out.err" | tr -d '"\\' | cut -c1-120)\"}" >"$out.out"
                fi
                echo "  $shape $dtype $compiled ($((SECONDS - started)) s): $(tail -n 1 "$out.out")"
            done
        done
    done
fi
stage ""

echo
python3 - "$work" "$backend" "$low" "$torch_dtype" "${peak_tflops:--}" "$quick_parameters" <<'EOF'
import json, statistics, sys
work, backend, low, torch_dtype, peak, quick_parameters = sys.argv[1:]
peak = None if peak == "-" else float(peak) * 1e12

def last_json(path):
    try:
        return json.loads(open(path).read().strip().splitlines()[-1])
    except (OSError, IndexError, ValueError):
        return None

def torch_rate(shape, dtype, compiled):
    record = last_json(f"{work}/logs/torch-{shape}-{dtype}-{compiled}.out")
    if record is None:
        return "-", None
    if "skipped" in record:
        return "skipped", record
    return f"{record['tokens_per_sec']:.0f}", record

def mfu(parameters, rate):
    return "-" if peak is None else f"{600 * parameters * rate / peak:.3g}%"

def mib(value):
    return "-" if value is None else f"{value:.0f}"

rows = []
notes = []
for precision in ["fp32", low]:
    dtype = "fp32" if precision == "fp32" else torch_dtype
    # The quickstart run: the median step's throughput (evaluations, checkpoints and the first
    # steps' kernel compilation left out), device memory at its fullest step.
    steps = [json.loads(l) for l in open(f"{work}/quickstart-{precision}/metrics.jsonl")]
    rate = statistics.median(s["tokens_per_sec"] for s in steps)
    reserved = max((s["device_reserved_mib"] or 0 for s in steps), default=0) or None
    in_use = max((s["device_memory_mib"] or 0 for s in steps), default=0) or None
    runs = [("quickstart", "quick", int(quick_parameters), rate, in_use, reserved)]
    bench = last_json(f"{work}/logs/bench-{precision}.out")
    runs.append(("bench 135m", "135m", bench["parameters"], bench["tokens_per_sec"],
                 bench["device_memory_mib"], bench["device_reserved_mib"]))
    for what, shape, parameters, rate, in_use, reserved in runs:
        eager, eager_record = torch_rate(shape, dtype, "eager")
        compiled, compiled_record = torch_rate(shape, dtype, "compiled")
        for record in (eager_record, compiled_record):
            if record and "skipped" in record:
                notes.append(f"torch {shape} {dtype} compiled: {record['skipped']}")
        torch_mem = eager_record.get("device_reserved_mib") if eager_record else None
        torch_precision = {"fp32": "fp32", "bf16": "bf16-mixed", "f16": "f16-mixed"}[dtype]
        ratio = "-"
        if eager_record and "tokens_per_sec" in eager_record:
            ratio = f"{rate / eager_record['tokens_per_sec']:.2f}"
        rows.append([backend, what, precision, f"{rate:.0f}", torch_precision, eager, compiled,
                     ratio, mfu(parameters, rate), f"{mib(in_use)} / {mib(reserved)}",
                     mib(torch_mem)])

header = ["backend", "run", "precision", "cpt tok/s", "torch precision", "torch eager tok/s",
          "torch compiled tok/s", "cpt / torch eager", "cpt MFU", "cpt device MiB (in use / reserved)",
          "torch device MiB (reserved)"]
widths = [max(len(str(r[i])) for r in rows + [header]) for i in range(len(header))]
line = lambda r: "| " + " | ".join(str(v).ljust(w) for v, w in zip(r, widths)) + " |"
print(line(header))
print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
for r in rows:
    print(line(r))
for note in dict.fromkeys(notes):
    print(f"note: {note}")
EOF
echo "total: $((SECONDS - script_started)) s"
if [[ "$failed" != 0 ]]; then
    echo "gpu check: a parity check FAILED (see above)"
    exit 1
fi
echo "gpu check: parity ok"
