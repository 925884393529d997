#!/usr/bin/env python3
"""Build cpt's bundled downstream tasks under examples/tasks/ from the bundled eval texts.

Usage:
    python3 scripts/make_task_data.py

Reads examples/data/{austen,shakespeare,rust}/eval.parquet (held-out text no run trains on) and
writes, for each task, a JSONL file of documents and an lm-evaluation-harness task YAML that
points at it (so `lm_eval --include_path examples/tasks` runs them too):

    cloze_austen       multiple choice: a passage of prose, then which of four sentences comes
                       next (the true one, three from elsewhere in the same novels)
    cloze_shakespeare  the same over lines of verse and dialogue
    rust_next_line     multiple choice: a few lines of Rust standard-library source, then which
                       of four lines comes next (the true one, three from other places)
    austen_last_word   loglikelihood (LAMBADA-style): a passage, then its last word
    rust_docs_rolling  loglikelihood_rolling: word/byte perplexity of whole Rust snippets

Each document: {"context": str, "choices": [str, ...], "label": int} for multiple choice,
{"context": str, "target": str} for loglikelihood, {"text": str} for rolling. Distractors are
drawn from the same domain, so a model must read the context, not just know the domain.

Deterministic: one random.Random(seed) per task, documents in file order. Requires pyarrow.
"""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "examples" / "data"
OUT = ROOT / "examples" / "tasks"

DOCS_PER_TASK = 100
CHOICES = 4


def texts(domain: str) -> list[str]:
    return [row["text"] for row in pq.read_table(DATA / domain / "eval.parquet").to_pylist()]


def sentences(text: str) -> list[str]:
    """Prose sentences, whitespace collapsed, of a length worth predicting."""
    flat = re.sub(r"\s+", " ", text)
    parts: list[str] = []
    for part in re.split(r"(?<=[.!?])\s+(?=[A-Z\"'])", flat):
        # "Mr. Weston" is one sentence: glue back what a title's full stop split off.
        if parts and re.search(r"\b(Mr|Mrs|Dr|St|Col)\.$", parts[-1]):
            parts[-1] += " " + part
        else:
            parts.append(part)
    return [p.strip() for p in parts if 25 <= len(p.strip()) <= 200]


def verse_lines(text: str) -> list[str]:
    return [l.strip() for l in text.splitlines() if 20 <= len(l.strip()) <= 120]


def code_lines(text: str) -> list[str]:
    return [l.rstrip() for l in text.splitlines() if len(l.strip()) >= 12]


def choice_docs(units_per_text: list[list[str]], context_len: int, joiner: str, seed: int) -> list[dict]:
    """Multiple-choice documents: `context_len` consecutive units, then the true next unit among
    distractors drawn from the whole pool (never equal to it)."""
    rng = random.Random(seed)
    pool = [u for units in units_per_text for u in units]
    windows = [
        (units, i)
        for units in units_per_text
        for i in range(context_len, len(units))
    ]
    rng.shuffle(windows)
    docs = []
    for units, i in windows[:DOCS_PER_TASK]:
        truth = units[i]
        distractors = []
        while len(distractors) < CHOICES - 1:
            d = rng.choice(pool)
            if d != truth and d not in distractors:
                distractors.append(d)
        label = rng.randrange(CHOICES)
        choices = distractors[:label] + [truth] + distractors[label:]
        docs.append({"context": joiner.join(units[i - context_len : i]), "choices": choices, "label": label})
    return docs


def last_word_docs(texts_: list[str], seed: int) -> list[dict]:
    rng = random.Random(seed)
    passages = []
    for text in texts_:
        sents = sentences(text)
        for i in range(2, len(sents)):
            passage = " ".join(sents[i - 2 : i + 1])
            words = passage.split(" ")
            last = words[-1].rstrip(".!?,;:\"'")
            if len(words) > 12 and last.isalpha():
                cut = passage.rindex(last)
                passages.append({"context": passage[:cut].rstrip(), "target": last})
    rng.shuffle(passages)
    return passages[:DOCS_PER_TASK]


def rolling_docs(texts_: list[str], seed: int) -> list[dict]:
    rng = random.Random(seed)
    snippets = []
    for text in texts_:
        lines = text.splitlines()
        for start in range(0, len(lines) - 20, 20):
            snippet = "\n".join(lines[start : start + 20]).strip()
            if len(snippet) > 200:
                snippets.append({"text": snippet})
    rng.shuffle(snippets)
    return snippets[: DOCS_PER_TASK // 2]


MC_METRICS = """metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
  - metric: acc_norm
    aggregation: mean
    higher_is_better: true
"""


def multiple_choice_yaml(name: str, about: str, delimiter: str) -> str:
    return f"""# {about}
# Made by scripts/make_task_data.py from examples/data (held-out eval text).
task: {name}
dataset_path: json
dataset_kwargs:
  data_files:
    test: {name}.jsonl
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{context}}}}"
doc_to_choice: choices
doc_to_target: label
target_delimiter: {json.dumps(delimiter)}
{MC_METRICS}"""


def write(name: str, docs: list[dict], yaml: str) -> None:
    with open(OUT / f"{name}.jsonl", "w", encoding="utf-8") as f:
        for d in docs:
            f.write(json.dumps(d, ensure_ascii=False) + "\n")
    (OUT / f"{name}.yaml").write_text(yaml, encoding="utf-8")
    print(f"{name}: {len(docs)} documents")


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    austen, shakespeare, rust = texts("austen"), texts("shakespeare"), texts("rust")

    write(
        "cloze_austen",
        choice_docs([sentences(t) for t in austen], 3, " ", seed=1),
        multiple_choice_yaml("cloze_austen", "Which sentence of Jane Austen's prose comes next?", " "),
    )
    write(
        "cloze_shakespeare",
        choice_docs([verse_lines(t) for t in shakespeare], 4, "\n", seed=2),
        multiple_choice_yaml("cloze_shakespeare", "Which line of Shakespeare comes next?", "\n"),
    )
    write(
        "rust_next_line",
        choice_docs([code_lines(t) for t in rust], 6, "\n", seed=3),
        multiple_choice_yaml("rust_next_line", "Which line of Rust source comes next?", "\n"),
    )
    write(
        "austen_last_word",
        last_word_docs(austen, seed=4),
        """# LAMBADA-style: the last word of a passage of Jane Austen's prose.
# Made by scripts/make_task_data.py from examples/data (held-out eval text).
task: austen_last_word
dataset_path: json
dataset_kwargs:
  data_files:
    test: austen_last_word.jsonl
test_split: test
output_type: loglikelihood
doc_to_text: "{{context}}"
doc_to_target: "{{' ' + target}}"
target_delimiter: ""
metric_list:
  - metric: perplexity
    aggregation: perplexity
    higher_is_better: false
  - metric: acc
    aggregation: mean
    higher_is_better: true
""",
    )
    write(
        "rust_docs_rolling",
        rolling_docs(rust, seed=5),
        """# Word and byte perplexity of whole Rust snippets (held-out standard-library source).
# Made by scripts/make_task_data.py from examples/data (held-out eval text).
task: rust_docs_rolling
dataset_path: json
dataset_kwargs:
  data_files:
    test: rust_docs_rolling.jsonl
test_split: test
output_type: loglikelihood_rolling
doc_to_text: ""
doc_to_target: "{{text}}"
metric_list:
  - metric: word_perplexity
  - metric: byte_perplexity
  - metric: bits_per_byte
""",
    )


if __name__ == "__main__":
    main()
