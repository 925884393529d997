#!/usr/bin/env python3
"""Write Hugging Face parity fixtures for cpt's LLaMA implementation.

Usage:
    pip install torch transformers safetensors
    python3 scripts/make_hf_fixtures.py [--out tests/fixtures/hf]

Runs fully offline: every model is built from a `LlamaConfig` with random init (no hub access).
For each variant it writes tests/fixtures/hf/<variant>/ with

    config.json, generation_config.json       from model.save_pretrained(...)
    model.safetensors                         (or model-0000k-of-0000N.safetensors + index.json)
    tokenizer.json                            copy of examples/data/tokenizer.json (vocab 1024)
    reference.safetensors                     reference outputs computed by transformers

See tests/fixtures/hf/README.md (also written by this script) for the tensor names.

Determinism: float32 everywhere, torch.use_deterministic_algorithms(True), eager attention,
torch.manual_seed(<per-variant seed>) before building each model, and a separately seeded
torch.Generator for every set of input ids. Re-running with the same torch/transformers versions
gives the same tensors.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

import torch

torch.use_deterministic_algorithms(True)
torch.set_num_threads(1)  # keeps CPU reductions in a fixed order

import safetensors  # noqa: E402
import transformers  # noqa: E402
from safetensors.torch import save_file  # noqa: E402
from transformers import AutoModelForCausalLM, LlamaConfig  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
TOKENIZER = REPO / "examples" / "data" / "tokenizer.json"

VOCAB = 1024
EOS_ID = 0  # <|endoftext|>
BATCH, SEQ = 2, 12
SCORE_CTX, SCORE_CONT = 4, 6
GREEDY_PROMPT, GREEDY_NEW = 5, 12
MIN_GREEDY_MARGIN = 0.01
ADAMW = dict(lr=1e-2, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1)

BASE = dict(
    vocab_size=VOCAB,
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    max_position_embeddings=64,
    rms_norm_eps=1e-5,
    initializer_range=0.2,
    bos_token_id=EOS_ID,
    eos_token_id=EOS_ID,
    pad_token_id=None,
    hidden_act="silu",
)

# name -> (seed, config overrides, reference kind)
#   "train":   everything (forward, score, greedy, loss, grad_norm, grad.*, after_adamw.*)
#   "forward": everything but grad.* and after_adamw.* (keeps grad_norm). Unused now: the RoPE
#              variants could use it (their backward pass has no new structure) to save ~0.85 MB,
#              but cpt-continual/tests/hf_parity.rs checks gradients on every float32 variant.
#   "bf16":    input_ids, logits, loss only; weights saved as sharded bf16
# Only llama-gqa-untied (and the bf16 copy of its architecture) is untied: tying the others saves
# ~0.4 MB each (an untied 1024x32 lm_head costs 128 KiB in the model and 256 KiB more in
# grad.*/after_adamw.*).
VARIANTS: dict[str, tuple[int, dict, str]] = {
    "llama-gqa-untied": (
        1001,
        dict(num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=False),
        "train",
    ),
    "llama-tied-theta": (
        1002,
        dict(num_attention_heads=4, num_key_value_heads=4, tie_word_embeddings=True, rope_theta=500000.0),
        "train",
    ),
    "llama-bias": (
        1003,
        dict(
            num_attention_heads=4,
            num_key_value_heads=1,
            head_dim=16,
            attention_bias=True,
            mlp_bias=True,
            tie_word_embeddings=True,
        ),
        "train",
    ),
    "llama-rope-llama3": (
        1004,
        dict(
            num_attention_heads=4,
            num_key_value_heads=2,
            tie_word_embeddings=True,
            rope_scaling={
                "rope_type": "llama3",
                "factor": 8.0,
                "low_freq_factor": 1.0,
                "high_freq_factor": 4.0,
                "original_max_position_embeddings": 16,
            },
        ),
        "train",
    ),
    "llama-rope-linear": (
        1005,
        dict(
            num_attention_heads=4,
            num_key_value_heads=2,
            tie_word_embeddings=True,
            rope_scaling={"rope_type": "linear", "factor": 2.0},
        ),
        "train",
    ),
    # Dynamic NTK: a context of 8, so the 12-token inputs run past it and the base grows.
    "llama-rope-dynamic": (
        1007,
        dict(
            num_attention_heads=4,
            num_key_value_heads=2,
            tie_word_embeddings=True,
            max_position_embeddings=8,
            rope_scaling={"rope_type": "dynamic", "factor": 2.0},
        ),
        # No greedy reference: a cached generation keeps each key's frequencies from the pass
        # that made it, so under dynamic scaling cached and uncached decoding differ by design.
        "train-no-generate",
    ),
    # YaRN with a 16-wide head, so the ramp between kept and interpolated frequencies is inside
    # the head, and the attention factor (0.1·ln 4 + 1) scales cos and sin.
    "llama-rope-yarn": (
        1008,
        dict(
            num_attention_heads=4,
            num_key_value_heads=2,
            head_dim=16,
            tie_word_embeddings=False,
            max_position_embeddings=128,
            rope_theta=1000.0,
            rope_scaling={
                "rope_type": "yarn",
                "factor": 4.0,
                "original_max_position_embeddings": 32,
                "beta_fast": 4.0,
                "beta_slow": 1.0,
            },
        ),
        "train",
    ),
    # Same architecture as llama-gqa-untied, saved as sharded bf16.
    "llama-sharded-bf16": (
        1006,
        dict(num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=False),
        "bf16",
    ),
}


def make_config(overrides: dict) -> LlamaConfig:
    kw = dict(BASE)
    kw.update(overrides)
    cfg = LlamaConfig(**kw)
    return cfg


def build_model(cfg: LlamaConfig, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(cfg, attn_implementation="eager", dtype=torch.float32)
    # HF initialises RMSNorm weights to 1 and Linear biases to 0. Perturb them (same seed stream)
    # so that a loader which drops a norm weight or a bias cannot pass the parity check.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(1.0 + 0.1 * torch.randn_like(p))
            elif name.endswith(".bias"):
                p.copy_(0.1 * torch.randn_like(p))
    model.eval()  # dropout is 0 anyway; eval() keeps the forward identical to inference
    return model


def ids(seed: int, shape: tuple[int, ...]) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(1, VOCAB, shape, generator=g, dtype=torch.int64)


def greedy_no_cache(model, prompt: torch.Tensor, n: int) -> torch.Tensor:
    out = prompt
    for _ in range(n):
        logits = model(out, use_cache=False).logits
        out = torch.cat([out, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    return out


def reference_full(model, seed: int, train: bool, generate: bool = True) -> dict[str, torch.Tensor]:
    ref: dict[str, torch.Tensor] = {}
    input_ids = ids(seed, (BATCH, SEQ))
    ref["input_ids"] = input_ids

    # Forward-only outputs (no grad).
    with torch.no_grad():
        ref["logits"] = model(input_ids).logits.float().contiguous()

        score_ids = ids(seed + 1, (1, SCORE_CTX + SCORE_CONT))
        # Dynamic RoPE in transformers keeps the longest length seen (12 above) until a pass
        # within the original context resets it; one 1-token pass makes this forward depend on
        # its own length only, as cpt's does. A no-op for every other rule.
        model(score_ids[:, :1])
        lp = torch.log_softmax(model(score_ids).logits.float(), dim=-1)
        # token at position t (t >= SCORE_CTX) is scored by the logits at position t-1
        pos = torch.arange(SCORE_CTX, SCORE_CTX + SCORE_CONT)
        ref["score_ids"] = score_ids
        ref["score_logprobs"] = lp[0, pos - 1, score_ids[0, pos]].contiguous()

        if generate:
            # Disable EOS stopping: no eos in the generation config and min_new_tokens == max_new_tokens.
            model.generation_config.eos_token_id = None
            model.generation_config.bos_token_id = None
            # Take the first prompt (from a fixed list of seeds) whose greedy path never has a
            # top-1/top-2 logit gap below MIN_GREEDY_MARGIN, so that float32 rounding differences in
            # another implementation cannot flip an argmax.
            for attempt in range(100):
                prompt = ids(seed + 2 + 7919 * attempt, (1, GREEDY_PROMPT))
                out = model.generate(
                    prompt,
                    attention_mask=torch.ones_like(prompt),
                    max_new_tokens=GREEDY_NEW,
                    min_new_tokens=GREEDY_NEW,
                    do_sample=False,
                    eos_token_id=None,
                    pad_token_id=0,
                )
                assert out.shape == (1, GREEDY_PROMPT + GREEDY_NEW), out.shape
                # The KV-cached generate() must agree with a plain full-recompute argmax loop.
                assert torch.equal(out, greedy_no_cache(model, prompt, GREEDY_NEW)), "generate != no-cache greedy"
                top2 = model(out, use_cache=False).logits[0, GREEDY_PROMPT - 1 : -1].topk(2, dim=-1).values
                margin = (top2[:, 0] - top2[:, 1]).min().item()
                if margin >= MIN_GREEDY_MARGIN:
                    break
            else:
                raise RuntimeError("no greedy prompt with a safe argmax margin")
            print(f"  greedy prompt attempt {attempt}, min top-2 margin {margin:.4f}", file=sys.stderr)
            ref["greedy_prompt"] = prompt
            ref["greedy_output"] = out.to(torch.int64).contiguous()

    # Loss, gradients, one AdamW step.
    model.zero_grad(set_to_none=True)
    loss = model(input_ids, labels=input_ids).loss
    # Cross-check HF's shift-by-one mean CE.
    with torch.no_grad():
        lg = ref["logits"]
        manual = torch.nn.functional.cross_entropy(
            lg[:, :-1].reshape(-1, VOCAB), input_ids[:, 1:].reshape(-1)
        )
        assert torch.allclose(manual, loss.detach(), atol=1e-5), (manual, loss)
    loss.backward()
    ref["loss"] = loss.detach().reshape(1).float()

    # named_parameters() yields each (tied) parameter once, under its first name.
    named = list(model.named_parameters())
    grads = [p.grad for _, p in named]
    ref["grad_norm"] = torch.sqrt(sum((g.double() ** 2).sum() for g in grads)).float().reshape(1)
    if not train:
        return ref
    for name, p in named:
        ref[f"grad.{name}"] = p.grad.detach().float().contiguous().clone()

    opt = torch.optim.AdamW(model.parameters(), **ADAMW)
    opt.step()
    for name, p in named:
        ref[f"after_adamw.{name}"] = p.detach().float().contiguous().clone()
    return ref


def write_variant(out_root: Path, name: str, seed: int, overrides: dict, kind: str) -> None:
    folder = out_root / name
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    cfg = make_config(overrides)
    model = build_model(cfg, seed)

    if kind in ("train", "train-no-generate", "forward"):
        model.save_pretrained(folder, safe_serialization=True)
        shutil.copy(TOKENIZER, folder / "tokenizer.json")
        ref = reference_full(model, seed, train=kind != "forward", generate=kind != "train-no-generate")
    else:
        assert kind == "bf16", kind
        # bf16, sharded. The reference is computed from the bf16-rounded weights upcast to f32.
        model.to(torch.bfloat16).save_pretrained(folder, safe_serialization=True, max_shard_size="40KB")
        shutil.copy(TOKENIZER, folder / "tokenizer.json")
        shards = sorted(folder.glob("model-*-of-*.safetensors"))
        assert len(shards) > 1 and (folder / "model.safetensors.index.json").exists(), shards
        reloaded, info = AutoModelForCausalLM.from_pretrained(
            folder, dtype=torch.float32, attn_implementation="eager", output_loading_info=True
        )
        bad = {k: v for k, v in info.items() if v}
        assert not bad, bad
        reloaded.eval()
        input_ids = ids(seed, (BATCH, SEQ))
        with torch.no_grad():
            out = reloaded(input_ids, labels=input_ids)
        ref = {
            "input_ids": input_ids,
            "logits": out.logits.float().contiguous(),
            "loss": out.loss.float().reshape(1),
        }

    save_file({k: v.contiguous() for k, v in ref.items()}, str(folder / "reference.safetensors"))
    print(f"{name}: {len(ref)} reference tensors, loss={ref['loss'].item():.6f}", file=sys.stderr)


def dir_size(p: Path) -> int:
    return sum(f.stat().st_size for f in p.rglob("*") if f.is_file())


README = """\
# Hugging Face parity fixtures

Generated by `scripts/make_hf_fixtures.py` (offline, random init, float32, eager attention,
`torch.use_deterministic_algorithms(True)`, one `torch.manual_seed` per variant) with

- torch {torch}
- transformers {transformers}
- safetensors {safetensors}

Regenerate (from the repository root):

    pip install torch transformers safetensors && python3 scripts/make_hf_fixtures.py

Other torch/transformers versions may change the random init and therefore every tensor, and
transformers 4.x writes `rope_theta`/`rope_scaling`/`torch_dtype` into config.json where 5.x
writes `rope_parameters`/`dtype`; a loader should accept both.

## Models

All: vocab_size 1024 (`tokenizer.json` is a copy of `examples/data/tokenizer.json`,
byte-level BPE, `<|endoftext|>` = 0), hidden_size 32, intermediate_size 64, 2 layers,
max_position_embeddings 64, rms_norm_eps 1e-5, initializer_range 0.2, bos = eos = 0, SiLU.
RMSNorm weights are set to `1 + 0.1*randn` and biases to `0.1*randn` after HF's init (HF would
leave them at 1 and 0, which would not test that they are loaded).

| folder | what differs | reference |
| --- | --- | --- |
| `llama-gqa-untied` | 4 heads, 2 kv heads (GQA), untied `lm_head` | full |
| `llama-tied-theta` | 4 heads, 4 kv heads, tied, rope theta 500000 | full |
| `llama-bias` | 4 heads, 1 kv head (MQA), `head_dim: 16` (q_proj out 64 != hidden 32), `attention_bias` and `mlp_bias`, tied | full |
| `llama-rope-llama3` | 4 heads, 2 kv heads, rope_type `llama3` (factor 8, low_freq_factor 1, high_freq_factor 4, original_max_position_embeddings 16), tied | full |
| `llama-rope-linear` | 4 heads, 2 kv heads, rope_type `linear` (factor 2), tied | full |
| `llama-sharded-bf16` | architecture of `llama-gqa-untied` (other seed), weights saved as bfloat16 in several `model-0000k-of-0000N.safetensors` shards + `model.safetensors.index.json` | bf16 |

"Tied" means `tie_word_embeddings: true`: transformers then writes no `lm_head.weight` into
model.safetensors (the output projection is `model.embed_tokens.weight`). Only the untied
variants carry an `lm_head.weight`. Tying every variant but `llama-gqa-untied` (and its bf16
copy) keeps this folder under 5 MB.

Each folder holds `config.json`, `generation_config.json`, the weights, `tokenizer.json` and
`reference.safetensors`.

## reference.safetensors

Float tensors are float32, id tensors int64. A "full" reference has every row below, a "bf16"
one only `input_ids`, `logits` and `loss`.

| name | shape | meaning |
| --- | --- | --- |
| `input_ids` | [2, 12] | ids in [1, 1024) from a seeded generator |
| `logits` | [2, 12, 1024] | `model(input_ids).logits` |
| `loss` | [1] | `model(input_ids, labels=input_ids).loss` (mean next-token CE over 2x11 positions) |
| `grad_norm` | [1] | L2 norm over all parameter gradients of `loss` (a tied weight counted once) |
| `grad.<name>` | HF shape | gradient of `loss` for each parameter in `model.named_parameters()` |
| `after_adamw.<name>` | HF shape | each parameter after one `torch.optim.AdamW(lr=1e-2, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1)` step on `loss` (no clipping; decay applies to every parameter, norms and biases included) |
| `score_ids` | [1, 10] | 4 context tokens + 6 continuation tokens |
| `score_logprobs` | [6] | `log_softmax(logits[0, t-1])[score_ids[0, t]]` for t = 4..9 |
| `greedy_prompt` | [1, 5] | prompt |
| `greedy_output` | [1, 17] | `model.generate(prompt, max_new_tokens=12, min_new_tokens=12, do_sample=False, eos_token_id=None, pad_token_id=0)` (prompt + 12 new tokens; checked equal to a no-KV-cache argmax loop; the prompt is the first of a fixed seeded list whose greedy steps all have a top-1/top-2 logit gap >= 0.01) |

`<name>` is the HF parameter name, e.g. `model.layers.0.self_attn.q_proj.weight`. For the tied
variants the shared matrix appears only as `model.embed_tokens.weight` (there is no
`grad.lm_head.weight` / `after_adamw.lm_head.weight`); its gradient is the sum of the embedding
and output-projection contributions.

`llama-sharded-bf16/reference.safetensors` holds only `input_ids`, `logits` and `loss`,
computed in float32 from the saved bf16 weights (loaded back with `dtype=torch.float32`).

## Checking an export

    python3 scripts/check_hf_export.py EXPORT_DIR REFERENCE.safetensors

loads EXPORT_DIR with `AutoModelForCausalLM` / `AutoTokenizer`, fails on any missing,
unexpected or mismatched key, and compares logits for the reference `input_ids` (max abs diff
<= 1e-4).

## Files

{files}
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=REPO / "tests" / "fixtures" / "hf")
    ap.add_argument("--only", nargs="*", help="regenerate these variants only")
    args = ap.parse_args()
    out_root: Path = args.out
    out_root.mkdir(parents=True, exist_ok=True)

    for name, (seed, overrides, kind) in VARIANTS.items():
        if not args.only or name in args.only:
            write_variant(out_root, name, seed, overrides, kind)

    lines = []
    for name in VARIANTS:
        for f in sorted((out_root / name).iterdir()):
            lines.append(f"- `{name}/{f.name}` ({f.stat().st_size} bytes)")
    (out_root / "README.md").write_text(
        README.format(
            torch=torch.__version__,
            transformers=transformers.__version__,
            safetensors=safetensors.__version__,
            files="\n".join(lines),
        )
    )
    total = dir_size(out_root)
    print(f"total size of {out_root}: {total} bytes ({total / 2**20:.2f} MiB)", file=sys.stderr)


if __name__ == "__main__":
    main()
