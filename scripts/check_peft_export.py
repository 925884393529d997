#!/usr/bin/env python3
"""Check a `cpt export peft` folder with Python PEFT.

    python3 scripts/check_peft_export.py EXPORT_DIR REFERENCE.safetensors

Loads EXPORT_DIR/base with transformers, applies the adapter in EXPORT_DIR with
`peft.PeftModel.from_pretrained`, and compares its logits on REFERENCE's `input_ids` with
REFERENCE's `logits` (written by cpt from the adapted model). Exits 1 on any load warning or a
max difference above 1e-4.
"""
import sys

import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM
from peft import PeftModel


def main() -> int:
    if len(sys.argv) != 3:
        print(__doc__)
        return 2
    export_dir, reference_path = sys.argv[1], sys.argv[2]
    base, info = AutoModelForCausalLM.from_pretrained(
        f"{export_dir}/base", torch_dtype=torch.float32, attn_implementation="eager", output_loading_info=True
    )
    problems = {k: v for k, v in info.items() if v}
    if problems:
        print(f"base model loading problems: {problems}")
        return 1
    model = PeftModel.from_pretrained(base, export_dir)
    model.eval()
    reference = load_file(reference_path)
    input_ids = reference["input_ids"].to(torch.int64)
    with torch.no_grad():
        logits = model(input_ids).logits
    diff = (logits - reference["logits"]).abs().max().item()
    print(f"max |logits difference| = {diff:.3g}")
    if diff > 1e-4:
        return 1
    print("ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
