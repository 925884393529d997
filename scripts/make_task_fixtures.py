#!/usr/bin/env python3
"""Write lm-evaluation-harness reference fixtures for cpt-eval's task evaluation.

Usage (from the repository root):
    pip install lm_eval torch transformers safetensors pyarrow
    python3 scripts/make_task_fixtures.py

Runs fully offline. It writes, under cpt-eval/tests/fixtures/tasks/,

    model/          a tiny random LLaMA (config.json, model.safetensors, tokenizer.json,
                    tokenizer_config.json), vocabulary of examples/data/tokenizer.json
    data/           local data of four tasks, made from the texts in examples/data/
    *.yaml          the four task files (multiple_choice x2, loglikelihood, loglikelihood_rolling)
    reference.json  what the real lm_eval (the `hf` model, float32, max_length 64) reported for
                    them with --num_fewshot 0 and 2: per-task metrics and, per document, the
                    exact request strings (context, continuation) with their log-likelihoods

cpt-eval/tests/tasks.rs loads the same model and task files and compares against reference.json.
Every choice here is seeded, so rerunning with the same torch/transformers/lm_eval versions gives
the same files.
"""

from __future__ import annotations

import csv
import importlib.metadata
import json
import os
import random
import shutil
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
import torch  # noqa: E402

torch.use_deterministic_algorithms(True)
torch.set_num_threads(1)

import transformers  # noqa: E402
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "cpt-eval" / "tests" / "fixtures" / "tasks"
TOKENIZER = REPO / "examples" / "data" / "tokenizer.json"
TEXTS = REPO / "examples" / "data"

MAX_LENGTH = 64  # also the model's max_position_embeddings: few-shot contexts get truncated
SEED = 2024
FEWSHOT_SEED = 1234  # lm_eval's default --fewshot_random_seed
SHOTS = (0, 2)
# A document whose two best choices are closer than this (in summed or normalised
# log-likelihood) would let float32 rounding decide acc/acc_norm; the script refuses it.
MIN_CHOICE_MARGIN = 1e-3

MODEL = dict(
    vocab_size=1024,
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=MAX_LENGTH,
    rms_norm_eps=1e-5,
    initializer_range=0.08,
    bos_token_id=0,
    eos_token_id=0,
    pad_token_id=None,
    hidden_act="silu",
    tie_word_embeddings=True,
)


def write_model(folder: Path) -> None:
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    torch.manual_seed(SEED)
    model = AutoModelForCausalLM.from_config(
        LlamaConfig(**MODEL), attn_implementation="eager", dtype=torch.float32
    )
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(1.0 + 0.1 * torch.randn_like(p))
    model.save_pretrained(folder, safe_serialization=True)
    shutil.copy(TOKENIZER, folder / "tokenizer.json")
    # lm_eval's prefix token is the tokenizer's BOS (else EOS): name them, or it has neither.
    (folder / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "tokenizer_class": "PreTrainedTokenizerFast",
                "bos_token": "<|endoftext|>",
                "eos_token": "<|endoftext|>",
                "model_max_length": MAX_LENGTH,
            },
            indent=2,
        )
        + "\n"
    )


def words_of(domain: str, split: str) -> list[list[str]]:
    texts = pq.read_table(TEXTS / domain / f"{split}.parquet").column("text").to_pylist()
    return [t.split() for t in texts]


def spans(rng: random.Random, texts: list[list[str]], count: int, lengths: tuple[int, int]):
    """`count` runs of consecutive words, each from a random text at a random place."""
    out = []
    while len(out) < count:
        words = rng.choice(texts)
        n = rng.randint(*lengths)
        if len(words) < n + 1:
            continue
        start = rng.randrange(len(words) - n)
        out.append(words[start : start + n])
    return out


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def continuation_docs(rng: random.Random, texts, count: int) -> list[dict]:
    """Multiple choice: which of four endings follows the context (endings of 1 to 8 words)."""
    docs = []
    for span in spans(rng, texts, count, (8, 20)):
        cut = rng.randint(4, len(span) - 2)
        true_end = " ".join(span[cut : cut + rng.randint(1, 8)])
        others = [" ".join(s) for s in spans(rng, texts, 3, (1, 8))]
        endings = others + [true_end]
        rng.shuffle(endings)
        docs.append(
            {
                "context": " ".join(span[:cut]) + (" " if rng.random() < 0.2 else ""),
                "endings": endings,
                "label": endings.index(true_end),
            }
        )
    return docs


def write_data(out: Path) -> dict[str, list[str]]:
    data = out / "data"
    if data.exists():
        shutil.rmtree(data)
    rng = random.Random(SEED)
    prose = words_of("austen", "train") + words_of("shakespeare", "train")

    # 1. continuation_mc: JSON Lines, train/validation/test, Jinja templates throughout.
    for split, n in (("train", 10), ("validation", 5), ("test", 20)):
        write_jsonl(data / "continuation" / f"{split}.jsonl", continuation_docs(rng, prose, n))

    # 2. author_mc: CSV, one validation split (few-shot pool = the evaluated split), gold as the
    #    choice's text, a literal choice list, and a context ending in a newline.
    authors = ["Jane Austen", "William Shakespeare", "the Rust project"]
    sources = {
        "Jane Austen": words_of("austen", "eval"),
        "William Shakespeare": words_of("shakespeare", "eval"),
        "the Rust project": words_of("rust", "eval"),
    }
    rows = []
    for i in range(15):
        author = authors[i % 3]
        (span,) = spans(rng, sources[author], 1, (5, 14))
        rows.append({"id": i, "passage": " ".join(span), "author": author})
    (data / "author").mkdir(parents=True)
    with (data / "author" / "validation.csv").open("w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=["id", "passage", "author"])
        w.writeheader()
        w.writerows(rows)

    # 3. ending_ll: Parquet, test + train; the target is the next few words.
    (data / "ending").mkdir(parents=True)
    for split, n in (("test", 16), ("train", 6)):
        docs = []
        for span in spans(rng, prose, n, (6, 16)):
            cut = rng.randint(3, len(span) - 1)
            docs.append({"context": " ".join(span[:cut]), "ending": " ".join(span[cut:])})
        pq.write_table(pa.Table.from_pylist(docs), data / "ending" / f"{split}.parquet")

    # 4. passages_rolling: a local folder with test.jsonl; passages longer than MAX_LENGTH
    #    tokens, so that they need several rolling windows, plus a short one.
    passages = []
    for domain in ("austen", "shakespeare", "rust"):
        for text in pq.read_table(TEXTS / domain / "eval.parquet").column("text").to_pylist()[:2]:
            passages.append({"text": text[: rng.randint(150, 600)]})
    passages.append({"text": "A short one."})
    write_jsonl(data / "passages" / "test.jsonl", passages)
    return {}


TASKS = {
    "continuation_mc.yaml": """\
task: continuation_mc
tag: cpt_fixtures
dataset_path: json
dataset_name: null
dataset_kwargs:
  data_files:
    train: data/continuation/train.jsonl
    validation: data/continuation/validation.jsonl
    test: data/continuation/test.jsonl
training_split: train
validation_split: validation
test_split: test
output_type: multiple_choice
description: "Pick the continuation.\\n\\n"
doc_to_text: "{{ context.strip() }}\\nContinuation:"
doc_to_choice: "{{ endings }}"
doc_to_target: "{{ label }}"
metadata:
  version: 1.0
""",
    "author_mc.yaml": """\
task: author_mc
dataset_path: csv
dataset_kwargs:
  data_files:
    validation: data/author/validation.csv
validation_split: validation
output_type: multiple_choice
doc_to_text: "Passage: {{ passage }}\\nAuthor:\\n"
doc_to_choice: ["Jane Austen", "William Shakespeare", "the Rust project"]
doc_to_target: author
target_delimiter: ""
fewshot_delimiter: "\\n###\\n"
fewshot_config:
  sampler: first_n
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
  - metric: acc_norm
    aggregation: mean
    higher_is_better: true
""",
    "ending_ll.yaml": """\
task: ending_ll
dataset_path: parquet
dataset_kwargs:
  data_files:
    test: data/ending/test.parquet
    train: data/ending/train.parquet
test_split: test
fewshot_split: train
output_type: loglikelihood
doc_to_text: "{{ context }}"
doc_to_target: "{{ ' ' + ending }}"
metric_list:
  - metric: perplexity
  - metric: acc
""",
    "passages_rolling.yaml": """\
task: passages_rolling
dataset_path: data/passages
test_split: test
output_type: loglikelihood_rolling
doc_to_text: ""
doc_to_target: text
should_decontaminate: true
doc_to_decontamination_query: text
metric_list:
  - metric: word_perplexity
  - metric: byte_perplexity
  - metric: bits_per_byte
""",
}


def greedy_targets(model_dir: Path, data_dir: Path) -> None:
    """Replace some ending_ll targets by the model's greedy continuation (so `acc` is not 0 for
    every document), keeping only those whose tokens survive lm_eval's context/continuation
    split and whose argmax wins by a clear margin."""
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    model.eval()
    path = data_dir / "ending" / "test.parquet"
    docs = pq.read_table(path).to_pylist()
    replaced = 0
    for doc in docs[::2]:
        ctx_ids = tok.encode(doc["context"])
        ids = list(ctx_ids)
        with torch.no_grad():
            for _ in range(3):
                logits = model(torch.tensor([ids])).logits[0, -1]
                top2 = logits.topk(2).values
                if (top2[0] - top2[1]).item() < 0.05:
                    break
                ids.append(int(logits.argmax()))
        cont = ids[len(ctx_ids) :]
        if not cont:
            continue
        text = tok.decode(cont)
        if not text.startswith(" ") or text.strip() == "":
            continue
        whole = tok.encode(doc["context"] + text)
        if whole[: len(ctx_ids)] != ctx_ids or whole[len(ctx_ids) :] != cont:
            continue
        doc["ending"] = text[1:]
        replaced += 1
    pq.write_table(pa.Table.from_pylist(docs), path)
    print(f"ending_ll: {replaced} targets are the model's greedy continuation", file=sys.stderr)


def normalise_samples(task: str, samples: list[dict]) -> list[dict]:
    out = []
    for s in sorted(samples, key=lambda s: s["doc_id"]):
        args = [list(a) for a in s["arguments"]]
        resps = [r[0] for r in s["resps"]]
        if task == "passages_rolling":
            out.append({"doc_id": s["doc_id"], "text": args[0][0], "loglik": resps[0]})
            continue
        contexts = {a[0] for a in args}
        assert len(contexts) == 1, contexts
        out.append(
            {
                "doc_id": s["doc_id"],
                "context": args[0][0],
                "continuations": [a[1] for a in args],
                "logliks": [r[0] for r in resps],
                "greedy": [bool(r[1]) for r in resps],
            }
        )
    return out


def check_margins(task: str, samples: list[dict]) -> None:
    for s in samples:
        lls = s.get("logliks")
        if not lls or len(lls) < 2:
            continue
        conts = [c.lstrip() if task == "author_mc" else c[1:] for c in s["continuations"]]
        for scores in (lls, [ll / len(c) for ll, c in zip(lls, conts)]):
            best = sorted(scores, reverse=True)
            if best[0] - best[1] < MIN_CHOICE_MARGIN:
                raise SystemExit(f"{task} doc {s['doc_id']}: choices within {MIN_CHOICE_MARGIN}")


def run_lm_eval(out: Path) -> dict:
    import lm_eval
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    # lm_eval (through `datasets`) resolves relative data paths against the working directory;
    # cpt resolves them against the task file's folder. Running from that folder makes them agree.
    os.chdir(out)
    manager = TaskManager(include_path=str(out))
    tasks = [name.removesuffix(".yaml") for name in TASKS]
    runs = {}
    for shots in SHOTS:
        result = simple_evaluate(
            model="hf",
            model_args=f"pretrained={out / 'model'},dtype=float32,max_length={MAX_LENGTH},device=cpu",
            tasks=tasks,
            num_fewshot=shots,
            batch_size=4,
            log_samples=True,
            task_manager=manager,
            fewshot_random_seed=FEWSHOT_SEED,
            bootstrap_iters=100,
        )
        run = {}
        for task in tasks:
            metrics = {
                key.split(",")[0]: value
                for key, value in result["results"][task].items()
                if "," in key and isinstance(value, (int, float))
            }
            samples = normalise_samples(task, result["samples"][task])
            check_margins(task, samples)
            run[task] = {"metrics": metrics, "samples": samples}
        runs[str(shots)] = run
    return {
        "lm_eval": importlib.metadata.version("lm_eval"),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "max_length": MAX_LENGTH,
        "prefix_token": 0,
        "fewshot_seed": FEWSHOT_SEED,
        "runs": runs,
    }


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    write_model(OUT / "model")
    write_data(OUT)
    greedy_targets(OUT / "model", OUT / "data")
    for name, text in TASKS.items():
        (OUT / name).write_text(text)
    reference = run_lm_eval(OUT)
    (OUT / "reference.json").write_text(json.dumps(reference, indent=1, ensure_ascii=False) + "\n")
    size = sum(f.stat().st_size for f in OUT.rglob("*") if f.is_file())
    print(f"wrote {OUT} ({size / 1024:.0f} KiB)", file=sys.stderr)


if __name__ == "__main__":
    main()
