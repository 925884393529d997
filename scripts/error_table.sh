#!/usr/bin/env bash
# Tries each kind of bad input on the `cpt` binary and prints a Markdown table of what the
# user sees (docs/errors.md is this script's output).
set -uo pipefail
cd "$(dirname "$0")/.."
cargo build -q -p cpt-cli
cpt=$PWD/target/debug/cpt
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export CPT_LOG=error
cd "$work"
cp "$OLDPWD/examples/tiny.toml" run.toml
sed -i "s#examples/data#$OLDPWD/examples/data#g" run.toml
python3 - <<'PY'
import pathlib
good = pathlib.Path("run.toml").read_text()
pathlib.Path("unknown_key.toml").write_text(good.replace("batch_size = 4", "batch_size = 4\nbatch_sise = 4", 1))
pathlib.Path("bad_value.toml").write_text(good.replace("seq_len = 32", "seq_len = 1"))
pathlib.Path("bad_model.toml").write_text(good.replace("hidden_size = 32", "hidden_size = 30"))
pathlib.Path("not_toml.toml").write_text("seed = = 1")
pathlib.Path("tokenizer.json").write_text('{"model": 42')
pathlib.Path("bad_tok.toml").write_text(good.replace(good.split('tokenizer = "')[1].split('"')[0], "tokenizer.json"))
pathlib.Path("truncated.parquet").write_bytes(pathlib.Path(good.split('train = ["')[1].split('"')[0]).read_bytes()[:-100])
pathlib.Path("junk.parquet").write_bytes(b"not a parquet file at all")
pathlib.Path("empty.parquet").write_bytes(b"")
first_train = good.split('train = ["')[1].split('"')[0]
for name in ["truncated", "junk", "empty"]:
    pathlib.Path(f"{name}_data.toml").write_text(good.replace(first_train, f"{name}.parquet"))
pathlib.Path("missing_data.toml").write_text(good.replace(first_train, "nowhere/train.parquet"))
pathlib.Path("bad.jsonl").write_text('{"text": "fine"}\n{"text": oops}\n')
PY
printf '| bad input | what the user sees (exit status) |\n|---|---|\n'
row() {
    local what=$1; shift
    local out status
    out=$("$@" 2>&1 >/dev/null | grep -E '^error' | head -1); status=$?
    "$@" >/dev/null 2>&1; status=$?
    out=${out//$PWD\//}
    out=${out//$OLDPWD\//}
    printf '| %s | `` %s `` (%s) |\n' "$what" "${out//|/\\|}" "$status"
}
row "unknown config key" "$cpt" run unknown_key.toml --out o1
row "config value out of range" "$cpt" run bad_value.toml --out o2
row "inconsistent model shape" "$cpt" run bad_model.toml --out o3
row "config that is not TOML" "$cpt" run not_toml.toml --out o4
row "missing config file" "$cpt" run nowhere.toml --out o5
row "malformed tokenizer.json" "$cpt" run bad_tok.toml --out o6
row "missing data file" "$cpt" run missing_data.toml --out o7
row "truncated Parquet file" "$cpt" run truncated_data.toml --out o8
row "not a Parquet file" "$cpt" run junk_data.toml --out o9
row "empty (0-byte) Parquet file" "$cpt" run empty_data.toml --out o10
row "unknown --set key" "$cpt" run run.toml --out o11 --set train.bogus=1
row "backend not compiled in" "$cpt" run run.toml --out o12 --backend cuda
row "malformed JSONL line (data prepare)" "$cpt" data prepare --input bad.jsonl --out prepared
row "model folder without weights" "$cpt" eval --model . --data x.parquet
