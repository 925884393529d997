#!/usr/bin/env python3
"""Build cpt's small bundled real-data stream under examples/data/.

Usage:
    python3 scripts/make_example_data.py [/path/to/corpora]

The corpora directory (default: ../shared/corpora relative to the repository root) must hold
PROVENANCE.md and text/{prose_austen,prose_shakespeare,code_rust}.parquet with the columns
domain, source, doc_id, split (train|eval), n_chars, text.

Writes, for each domain (austen, shakespeare, rust):
    examples/data/<domain>/train.parquet   ~200k text chars from the corpus train split
    examples/data/<domain>/eval.parquet    ~32k text chars from the corpus eval split
and examples/data/tokenizer.json (byte-level BPE, vocab 1024, trained on the union of the three
train files) and examples/data/PROVENANCE.md.

Everything is deterministic: documents are ordered by sha256(doc_id), chunking depends only on
the text, and the Parquet/tokenizer writers are run with fixed settings, so two runs with the
same pyarrow/tokenizers versions give byte-identical files.

Requires: pip install pyarrow tokenizers
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import tokenizers
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

REPO_ROOT = Path(__file__).resolve().parent.parent
OUT_DIR = REPO_ROOT / "examples" / "data"

# domain name -> corpus file (under <corpora>/text/)
DOMAINS = [
    ("austen", "prose_austen.parquet"),
    ("shakespeare", "prose_shakespeare.parquet"),
    ("rust", "code_rust.parquet"),
]

TRAIN_TARGET_CHARS = 200_000  # stop adding chunks once this many chars are taken
EVAL_TARGET_CHARS = 32_000
# Once a source document has contributed target // MAX_DOC_SHARE chars (a leading run of its
# chunks), move on to the next one, so a split spans several novels / plays / source files.
MAX_DOC_SHARE = 4

CHUNK_CHARS = 4_000  # documents longer than this are cut into ~CHUNK_CHARS pieces
CHUNK_HARD_CHARS = 5_000  # a chunk never grows past this (unless a single line is longer)

# Row groups are kept small so that even the ~60-row prose train files have several of them
# and readers exercise multi-row-group files.
ROW_GROUP_ROWS = 32
ZSTD_LEVEL = 9

VOCAB_SIZE = 1024
SPECIAL_TOKEN = "<|endoftext|>"
MIN_FREQUENCY = 2

REGEN_COMMAND = "python3 scripts/make_example_data.py /path/to/corpora"


# --------------------------------------------------------------------------------------------
# Chunking and selection
# --------------------------------------------------------------------------------------------


def chunk_text(text: str) -> list[str]:
    """Cut text at line boundaries into pieces of about CHUNK_CHARS characters.

    The pieces concatenate back to exactly `text`. A text of at most CHUNK_CHARS characters is
    returned whole. Otherwise the target piece length is len/ceil(len/CHUNK_CHARS) (balanced
    pieces, no tiny tail); a piece ends after a blank line once it reaches the target
    (paragraph / item boundary), or before any line that would take it past CHUNK_HARD_CHARS.
    """
    if len(text) <= CHUNK_CHARS:
        return [text]
    target = len(text) / math.ceil(len(text) / CHUNK_CHARS)
    pieces: list[str] = []
    cur: list[str] = []
    cur_len = 0
    for line in text.splitlines(keepends=True):
        if cur and cur_len + len(line) > CHUNK_HARD_CHARS:
            pieces.append("".join(cur))
            cur, cur_len = [], 0
        cur.append(line)
        cur_len += len(line)
        if cur_len >= target and line.strip() == "":
            pieces.append("".join(cur))
            cur, cur_len = [], 0
    if cur:
        pieces.append("".join(cur))
    assert "".join(pieces) == text
    return pieces


def doc_order_key(doc_id: str) -> str:
    return hashlib.sha256(doc_id.encode("utf-8")).hexdigest()


@dataclass
class Selection:
    ids: list[str] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    source_docs: list[str] = field(default_factory=list)  # corpus doc_ids used, in order
    whole_docs: int = 0  # source docs taken whole (not chunked)
    chunked_docs: int = 0  # source docs cut into chunks (all or a prefix of them taken)
    truncated_docs: int = 0  # source docs of which only a prefix of chunks was taken

    @property
    def n_chars(self) -> int:
        return sum(len(t) for t in self.texts)


def select(docs: list[dict], target_chars: int) -> Selection:
    """Take documents in sha256(doc_id) order, chunked, until target_chars are reached."""
    per_doc_cap = target_chars // MAX_DOC_SHARE
    sel = Selection()
    for doc in sorted(docs, key=lambda d: doc_order_key(d["doc_id"])):
        if sel.n_chars >= target_chars:
            break
        text = doc["text"]
        if not text.strip():
            continue
        pieces = chunk_text(text)
        taken = 0
        n_taken = 0
        for k, piece in enumerate(pieces):
            if sel.n_chars >= target_chars:
                break
            if taken >= per_doc_cap:
                break
            sel.ids.append(doc["doc_id"] if len(pieces) == 1 else f"{doc['doc_id']}#{k}")
            sel.texts.append(piece)
            taken += len(piece)
            n_taken += 1
        if n_taken == 0:
            continue
        sel.source_docs.append(doc["doc_id"])
        if len(pieces) == 1:
            sel.whole_docs += 1
        else:
            sel.chunked_docs += 1
            if n_taken < len(pieces):
                sel.truncated_docs += 1
    return sel


# --------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------

HF_METADATA = {
    "info": {
        "features": {
            "id": {"dtype": "string", "_type": "Value"},
            "text": {"dtype": "string", "_type": "Value"},
        }
    }
}


def write_parquet(path: Path, sel: Selection) -> None:
    schema = pa.schema(
        [pa.field("id", pa.string()), pa.field("text", pa.string())],
        metadata={"huggingface": json.dumps(HF_METADATA, sort_keys=True)},
    )
    table = pa.table({"id": sel.ids, "text": sel.texts}, schema=schema)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(
        table,
        path,
        row_group_size=ROW_GROUP_ROWS,
        compression="zstd",
        compression_level=ZSTD_LEVEL,
        # No dictionary and no min/max statistics for the long `text` values: they would only
        # bloat the file (statistics copy whole documents into the footer and page headers).
        use_dictionary=["id"],
        write_statistics=["id"],
    )


def train_tokenizer(texts: list[str], path: Path) -> Tokenizer:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        min_frequency=MIN_FREQUENCY,
        special_tokens=[SPECIAL_TOKEN],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer, length=len(texts))
    assert tok.token_to_id(SPECIAL_TOKEN) == 0, "special token must have id 0"
    assert tok.get_vocab_size() == VOCAB_SIZE, tok.get_vocab_size()
    tok.save(str(path), pretty=True)
    return tok


# --------------------------------------------------------------------------------------------
# Provenance
# --------------------------------------------------------------------------------------------


def corpus_rows(provenance_md: str) -> dict[str, tuple[str, list[str]]]:
    """Map corpus file name -> (verbatim table line, cells) from the corpora PROVENANCE.md."""
    rows = {}
    for line in provenance_md.splitlines():
        m = re.match(r"^\|\s*([\w.]+\.parquet)\s*\|", line)
        if m:
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            rows[m.group(1)] = (line, cells)
    return rows


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def rel(path: Path) -> str:
    return path.relative_to(REPO_ROOT).as_posix()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "corpora",
        nargs="?",
        default=str(REPO_ROOT.parent / "shared" / "corpora"),
        help="corpora directory (default: ../shared/corpora relative to the repo root)",
    )
    args = ap.parse_args()
    corpora = Path(args.corpora).resolve()
    prov_src = corpora / "PROVENANCE.md"
    if not prov_src.is_file():
        sys.exit(f"error: {prov_src} not found")
    rows = corpus_rows(prov_src.read_text(encoding="utf-8"))

    OUT_DIR.mkdir(parents=True, exist_ok=True)
    report = []  # per domain: dict of facts for PROVENANCE.md
    train_texts: list[str] = []

    for domain, corpus_file in DOMAINS:
        src = corpora / "text" / corpus_file
        if corpus_file not in rows:
            sys.exit(f"error: {corpus_file} has no row in {prov_src}")
        docs = pq.read_table(src, columns=["doc_id", "split", "text"]).to_pylist()
        train_docs = [d for d in docs if d["split"] == "train"]
        eval_docs = [d for d in docs if d["split"] == "eval"]

        train = select(train_docs, TRAIN_TARGET_CHARS)
        eval_total = sum(len(d["text"]) for d in eval_docs)
        eval_from_train = eval_total < EVAL_TARGET_CHARS
        if eval_from_train:
            # The eval split is too small: hold out train documents not used in train.parquet.
            used = set(train.source_docs)
            pool = eval_docs + [d for d in train_docs if d["doc_id"] not in used]
            evl = select(pool, EVAL_TARGET_CHARS)
        else:
            evl = select(eval_docs, EVAL_TARGET_CHARS)
        assert not set(train.source_docs) & set(evl.source_docs), "train/eval overlap"

        for split, sel in (("train", train), ("eval", evl)):
            write_parquet(OUT_DIR / domain / f"{split}.parquet", sel)
        train_texts.extend(train.texts)
        report.append(
            dict(
                domain=domain,
                corpus_file=corpus_file,
                corpus_sha256=sha256_file(src),
                corpus_docs=len(docs),
                corpus_train_docs=len(train_docs),
                corpus_eval_docs=len(eval_docs),
                train=train,
                eval=evl,
                eval_from_train=eval_from_train,
            )
        )

    tok_path = OUT_DIR / "tokenizer.json"
    train_tokenizer(train_texts, tok_path)

    write_provenance(corpora, rows, report, tok_path, sum(len(t) for t in train_texts), len(train_texts))
    return 0


def describe(sel: Selection) -> str:
    parts = [f"{sel.whole_docs} whole"]
    if sel.chunked_docs:
        parts.append(f"{sel.chunked_docs} chunked")
    if sel.truncated_docs:
        parts.append(f"of which {sel.truncated_docs} only a leading run of chunks")
    return f"{len(sel.source_docs)} source docs ({', '.join(parts)})"


def write_provenance(corpora, rows, report, tok_path, tok_chars, tok_docs) -> None:
    L = []
    L.append("# Provenance of `examples/data/`")
    L.append("")
    L.append("Small real-data stream bundled with cpt for examples and tests: three text domains")
    L.append("(`austen`, `shakespeare`, `rust`), each with a train and an eval Parquet file, and a")
    L.append("byte-level BPE tokenizer trained on the three train files.")
    L.append("")
    L.append("**Everything here is generated** by `scripts/make_example_data.py` from the offline")
    L.append("corpora described below; do not edit by hand. Regenerate with:")
    L.append("")
    L.append("```sh")
    L.append(REGEN_COMMAND)
    L.append("```")
    L.append("")
    L.append(
        f"(generated with Python {sys.version.split()[0]}, pyarrow {pa.__version__}, "
        f"tokenizers {tokenizers.__version__}; the script is deterministic, so rerunning it with the"
    )
    L.append("same versions reproduces these files byte for byte.)")
    L.append("")
    L.append("## Sources")
    L.append("")
    L.append("Copied verbatim from the corpora's `PROVENANCE.md` (text section):")
    L.append("")
    L.append("| file | what | source package | licence | docs | train chars |")
    L.append("|---|---|---|---|---|---|")
    for r in report:
        L.append(rows[r["corpus_file"]][0])
    L.append("")
    L.append("Corpus columns: `domain`, `source`, `doc_id`, `split` (`train` | `eval`, a deterministic")
    L.append("~5% hold-out by sha256 of `doc_id`), `n_chars`, `text`. Corpus files used (sha256):")
    L.append("")
    for r in report:
        L.append(
            f"- `text/{r['corpus_file']}` — `{r['corpus_sha256']}` "
            f"({r['corpus_docs']} docs: {r['corpus_train_docs']} train, {r['corpus_eval_docs']} eval)"
        )
    for r in report:
        listed = rows[r["corpus_file"]][1][4].replace(",", "")
        if listed.isdigit() and int(listed) != r["corpus_docs"]:
            L.append("")
            L.append(
                f"Note: the corpora table lists {listed} docs for `{r['corpus_file']}`, but the file as read"
            )
            L.append(f"holds {r['corpus_docs']} rows; the counts here are from the file itself.")
    L.append("")
    L.append("## How the slices were taken")
    L.append("")
    L.append("- Documents of the split are taken in a fixed order: ascending sha256 of the corpus `doc_id`.")
    L.append(
        f"- A document longer than {CHUNK_CHARS:,} characters is cut at line boundaries into pieces of about"
    )
    L.append(
        f"  {CHUNK_CHARS:,} characters (balanced lengths; a piece ends after a blank line once it reaches its"
    )
    L.append(
        f"  target length, and never grows past {CHUNK_HARD_CHARS:,} characters); pieces get the id"
    )
    L.append(
        "  `<doc_id>#<k>` (k from 0) and concatenate back to the original text exactly. Shorter documents"
    )
    L.append("  keep their `doc_id` unchanged.")
    L.append(
        "- From each source document only a leading run of its pieces is taken, stopping once it has given"
    )
    L.append(
        "  a quarter of the file's character target, so each file spans several chapters / works / files."
    )
    L.append(
        f"- Pieces are added until the file holds at least {TRAIN_TARGET_CHARS:,} (train) or"
    )
    L.append(f"  {EVAL_TARGET_CHARS:,} (eval) characters. Whitespace-only documents are skipped.")
    L.append("- `train.parquet` comes from the corpus `train` split, `eval.parquet` from the corpus `eval`")
    L.append("  split; no source document appears in both.")
    L.append("")
    L.append("Layout (Hugging Face datasets style): columns `id` (string), `text` (string); zstd")
    L.append(
        f"(level {ZSTD_LEVEL}); row groups of {ROW_GROUP_ROWS} rows, so the train files have several row groups."
    )
    L.append("")
    L.append("## Files")
    L.append("")
    L.append("| file | from | source package | version | licence | rows | row groups | text chars | bytes |")
    L.append("|---|---|---|---|---|---|---|---|---|")
    for r in report:
        cells = rows[r["corpus_file"]][1]
        pkg_cell, licence = cells[2], cells[3]
        version = package_version(pkg_cell)
        for split in ("train", "eval"):
            sel = r[split]
            path = OUT_DIR / r["domain"] / f"{split}.parquet"
            md = pq.ParquetFile(path).metadata
            if split == "eval" and r["eval_from_train"]:
                origin = f"`{r['corpus_file']}` eval split + held-out train docs not in train.parquet"
            else:
                origin = f"`{r['corpus_file']}` {split} split"
            L.append(
                f"| `{rel(path)}` | {origin} | {pkg_cell} | {version} | {licence} | {md.num_rows} | "
                f"{md.num_row_groups} | {sel.n_chars:,} | {path.stat().st_size:,} |"
            )
    L.append("")
    for r in report:
        L.append(f"- **{r['domain']}** — train: {describe(r['train'])}; eval: {describe(r['eval'])}.")
        if r["eval_from_train"]:
            L.append(
                f"  The corpus eval split was smaller than {EVAL_TARGET_CHARS:,} characters, so eval.parquet"
            )
            L.append("  also uses held-out train-split documents that are not in train.parquet.")
    L.append("")
    L.append("## Tokenizer — `examples/data/tokenizer.json`")
    L.append("")
    L.append(
        "Trained by `scripts/make_example_data.py` with the Python `tokenizers` library "
        f"({tokenizers.__version__}) on the union"
    )
    L.append(
        f"of the three `train.parquet` files ({tok_docs} rows, {tok_chars:,} characters; austen, shakespeare,"
    )
    L.append("rust in that order): byte-level BPE, `vocab_size` 1024, `min_frequency` 2, special token")
    L.append("`<|endoftext|>` (id 0), ByteLevel pre-tokenizer (`add_prefix_space=False`), ByteLevel decoder,")
    L.append("ByteLevel post-processor (`trim_offsets=False`), initial alphabet `ByteLevel.alphabet()`.")
    L.append(f"Licence: derived from the texts above. Size {tok_path.stat().st_size:,} bytes.")
    L.append("")
    L.append("## Checksums (sha256)")
    L.append("")
    for r in report:
        for split in ("train", "eval"):
            path = OUT_DIR / r["domain"] / f"{split}.parquet"
            L.append(f"- `{rel(path)}` `{sha256_file(path)}`")
    L.append(f"- `{rel(tok_path)}` `{sha256_file(tok_path)}`")
    L.append("")
    (OUT_DIR / "PROVENANCE.md").write_text("\n".join(L), encoding="utf-8")


def package_version(pkg_cell: str) -> str:
    """The version as written in the corpora PROVENANCE.md source-package cell."""
    m = re.search(r"`[^`]*==([^`]+)`", pkg_cell)  # PyPI `name==ver`
    if m:
        return m.group(1)
    m = re.search(r"`[^`]+`\s+([0-9][^\s(]*)", pkg_cell)  # Debian `name` ver
    if m:
        return m.group(1)
    return "(see source package)"


if __name__ == "__main__":
    sys.exit(main())
