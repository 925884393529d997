#!/usr/bin/env python3
"""Check that a GGUF file (e.g. one written by `cpt export gguf`) is read by llama.cpp itself and
that llama.cpp computes what cpt computes from the same file.

Usage:
    PYTHONPATH=DIR_WITH_llama_PACKAGE \\
    python3 scripts/check_gguf_llamacpp.py MODEL.gguf --cpt target/release/cpt \\
        [--new-tokens 16] [--atol LOGPROB_TOL] [--json-out RESULT.json] [--no-generate]

llama.cpp comes from the `llama-cpp-cffi` wheel (0.4.42, llama.cpp's C API through cffi, CPU
library inside): `pip install --no-deps llama-cpp-cffi==0.4.42`, or unzip the wheel's `llama/`
folder somewhere on PYTHONPATH. Only its compiled CPU module is used (loaded by file path, so the
package's own Python code, which pins transformers < 5 and downloads from the Hub, never runs).
Its library is built with GCC 14; on an older libstdc++ (Debian 12) two unversioned symbols are
missing (`__cxa_call_terminate`, `std::ios_base_library_init`), which this script then supplies
from a 3-line shim compiled with the system `c++` into a temporary folder. Requires numpy.

What it checks, all on the same file and the same token ids, cpt's side through `cpt score`
(cpt has no logit dump; `score` gives the log-probability of a continuation and whether it is the
greedy one):
 1. Loading: llama.cpp loads the file with `check_tensors` on (it validates every tensor's data)
    and its vocabulary size equals the output width.
 2. Tokenisation: for each string below, llama.cpp's token ids (no BOS/EOS added; special-token
    text such as `<|im_start|>` read as the special token, as llama.cpp's CLI and Hugging Face
    tokenizers do) are exactly cpt's: cpt scores the string as text (after its document-start
    token: the token cpt names BOS, else EOS) and as llama.cpp's ids after that same token; the
    two must agree in token count and log-probability (a different id sequence changes it).
 3. Logits: for each prompt, llama.cpp evaluates the prompt (logits at every position) and
    greedily continues it for --new-tokens tokens (logits at every step). At every position t of
    prompt + continuation, log p(token t+1 | tokens <= t) from llama.cpp's logits (log-softmax
    in float64) is compared with cpt's for the same ids: max |delta log p| must be <= --atol
    (default by the file's weight type: llama.cpp's CPU matmuls round the activations to f16
    (bf16) for F16 (BF16) weights and quantise them to 8-bit blocks (Q8_0/Q8_1) for quantised
    weights; cpt multiplies in f32 after dequantising. On SmolLM2, whose activations reach 2e4,
    rounding the activations of transformers' f32 forward the same way moves its log-probs by
    as much as llama.cpp differs from cpt: 1.0e-2 vs 2.1e-2 for F16, 0.34 vs 0.34 for Q8_0,
    0.62 vs 0.56 for Q4_1). Greedy agreement: at every continuation step cpt's argmax must be
    llama.cpp's greedy token for float weights (both greedy continuations are then the same
    token for token), at 90% of them for quantised weights, where 8-bit activations flip
    near-ties; at prompt positions the top-1 agreement is reported.
 4. Text (unless --no-generate): `cpt generate` (greedy) prints the same text as llama.cpp's
    greedy continuation detokenised, when it starts from the same tokens (required for float
    weights, reported for quantised ones).
llama.cpp runs with an f32 KV cache, no flash attention, 2 threads.
Exit status 0 when every check passes ("ok" at the end), 1 otherwise.
"""

from __future__ import annotations

import argparse
import ctypes
import glob
import importlib.util
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

# Strings whose tokenisation is compared: prose, code, digits (SmolLM2's pre-tokenizer splits
# them one by one), whitespace runs, punctuation, accents, CJK and emoji (byte fallback).
TOKENISATION_STRINGS = [
    "The capital of France is",
    "fn main() {\n    println!(\"Hello, world!\");\n}",
    "It is a truth universally acknowledged, that a single man in possession of a good fortune",
    "In 1813, 12345 copies cost £3.50 — or 3,141,592 pennies?",
    "    indented\ttabs\t\tand  double  spaces\n\n\nnewlines",
    "naïve café, résumé; Ångström: Œuvre",
    "東京は日本の首都です。",
    "emoji 🦀🚀 and symbols ∑∫√ ≤≥",
    "<|im_start|>user\nnot parsed as special<|im_end|>",
    "x=a+b*c/d-e%f; if (x>=0) { return -1; } else { y[i]++; }",
    "ALL CAPS and MiXeD cAsE and snake_case and camelCase",
    "'quoted' \"double\" `back` (paren) [bracket] {brace}",
]

# Prompts whose logits and greedy continuations are compared.
PROMPTS = [
    "The capital of France is",
    "fn main() {",
    "It is a truth universally acknowledged, that",
    "Once upon a time, in a small village,",
]

# Default tolerance on |delta log p| by the weight type of the file (see the header; measured on
# SmolLM2-135M: F16 2.2e-2, Q8_0 0.34, Q4_1 0.56). A wrong rotary row order, norm or
# tokenizer moves log-probabilities by whole nats and flips most greedy tokens.
ATOL_BY_TYPE = {"F32": 1e-3, "F16": 5e-2, "BF16": 0.2, "Q8_0": 0.5}
ATOL_QUANTISED = 1.0
FLOAT_TYPES = {"F32", "F16", "BF16"}
# Share of greedy steps on which cpt's argmax must be llama.cpp's token: all of them for float
# weights; with quantised weights llama.cpp's 8-bit activations flip near-ties now and then.
GREEDY_SHARE_QUANTISED = 0.9

# general.file_type values (llama_ftype) named as the weight type they stand for.
FILE_TYPES = {0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 7: "Q8_0", 8: "Q5_0", 9: "Q5_1",
              10: "Q2_K", 11: "Q3_K_S", 12: "Q3_K_M", 13: "Q3_K_L", 14: "Q4_K_S", 15: "Q4_K_M",
              16: "Q5_K_S", 17: "Q5_K_M", 18: "Q6_K", 32: "BF16"}

# The names by which cpt's tokenizer finds its beginning- and end-of-text tokens (cpt-data
# tokenizer.rs): a text is scored after BOS, else EOS; generation starts from BOS if there is one
# and stops at EOS.
CPT_BOS_NAMES = ["<s>", "<bos>", "<|begin_of_text|>"]
CPT_EOS_NAMES = ["<|endoftext|>", "</s>", "<eos>", "<|end_of_text|>"]

SHIM_SOURCE = """
#include <exception>
#include <ios>
extern "C" [[noreturn]] void __cxa_call_terminate(void*) noexcept { std::terminate(); }
namespace std { void ios_base_library_init() { static ios_base::Init init; } }
"""


def fail(msg: str) -> "NoReturn":  # noqa: F821
    print(f"FAIL: {msg}", file=sys.stderr)
    sys.exit(1)


def load_llama_cpp(scratch: Path):
    """llama.cpp's cffi `lib` and `ffi`, from the installed `llama` package's CPU module."""
    spec = importlib.util.find_spec("llama")  # finds the package without running its __init__
    if spec is None or not spec.submodule_search_locations:
        fail("no `llama` package: pip install --no-deps llama-cpp-cffi==0.4.42 "
             "(or unzip the wheel's llama/ folder onto PYTHONPATH)")
    found = glob.glob(str(Path(spec.submodule_search_locations[0]) / "_llama_cpp_cpu*.so"))
    if not found:
        fail(f"{spec.submodule_search_locations[0]}: no _llama_cpp_cpu*.so (llama-cpp-cffi's CPU library)")

    def import_module():
        module_spec = importlib.util.spec_from_file_location("llama._llama_cpp_cpu", found[0])
        module = importlib.util.module_from_spec(module_spec)
        module_spec.loader.exec_module(module)
        return module

    try:
        module = import_module()
    except ImportError as err:
        if "undefined symbol" not in str(err):
            raise
        # Built with GCC 14: supply the two symbols an older libstdc++ lacks, process-wide.
        (scratch / "shim.cc").write_text(SHIM_SOURCE)
        shim = scratch / "libcxxshim.so"
        subprocess.run(["c++", "-O2", "-shared", "-fPIC", "-o", str(shim), str(scratch / "shim.cc")],
                       check=True)
        ctypes.CDLL(str(shim), mode=ctypes.RTLD_GLOBAL)
        module = import_module()
    return module.lib, module.ffi


class LlamaCpp:
    """One GGUF file loaded in llama.cpp (CPU), with a context for evaluating token ids."""

    def __init__(self, path: Path, lib, ffi, n_ctx: int, verbose: bool):
        self.lib, self.ffi = lib, ffi
        self.log: list[str] = []

        @ffi.def_extern()
        def llama_cpp_cffi_ggml_log_callback(level, text, user_data):  # noqa: ARG001
            line = ffi.string(text).decode(errors="replace")
            self.log.append(line)
            if verbose:
                sys.stderr.write(line)

        lib.llama_log_set(lib.llama_cpp_cffi_ggml_log_callback, ffi.NULL)
        lib.llama_backend_init()
        params = lib.llama_model_default_params()
        params.n_gpu_layers = 0
        params.check_tensors = True
        self.model = lib.llama_model_load_from_file(str(path).encode(), params)
        if self.model == ffi.NULL:
            fail(f"{path}: llama.cpp could not load the file:\n" + "".join(self.log[-20:]))
        ctx_params = lib.llama_context_default_params()
        ctx_params.n_ctx = n_ctx
        ctx_params.n_batch = n_ctx
        ctx_params.n_ubatch = n_ctx
        ctx_params.n_threads = 2
        ctx_params.n_threads_batch = 2
        ctx_params.type_k = 0  # GGML_TYPE_F32: keep the KV cache out of the comparison
        ctx_params.type_v = 0
        ctx_params.flash_attn = False
        self.ctx = lib.llama_init_from_model(self.model, ctx_params)
        if self.ctx == ffi.NULL:
            fail(f"{path}: llama.cpp could not create a context:\n" + "".join(self.log[-20:]))
        self.vocab = lib.llama_model_get_vocab(self.model)
        self.n_vocab = lib.llama_vocab_n_tokens(self.vocab)

    def meta(self, key: str) -> str | None:
        buf = self.ffi.new("char[]", 256)
        n = self.lib.llama_model_meta_val_str(self.model, key.encode(), buf, 256)
        return None if n < 0 else self.ffi.string(buf).decode()

    def desc(self) -> str:
        buf = self.ffi.new("char[]", 256)
        self.lib.llama_model_desc(self.model, buf, 256)
        return self.ffi.string(buf).decode()

    def token_id(self, names: list[str]) -> int | None:
        """The id of the first of names in the vocabulary (cpt finds BOS and EOS by name)."""
        if not hasattr(self, "_ids_by_text"):
            get_text = getattr(self.lib, "llama_vocab_get_text", None) or self.lib.llama_token_get_text
            self._ids_by_text = {}
            for i in range(self.n_vocab):
                self._ids_by_text.setdefault(self.ffi.string(get_text(self.vocab, i)).decode(errors="replace"), i)
        return next((self._ids_by_text[n] for n in names if n in self._ids_by_text), None)

    def cpt_bos(self) -> int | None:
        return self.token_id(CPT_BOS_NAMES)

    def cpt_eos(self) -> int | None:
        return self.token_id(CPT_EOS_NAMES)

    def tokenize(self, text: str) -> list[int]:
        raw = text.encode()
        cap = len(raw) + 8
        buf = self.ffi.new("int32_t[]", cap)
        n = self.lib.llama_tokenize(self.vocab, raw, len(raw), buf, cap, False, True)
        if n < 0:
            fail(f"llama_tokenize needs {-n} slots for {text!r}")
        return list(buf[0:n])

    def detokenize(self, ids: list[int]) -> str:
        cap = 64 * len(ids) + 16
        buf = self.ffi.new("char[]", cap)
        n = self.lib.llama_detokenize(self.vocab, self.ffi.new("int32_t[]", ids), len(ids), buf, cap,
                                      False, False)
        return self.ffi.buffer(buf, n)[:].decode(errors="replace")

    def _decode(self, ids: list[int], first_pos: int) -> np.ndarray:
        """Feed ids at positions first_pos.. and return their logits [len(ids), n_vocab]."""
        batch = self.lib.llama_batch_init(len(ids), 0, 1)
        try:
            batch.n_tokens = len(ids)
            for i, token in enumerate(ids):
                batch.token[i] = token
                batch.pos[i] = first_pos + i
                batch.n_seq_id[i] = 1
                batch.seq_id[i][0] = 0
                batch.logits[i] = 1
            if self.lib.llama_decode(self.ctx, batch) != 0:
                fail("llama_decode failed:\n" + "".join(self.log[-20:]))
            rows = []
            for i in range(len(ids)):
                ptr = self.lib.llama_get_logits_ith(self.ctx, i)
                rows.append(np.frombuffer(self.ffi.buffer(ptr, 4 * self.n_vocab), dtype=np.float32).copy())
            return np.stack(rows)
        finally:
            self.lib.llama_batch_free(batch)

    def greedy(self, prompt: list[int], new_tokens: int) -> tuple[list[int], np.ndarray]:
        """Greedy continuation of prompt and the logits at every position of prompt + continuation
        (the last row predicts the token after the continuation)."""
        self.lib.llama_kv_cache_clear(self.ctx)
        logits = [self._decode(prompt, 0)]
        continuation: list[int] = []
        for step in range(new_tokens):
            token = int(np.argmax(logits[-1][-1]))
            continuation.append(token)
            if step + 1 < new_tokens:
                logits.append(self._decode([token], len(prompt) + step))
        return continuation, np.concatenate(logits)


def log_softmax(logits: np.ndarray) -> np.ndarray:
    x = logits.astype(np.float64)
    x -= x.max(axis=-1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


def cpt_score(cpt: str, model: Path, records: list[dict], scratch: Path) -> list[dict]:
    """`cpt score` over records, one JSON answer per record."""
    path = scratch / "score.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    out = subprocess.run([cpt, "score", "--model", str(model), "--input", str(path)],
                         capture_output=True, text=True)
    if out.returncode != 0:
        fail(f"cpt score failed:\n{out.stderr}")
    answers = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    if len(answers) != len(records):
        fail(f"cpt score answered {len(answers)} of {len(records)} records")
    return answers


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", type=Path, help="the GGUF file")
    ap.add_argument("--cpt", required=True, help="the cpt binary")
    ap.add_argument("--new-tokens", type=int, default=16, help="greedy tokens per prompt")
    ap.add_argument("--atol", type=float, help="max |delta log p| (default by weight type)")
    ap.add_argument("--json-out", type=Path, help="write the measurements here")
    ap.add_argument("--no-generate", action="store_true", help="skip the `cpt generate` text check")
    ap.add_argument("--verbose", action="store_true", help="show llama.cpp's log")
    args = ap.parse_args()
    if not args.model.is_file():
        fail(f"{args.model}: no such file")

    ok = True
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp)
        lib, ffi = load_llama_cpp(scratch)
        llm = LlamaCpp(args.model, lib, ffi, n_ctx=256, verbose=args.verbose)
        file_type_id = llm.meta("general.file_type")
        weight_type = FILE_TYPES.get(int(file_type_id), f"ftype {file_type_id}") if file_type_id else "?"
        atol = args.atol if args.atol is not None else ATOL_BY_TYPE.get(weight_type, ATOL_QUANTISED)
        print(f"llama.cpp loaded {args.model}: {llm.desc()}, weights {weight_type}, vocab {llm.n_vocab}")
        result: dict = {"file": str(args.model), "llama_cpp_desc": llm.desc(), "weight_type": weight_type}

        # 2. Tokenisation.
        start = llm.cpt_bos()
        start = llm.cpt_eos() if start is None else start
        if start is None:
            fail("the vocabulary has none of cpt's BOS or EOS names")
        print(f"llama.cpp's special ids: bos {lib.llama_vocab_bos(llm.vocab)} (added: "
              f"{bool(lib.llama_vocab_get_add_bos(llm.vocab))}), eos {lib.llama_vocab_eos(llm.vocab)}; "
              f"cpt's document start: {start}")
        records = []
        llama_ids = [llm.tokenize(s) for s in TOKENISATION_STRINGS]
        for text, ids in zip(TOKENISATION_STRINGS, llama_ids):
            records.append({"text": text})
            records.append({"context_ids": [start], "continuation_ids": ids})
        answers = cpt_score(args.cpt, args.model, records, scratch)
        tokenisation_equal = 0
        for i, (text, ids) in enumerate(zip(TOKENISATION_STRINGS, llama_ids)):
            as_text, as_ids = answers[2 * i], answers[2 * i + 1]
            same = as_text["tokens"] == len(ids) and abs(as_text["logprob"] - as_ids["logprob"]) <= 1e-9
            tokenisation_equal += same
            if not same:
                ok = False
                print(f"  tokenisation differs for {text!r}: llama.cpp {len(ids)} ids {ids}, "
                      f"cpt {as_text['tokens']} (log p {as_text['logprob']:.6f} vs {as_ids['logprob']:.6f})")
        print(f"tokenisation: {tokenisation_equal}/{len(TOKENISATION_STRINGS)} strings give llama.cpp's ids in cpt")
        result["tokenisation_equal"] = [tokenisation_equal, len(TOKENISATION_STRINGS)]

        # 3. Logits along prompt + greedy continuation.
        sequences, continuations, llama_logprobs, llama_top1 = [], [], [], []
        for prompt in PROMPTS:
            ids = [start] + llm.tokenize(prompt)
            continuation, logits = llm.greedy(ids, args.new_tokens)
            if logits.shape[1] != llm.n_vocab:
                fail(f"logits width {logits.shape[1]} != vocab {llm.n_vocab}")
            sequence = ids + continuation
            lp = log_softmax(logits)
            targets = sequence[1:]
            llama_logprobs.append([float(lp[t, tok]) for t, tok in enumerate(targets)])
            llama_top1.append([int(np.argmax(logits[t])) == tok for t, tok in enumerate(targets)])
            sequences.append(sequence)
            continuations.append(continuation)
        records = [{"context_ids": seq[: t + 1], "continuation_ids": [seq[t + 1]]}
                   for seq in sequences for t in range(len(seq) - 1)]
        answers = iter(cpt_score(args.cpt, args.model, records, scratch))
        max_delta, prompt_top1, prompt_positions, greedy_steps_equal, greedy_steps = 0.0, 0, 0, 0, 0
        per_prompt = []
        for p, seq in enumerate(sequences):
            n_prompt = len(seq) - len(continuations[p])
            deltas = []
            for t in range(len(seq) - 1):
                answer = next(answers)
                deltas.append(abs(answer["logprob"] - llama_logprobs[p][t]))
                if t + 1 < n_prompt:  # predicting a prompt token
                    prompt_positions += 1
                    prompt_top1 += answer["greedy"] == llama_top1[p][t]
                else:  # predicting llama.cpp's greedy token
                    greedy_steps += 1
                    greedy_steps_equal += bool(answer["greedy"])
            max_delta = max(max_delta, max(deltas))
            per_prompt.append({"prompt": PROMPTS[p], "ids": seq[:n_prompt], "greedy": continuations[p],
                               "max_abs_delta_logprob": max(deltas)})
            print(f"  {PROMPTS[p]!r}: {n_prompt} prompt + {len(continuations[p])} greedy tokens, "
                  f"max |delta log p| {max(deltas):.2e}, llama.cpp greedy {llm.detokenize(continuations[p])!r}")
        print(f"logits: max |delta log p| {max_delta:.3e} over {len(records)} positions (tolerance {atol:g}); "
              f"cpt's argmax = llama.cpp's greedy token at {greedy_steps_equal}/{greedy_steps} steps; "
              f"top-1 agreement at prompt positions {prompt_top1}/{prompt_positions}")
        is_float = weight_type in FLOAT_TYPES
        greedy_share = 1.0 if is_float else GREEDY_SHARE_QUANTISED
        ok &= max_delta <= atol and greedy_steps_equal >= greedy_share * greedy_steps
        result |= {"max_abs_delta_logprob": max_delta, "atol": atol, "positions": len(records),
                   "greedy_steps_equal": [greedy_steps_equal, greedy_steps],
                   "prompt_top1_agreement": [prompt_top1, prompt_positions], "prompts": per_prompt}

        # 4. Text of cpt generate vs llama.cpp's greedy continuation.
        if not args.no_generate:
            texts_equal = 0
            for p, prompt in enumerate(PROMPTS):
                out = subprocess.run([args.cpt, "generate", "--model", str(args.model), "--prompt", prompt,
                                      "--max-new-tokens", str(args.new_tokens)], capture_output=True, text=True)
                if out.returncode != 0:
                    fail(f"cpt generate failed:\n{out.stderr}")
                cpt_text = out.stdout.removesuffix("\n")
                # cpt generate starts from BOS when the vocabulary adds one, else from the prompt
                # alone, and stops at EOS; llama.cpp's continuation is made and cut alike.
                prefix = [] if llm.cpt_bos() is None else [llm.cpt_bos()]
                continuation, _ = llm.greedy(prefix + llm.tokenize(prompt), args.new_tokens)
                eos = llm.cpt_eos()
                if eos in continuation:
                    continuation = continuation[: continuation.index(eos)]
                llama_text = prompt + llm.detokenize(continuation)
                texts_equal += cpt_text == llama_text
                if cpt_text != llama_text:
                    print(f"  generate differs:\n    cpt       {cpt_text!r}\n    llama.cpp {llama_text!r}")
            print(f"generate: {texts_equal}/{len(PROMPTS)} greedy texts identical"
                  + ("" if is_float else " (reported, not required, for quantised weights)"))
            ok &= texts_equal == len(PROMPTS) or not is_float
            result["generate_texts_equal"] = [texts_equal, len(PROMPTS)]

        lib.llama_free(llm.ctx)
        lib.llama_model_free(llm.model)
    result["ok"] = bool(ok)
    if args.json_out:
        args.json_out.write_text(json.dumps(result, indent=1) + "\n")
    print("ok" if ok else "FAIL")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
