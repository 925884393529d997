#!/usr/bin/env python3
"""The bf16-mixed reference: 50 AdamW steps of a tiny LLaMA under PyTorch's
`torch.autocast("cpu", dtype=torch.bfloat16)` (and the same 50 in fp32), from the weights of
`tests/fixtures/hf/llama-tied-theta`, on four fixed batches of token ids taken in turn.

Writes `tests/fixtures/autocast/reference.safetensors`:
  tokens       int64 [4, batch, seq]   the batches (step k trains on tokens[k % 4])
  loss_fp32    f32 [50]                per-step loss of the fp32 run
  loss_bf16    f32 [50]                per-step loss under autocast bf16 (f32 master weights)

The step: `model(ids, labels=ids).loss`, backward, `torch.optim.AdamW(lr=3e-3, betas=(0.9, 0.95),
eps=1e-8, weight_decay=0.01)`, no clipping, eager attention. cpt's test
(`cpt-continual/tests/precision.rs`) trains the same model on the same batches with
`train.precision = "bf16-mixed"` and compares the curves.

    python3 scripts/make_autocast_fixture.py    # torch 2.15, transformers 5.24 made the committed file
"""
from pathlib import Path

import torch
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM

ROOT = Path(__file__).resolve().parent.parent
MODEL = ROOT / "tests/fixtures/hf/llama-tied-theta"
OUT = ROOT / "tests/fixtures/autocast/reference.safetensors"
STEPS, BATCH, SEQ, BATCHES = 50, 4, 16, 4
ADAMW = dict(lr=3e-3, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.01)


def train(tokens: torch.Tensor, bf16: bool) -> torch.Tensor:
    model = AutoModelForCausalLM.from_pretrained(MODEL, attn_implementation="eager", dtype=torch.float32)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), **ADAMW)
    losses = []
    for step in range(STEPS):
        ids = tokens[step % BATCHES]
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = model(input_ids=ids, labels=ids).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.detach().float())
    # Master weights stayed f32 throughout.
    assert all(p.dtype == torch.float32 for p in model.parameters())
    return torch.stack(losses)


def main() -> None:
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(5)
    tokens = torch.randint(1, 1024, (BATCHES, BATCH, SEQ), generator=g, dtype=torch.int64)
    fp32 = train(tokens, bf16=False)
    bf16 = train(tokens, bf16=True)
    print("fp32", fp32[[0, 10, 25, 49]].tolist())
    print("bf16", bf16[[0, 10, 25, 49]].tolist())
    print("max |bf16 - fp32|", (bf16 - fp32).abs().max().item())
    OUT.parent.mkdir(parents=True, exist_ok=True)
    save_file({"tokens": tokens, "loss_fp32": fp32.contiguous(), "loss_bf16": bf16.contiguous()}, str(OUT))


if __name__ == "__main__":
    main()
