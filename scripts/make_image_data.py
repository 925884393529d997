#!/usr/bin/env python3
"""Build cpt's small bundled image streams under examples/data/{digits,fashion}/.

Usage:
    python3 scripts/make_image_data.py [/path/to/corpora]

The corpora directory (default: ../shared/corpora relative to the repository root) must hold
PROVENANCE.md and images/{digits,fashion_mnist_test}.parquet in the Hugging Face datasets image
layout: `image` = struct {bytes: PNG, path: null}, `label` (int64), `caption` (string).
cpt never reads that directory at run time; only a developer running this script does.

Writes:
    examples/data/digits/train.parquet    ~85% of each digit class (all 1,797 images in total)
    examples/data/digits/eval.parquet     the other ~15%
    examples/data/fashion/train.parquet   300 images per Fashion-MNIST class (3,000)
    examples/data/fashion/eval.parquet    60 images per class (600), disjoint from train
and replaces the "Images" section of examples/data/PROVENANCE.md (between the markers below),
appending it if absent, so that it survives a rerun of scripts/make_example_data.py only if this
script is rerun after it.

Deterministic: inside each class, rows are ordered by sha256 of their PNG bytes (ties by source
row), the first rows of that order go to eval and the next ones to train; the rows of a split are
then interleaved class by class (0, 1, ..., 9, 0, 1, ...), so any prefix of a file is close to
class-balanced. The PNG bytes are copied verbatim (no re-encoding).

Requires: pip install pyarrow
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

REPO_ROOT = Path(__file__).resolve().parent.parent
OUT_DIR = REPO_ROOT / "examples" / "data"
PROVENANCE = OUT_DIR / "PROVENANCE.md"
BEGIN_MARK = "<!-- make_image_data.py: begin -->"
END_MARK = "<!-- make_image_data.py: end -->"

FASHION_CLASSES = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]
DIGIT_CLASSES = [str(d) for d in range(10)]

# (output name, corpus file, class names, how many per class go to eval, to train (None = rest))
SETS = [
    ("digits", "digits.parquet", DIGIT_CLASSES, "fraction", 0.15),
    ("fashion", "fashion_mnist_test.parquet", FASHION_CLASSES, "counts", (60, 300)),
]

# Small row groups so even the eval files have several and readers exercise multi-row-group files.
ROW_GROUP_ROWS = {"train": 256, "eval": 128}
ZSTD_LEVEL = 9

REGEN_COMMAND = "python3 scripts/make_image_data.py /path/to/corpora"


def hf_metadata(class_names: list[str]) -> dict:
    # What `datasets` writes, so that `load_dataset("parquet", ...)` decodes `image` as an Image
    # and `label` as a ClassLabel with names.
    return {
        "info": {
            "features": {
                "image": {"_type": "Image"},
                "label": {"_type": "ClassLabel", "names": class_names},
                "caption": {"_type": "Value", "dtype": "string"},
            }
        }
    }


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def split_rows(rows: list[dict], mode: str, arg) -> tuple[list[dict], list[dict]]:
    """Return (train, eval) rows, class-balanced and interleaved class by class."""
    by_class: dict[int, list[dict]] = {}
    for r in rows:
        by_class.setdefault(r["label"], []).append(r)
    train_by, eval_by = {}, {}
    for label in sorted(by_class):
        members = sorted(by_class[label], key=lambda r: (sha256_bytes(r["bytes"]), r["src_row"]))
        if mode == "fraction":
            n_eval = round(len(members) * arg)
            eval_by[label] = members[:n_eval]
            train_by[label] = members[n_eval:]
        else:
            n_eval, n_train = arg
            if len(members) < n_eval + n_train:
                sys.exit(f"class {label}: only {len(members)} rows, need {n_eval + n_train}")
            eval_by[label] = members[:n_eval]
            train_by[label] = members[n_eval : n_eval + n_train]
    return interleave(train_by), interleave(eval_by)


def interleave(by_class: dict[int, list[dict]]) -> list[dict]:
    out = []
    longest = max(len(v) for v in by_class.values())
    for i in range(longest):
        for label in sorted(by_class):
            if i < len(by_class[label]):
                out.append(by_class[label][i])
    return out


def write_split(path: Path, rows: list[dict], split: str, class_names: list[str]) -> None:
    image_type = pa.struct([pa.field("bytes", pa.binary()), pa.field("path", pa.string())])
    schema = pa.schema(
        [
            pa.field("image", image_type),
            pa.field("label", pa.int64()),
            pa.field("caption", pa.string()),
        ],
        metadata={"huggingface": json.dumps(hf_metadata(class_names), sort_keys=True)},
    )
    table = pa.table(
        {
            "image": [{"bytes": r["bytes"], "path": None} for r in rows],
            "label": [r["label"] for r in rows],
            "caption": [r["caption"] for r in rows],
        },
        schema=schema,
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(
        table,
        path,
        row_group_size=ROW_GROUP_ROWS[split],
        compression="zstd",
        compression_level=ZSTD_LEVEL,
        # Statistics and dictionaries of PNG bytes would only bloat the file.
        use_dictionary=["label", "caption"],
        write_statistics=["label"],
    )


def corpus_rows(provenance_md: str) -> dict[str, str]:
    """Map image corpus file name -> its verbatim table line in the corpora PROVENANCE.md."""
    rows = {}
    for line in provenance_md.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and cells and cells[0].endswith(".parquet"):
            rows[cells[0]] = line
    return rows


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
    corpora = Path(ap.parse_args().corpora)
    table_lines = corpus_rows((corpora / "PROVENANCE.md").read_text())

    report = []
    for name, corpus_file, class_names, mode, arg in SETS:
        src = corpora / "images" / corpus_file
        table = pq.read_table(src)
        images = table.column("image").to_pylist()
        labels = table.column("label").to_pylist()
        captions = table.column("caption").to_pylist()
        rows = []
        for i, (img, label, caption) in enumerate(zip(images, labels, captions)):
            if img is None or img["bytes"] is None:
                sys.exit(f"{src}: row {i}: no image bytes")
            rows.append({"bytes": img["bytes"], "label": label, "caption": caption, "src_row": i})
        train, evals = split_rows(rows, mode, arg)
        facts = {"name": name, "corpus_file": corpus_file, "sha256": sha256_bytes(src.read_bytes()),
                 "corpus_rows": len(rows), "classes": class_names}
        for split, split_rows_ in (("train", train), ("eval", evals)):
            path = OUT_DIR / name / f"{split}.parquet"
            write_split(path, split_rows_, split, class_names)
            counts = {}
            for r in split_rows_:
                counts[r["label"]] = counts.get(r["label"], 0) + 1
            facts[split] = {"path": path, "rows": len(split_rows_), "counts": counts}
        report.append(facts)

    write_provenance(report, table_lines)
    return 0


def section(report: list[dict], table_lines: dict[str, str]) -> str:
    L = [BEGIN_MARK, "## Images — `digits/`, `fashion/`", ""]
    L.append("Generated by `scripts/make_image_data.py` (do not edit by hand; this section is")
    L.append("rewritten by that script). Regenerate with:")
    L.append("")
    L.append("```sh")
    L.append(REGEN_COMMAND)
    L.append("```")
    L.append("")
    L.append(f"(generated with Python {sys.version.split()[0]}, pyarrow {pa.__version__}; deterministic.)")
    L.append("")
    L.append("Sources, copied verbatim from the corpora's `PROVENANCE.md` (images section):")
    L.append("")
    L.append("| file | what | source | licence | rows |")
    L.append("|---|---|---|---|---|")
    for r in report:
        L.append(table_lines[r["corpus_file"]])
    L.append("")
    L.append("Corpus files used (sha256):")
    L.append("")
    for r in report:
        L.append(f"- `images/{r['corpus_file']}` — `{r['sha256']}` ({r['corpus_rows']} rows)")
    L.append("")
    L.append("How the slices were taken: inside each class, rows are ordered by sha256 of their PNG")
    L.append("bytes; the first rows of that order form `eval.parquet`, the next ones `train.parquet`")
    L.append("(digits: 15% of each class to eval, the rest — all 1,797 images are used — to train;")
    L.append("fashion: 60 per class to eval, the next 300 to train). The rows of a file are interleaved")
    L.append("class by class (labels 0, 1, ..., 9, 0, 1, ...), so any prefix is close to class-balanced.")
    L.append("PNG bytes are copied verbatim. Layout (Hugging Face datasets style, with the `huggingface`")
    L.append("schema metadata): `image` = struct {bytes: PNG, path: null}, `label` (int64), `caption`")
    L.append(f"(\"a photo of a {{class name}}\"); zstd (level {ZSTD_LEVEL}); row groups of")
    L.append(f"{ROW_GROUP_ROWS['train']} (train) / {ROW_GROUP_ROWS['eval']} (eval) rows.")
    L.append("")
    L.append("| file | from | licence | rows | per class | row groups | bytes | sha256 |")
    L.append("|---|---|---|---|---|---|---|---|")
    for r in report:
        licence = [c.strip() for c in table_lines[r["corpus_file"]].strip().strip("|").split("|")][3]
        for split in ("train", "eval"):
            s = r[split]
            md = pq.ParquetFile(s["path"]).metadata
            counts = sorted(s["counts"].values())
            per_class = str(counts[0]) if counts[0] == counts[-1] else f"{counts[0]}–{counts[-1]}"
            L.append(
                f"| `{rel(s['path'])}` | `{r['corpus_file']}` | {licence} | {s['rows']:,} | {per_class} | "
                f"{md.num_row_groups} | {s['path'].stat().st_size:,} | `{sha256_bytes(s['path'].read_bytes())}` |"
            )
    L.append("")
    for r in report:
        L.append(f"- **{r['name']}** classes (label = index): " + ", ".join(r["classes"]) + ".")
    L.append(END_MARK)
    return "\n".join(L) + "\n"


def write_provenance(report: list[dict], table_lines: dict[str, str]) -> None:
    text = PROVENANCE.read_text() if PROVENANCE.exists() else "# Provenance of `examples/data/`\n"
    new = section(report, table_lines)
    if BEGIN_MARK in text and END_MARK in text:
        head, rest = text.split(BEGIN_MARK, 1)
        tail = rest.split(END_MARK, 1)[1].lstrip("\n")
        text = head + new + tail
    else:
        text = text.rstrip("\n") + "\n\n" + new
    PROVENANCE.write_text(text)


if __name__ == "__main__":
    sys.exit(main())
