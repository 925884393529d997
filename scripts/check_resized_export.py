#!/usr/bin/env python3
"""Check that a cpt export of a model grown by `[model.resize_vocab]` (and, for CLIP,
`[model.resize_text_positions]`) loads in transformers with the new sizes.

Usage:
    python3 scripts/check_resized_export.py EXPORT_DIR --old-tokenizer OLD_tokenizer.json \
        [--text "fn main() { println!(\"hi\"); }"] [--positions N]

Checks, exiting 1 with a FAIL line on the first that does not hold:
- the folder loads with AutoModel.from_pretrained (LLaMA: AutoModelForCausalLM; CLIP: CLIPModel)
  with no missing, unexpected or mismatched keys, and with AutoTokenizer / the fast tokenizer;
- the input embedding (and an untied LM head) has one row per tokenizer id, as config.json says;
- every token of the old tokenizer keeps its id in the exported tokenizer, and at least one id
  past the old vocabulary exists;
- `--text` encodes to at least one new id, and a forward pass over it gives finite outputs with
  the new vocabulary's width (LLaMA);
- CLIP with `--positions N`: text_config.max_position_embeddings == N and a caption of N tokens
  runs.

Not part of CI (which needs no Python); the README's vocabulary-extension section runs it.
Requires: pip install torch transformers
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def fail(msg: str) -> "NoReturn":  # noqa: F821
    print(f"FAIL: {msg}", file=sys.stderr)
    sys.exit(1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("export_dir", type=Path)
    ap.add_argument("--old-tokenizer", type=Path, required=True)
    ap.add_argument("--text", default='fn main() { let v: Vec<u32> = Vec::new(); println!("{v:?}"); }')
    ap.add_argument("--positions", type=int)
    args = ap.parse_args()

    import torch
    from transformers import AutoModelForCausalLM, CLIPModel, PreTrainedTokenizerFast

    config = json.loads((args.export_dir / "config.json").read_text())
    is_clip = config.get("model_type") == "clip"
    loader = CLIPModel if is_clip else AutoModelForCausalLM
    try:
        model, info = loader.from_pretrained(
            args.export_dir, output_loading_info=True, dtype=torch.float32, local_files_only=True
        )
    except Exception as e:  # noqa: BLE001
        fail(f"{loader.__name__}.from_pretrained({args.export_dir}) raised {type(e).__name__}: {e}")
    problems = {k: v for k in ("missing_keys", "unexpected_keys", "mismatched_keys", "error_msgs")
                if (v := info.get(k))}
    if problems:
        fail(f"does not load cleanly: {problems}")
    model.eval()

    tok = PreTrainedTokenizerFast(tokenizer_file=str(args.export_dir / "tokenizer.json"))
    new_vocab = tok.backend_tokenizer.get_vocab(with_added_tokens=True)
    size = max(new_vocab.values()) + 1
    text_config = model.config.text_config if is_clip else model.config
    if text_config.vocab_size != size:
        fail(f"config vocab_size {text_config.vocab_size} != tokenizer size {size}")
    embeddings = model.text_model.embeddings.token_embedding if is_clip else model.get_input_embeddings()
    rows = embeddings.weight.shape[0]
    if rows != size:
        fail(f"input embedding has {rows} rows, tokenizer {size} ids")
    if not is_clip and model.get_output_embeddings().weight.shape[0] != size:
        fail(f"LM head has {model.get_output_embeddings().weight.shape[0]} rows, tokenizer {size} ids")

    old = json.loads(args.old_tokenizer.read_text())
    old_vocab = dict(old["model"]["vocab"])
    old_vocab.update({t["content"]: t["id"] for t in old.get("added_tokens", [])})
    moved = [(t, i, new_vocab.get(t)) for t, i in old_vocab.items() if new_vocab.get(t) != i]
    if moved:
        fail(f"{len(moved)} old tokens changed id, e.g. {moved[:3]}")
    old_size = max(old_vocab.values()) + 1
    if size <= old_size:
        fail(f"no new ids: tokenizer size {size}, old {old_size}")

    ids = tok(args.text, add_special_tokens=False)["input_ids"]
    new_ids = [i for i in ids if i >= old_size]
    print(f"{type(model).__name__}: vocab {old_size} -> {size}; `{args.text[:40]}...` "
          f"is {len(ids)} tokens, {len(new_ids)} of them new")
    with torch.no_grad():
        if is_clip:
            n = args.positions or text_config.max_position_embeddings
            if args.positions and text_config.max_position_embeddings != args.positions:
                fail(f"max_position_embeddings {text_config.max_position_embeddings} != {args.positions}")
            caption = torch.tensor([(ids * n)[:n]])
            out = model.get_text_features(input_ids=caption)
            out = out.pooler_output if hasattr(out, "pooler_output") else out
            print(f"text features {tuple(out.shape)} over {n} positions")
        else:
            if not new_ids:
                fail("the sample text uses no new token")
            out = model(torch.tensor([ids])).logits
            if out.shape[-1] != size:
                fail(f"logits width {out.shape[-1]} != {size}")
        if not torch.isfinite(out).all():
            fail("non-finite outputs")
    print("ok")


if __name__ == "__main__":
    main()
