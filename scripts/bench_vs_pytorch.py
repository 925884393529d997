#!/usr/bin/env python3
"""The PyTorch half of scripts/bench_vs_pytorch.sh: train transformers' LlamaForCausalLM at one
of cpt's benchmark shapes (see `cpt bench train --help`) and print one JSON line.

Same work as `cpt bench train`: random initial weights, random token ids (seeded), AdamW
(betas 0.9/0.95, eps 1e-8, weight decay 0.01), global gradient-norm clipping at 1.0, a fixed
number of warm-up steps excluded from the timing. Peak RSS is the process's own high-water mark.

`--dtype bf16` is `torch.autocast(dtype=torch.bfloat16)` around the forward pass and the loss
(fp32 master weights and AdamW moments, as cpt's `bf16-mixed`; `f16` likewise in float16); `--device cuda` runs on the GPU
and reports its memory (`torch.cuda.memory_allocated` / `memory_reserved` after the last step,
as cpt bench reports its allocator's); `--compile` wraps the model in `torch.compile`. A compile
that fails prints {"skipped": why} and exits with status 3, so that callers can go on.
"""

import argparse
import json
import resource
import sys
import time

# Kept in step with cpt-cli/src/bench_cmd.rs (`BenchShape`).
SHAPES = {
    "quick": dict(vocab=1024, hidden=64, layers=2, heads=4, kv=2, ffn=172, seq=128, batch=16),
    "middle": dict(vocab=8192, hidden=256, layers=4, heads=8, kv=4, ffn=688, seq=256, batch=8),
    "135m": dict(vocab=49152, hidden=576, layers=30, heads=9, kv=3, ffn=1536, seq=256, batch=4),
}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--shape", choices=SHAPES, required=True)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=0, help="0: torch's default")
    parser.add_argument("--mode", choices=["train", "forward", "generate"], default="train")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--dtype", choices=["fp32", "bf16", "f16"], default="fp32",
                        help="bf16 (f16): torch.autocast(dtype=torch.bfloat16 (float16)), fp32 "
                        "master weights; f16 without a gradient scaler, as cpt bench times it")
    parser.add_argument("--compile", action="store_true", help="torch.compile the model")
    args = parser.parse_args()

    try:
        import torch
        from transformers import LlamaConfig, LlamaForCausalLM
    except ImportError as missing:
        print(f"skip: PyTorch/transformers not installed ({missing}); "
              "pip install torch transformers", file=sys.stderr)
        sys.exit(2)

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("skip: --device cuda but torch sees no CUDA device", file=sys.stderr)
        sys.exit(2)
    device = torch.device(args.device)
    s = SHAPES[args.shape]
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=s["vocab"], hidden_size=s["hidden"], intermediate_size=s["ffn"],
        num_hidden_layers=s["layers"], num_attention_heads=s["heads"],
        num_key_value_heads=s["kv"], max_position_embeddings=max(2048, s["seq"]),
        tie_word_embeddings=True,
    )
    model = LlamaForCausalLM(config).float().to(device)
    parameters = sum(p.numel() for p in model.parameters())
    tokens = torch.randint(0, s["vocab"], (s["batch"], s["seq"])).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95), eps=1e-8,
                                  weight_decay=0.01)

    # Kept in step with cpt-cli/src/bench_cmd.rs (`GENERATED_TOKENS`).
    generated = 64
    # The module the steps call: compiled or not. `generate` goes through the eager model
    # (its Python loop is not what torch.compile speeds up); the compiled module shares weights.
    forward = torch.compile(model) if args.compile else model

    def autocast():
        low = torch.float16 if args.dtype == "f16" else torch.bfloat16
        return torch.autocast(device_type=args.device, dtype=low, enabled=args.dtype != "fp32")

    def step():
        if args.mode == "generate":
            with torch.no_grad(), autocast():
                # Greedy, with the KV cache; min_new_tokens keeps a random model from stopping
                # at its end-of-sequence id.
                out = model.generate(tokens[:1], max_new_tokens=generated,
                                     min_new_tokens=generated, do_sample=False,
                                     pad_token_id=0)
            assert out.shape[1] == s["seq"] + generated
            return
        if args.mode == "forward":
            with torch.no_grad(), autocast():
                forward(tokens).logits.sum().item()
            return
        with autocast():
            loss = forward(tokens, labels=tokens).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        loss.item()

    model.train(args.mode == "train")
    try:
        # torch.compile compiles on the first call: a failure (no C++ compiler, an unsupported
        # op on this device) shows here.
        for _ in range(max(args.warmup, 1 if args.compile else 0)):
            step()
    except Exception as error:  # noqa: BLE001 - any compiler failure means "no compiled figure"
        if not args.compile:
            raise
        reason = f"{type(error).__name__}: {str(error).strip().splitlines()[0][:200]}"
        print(json.dumps({"skipped": f"torch.compile failed: {reason}"}))
        sys.exit(3)
    sync = torch.cuda.synchronize if args.device == "cuda" else (lambda: None)
    sync()
    started = time.perf_counter()
    for _ in range(args.steps):
        step()
    sync()
    seconds = time.perf_counter() - started
    per_step = generated if args.mode == "generate" else s["batch"] * s["seq"]
    tokens_done = args.steps * per_step
    mib = 1024 * 1024
    on_gpu = args.device == "cuda"
    print(json.dumps({
        "engine": f"pytorch {torch.__version__}",
        "shape": args.shape,
        "mode": args.mode,
        "precision": {"fp32": "fp32", "bf16": "bf16-mixed", "f16": "f16-mixed"}[args.dtype],
        "device": args.device,
        "compiled": args.compile,
        "threads": torch.get_num_threads(),
        "steps": args.steps,
        "parameters": parameters,
        "tokens_per_sec": tokens_done / seconds,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "device_memory_mib": torch.cuda.memory_allocated() / mib if on_gpu else None,
        "device_reserved_mib": torch.cuda.memory_reserved() / mib if on_gpu else None,
    }))


if __name__ == "__main__":
    main()
