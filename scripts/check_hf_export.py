#!/usr/bin/env python3
"""Check that a cpt Hugging Face export loads in transformers and reproduces reference logits.

Usage:
    python3 scripts/check_hf_export.py EXPORT_DIR REFERENCE.safetensors [--atol 1e-4]

EXPORT_DIR must load with transformers.AutoModelForCausalLM.from_pretrained (float32, eager
attention) with no missing, unexpected or mismatched keys and no load errors, and with
AutoTokenizer.from_pretrained. REFERENCE.safetensors must hold
    input_ids  [B, T]     int64 or float32 (integral values)
    logits     [B, T, V]  float32
The script runs the loaded model on input_ids, prints the max abs difference to logits, and
exits 0 ("ok") when it is <= atol (default 1e-4), 1 otherwise.

Requires: pip install torch transformers safetensors
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def fail(msg: str) -> "NoReturn":  # noqa: F821
    print(f"FAIL: {msg}", file=sys.stderr)
    sys.exit(1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("export_dir", type=Path)
    ap.add_argument("reference", type=Path)
    ap.add_argument("--atol", type=float, default=1e-4)
    args = ap.parse_args()

    import torch

    torch.use_deterministic_algorithms(True)
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if not args.export_dir.is_dir():
        fail(f"{args.export_dir} is not a directory")
    if not args.reference.is_file():
        fail(f"{args.reference} does not exist")

    try:
        model, info = AutoModelForCausalLM.from_pretrained(
            args.export_dir,
            output_loading_info=True,
            dtype=torch.float32,
            attn_implementation="eager",
            local_files_only=True,
        )
    except Exception as e:  # noqa: BLE001
        fail(f"AutoModelForCausalLM.from_pretrained({args.export_dir}) raised {type(e).__name__}: {e}")
    problems = {k: info.get(k) for k in ("missing_keys", "unexpected_keys", "mismatched_keys", "error_msgs")}
    problems = {k: v for k, v in problems.items() if v}
    if problems:
        for k, v in problems.items():
            print(f"{k}: {sorted(map(str, v))}", file=sys.stderr)
        fail("checkpoint does not load cleanly: " + ", ".join(problems))
    model.eval()
    print(f"model: {type(model).__name__}, {sum(p.numel() for p in model.parameters())} parameters, "
          f"dtype {model.dtype}")

    try:
        tok = AutoTokenizer.from_pretrained(args.export_dir, local_files_only=True)
    except Exception as e:  # noqa: BLE001
        fail(f"AutoTokenizer.from_pretrained({args.export_dir}) raised {type(e).__name__}: {e}")
    print(f"tokenizer: {type(tok).__name__}, {len(tok)} tokens")
    if len(tok) > model.config.vocab_size:
        fail(f"tokenizer has {len(tok)} tokens but the model's vocab_size is {model.config.vocab_size}")

    ref = load_file(str(args.reference))
    for name in ("input_ids", "logits"):
        if name not in ref:
            fail(f"{args.reference} has no tensor '{name}' (has: {sorted(ref)})")
    ids = ref["input_ids"]
    if ids.is_floating_point():
        if not torch.equal(ids, ids.round()):
            fail("input_ids is a float tensor with non-integral values")
        ids = ids.round()
    ids = ids.to(torch.int64)
    if ids.dim() == 1:
        ids = ids.unsqueeze(0)
    if ids.dim() != 2:
        fail(f"input_ids must be [B, T], got {list(ids.shape)}")
    if ids.min().item() < 0 or ids.max().item() >= model.config.vocab_size:
        fail(f"input_ids out of range [0, {model.config.vocab_size})")

    want = ref["logits"].to(torch.float32)
    with torch.no_grad():
        got = model(ids).logits.to(torch.float32)
    if want.shape != got.shape:
        fail(f"logits shape {list(want.shape)} in reference, model gives {list(got.shape)}")
    diff = (got - want).abs().max().item()
    print(f"max abs logits difference: {diff:.3e} (atol {args.atol:g}) over {list(got.shape)}")
    if not diff <= args.atol:  # also catches NaN
        fail(f"max abs logits difference {diff:.3e} > {args.atol:g}")
    print("ok")


if __name__ == "__main__":
    main()
