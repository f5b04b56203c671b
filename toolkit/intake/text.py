"""Text data: .csv, .jsonl or .parquet with a text column and a label column, tokenized with the checkpoint's tokenizer.

Columns: `text` and `label` by default (settable: --text-column, --label-column); labels as strings (class
names) or integers (class indices); optional `split` (train/val/test) and `slice_*` columns, as in the .npz
contract. The max length is chosen from the data's own token lengths: the p99 length rounded up to a
multiple of 8, capped by the model's position embeddings; the choice and the share of rows it truncates are
said in the run's notes. A `length` slice (short/medium/long, cut at the token-length terciles) comes free.
The result is the same toolkit.intake.data.Dataset the .npz path gives (input_ids + attention_mask, int64),
with a TextSpec (tokenizer folder, max length, padding, truncation, raw texts) for the bundle and predict.
"""
from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
from pathlib import Path

import numpy as np

from toolkit.core.artifacts import file_sha256
from toolkit.core.errors import DataError

TEXT_SUFFIXES = (".csv", ".jsonl", ".parquet")
LENGTH_QUANTILE = 99      # max length = this percentile of token lengths, rounded up
LENGTH_MULTIPLE = 8       # to a multiple of 8: kernels and TensorRT profiles like aligned lengths
PADDING, TRUNCATION = "max_length", "longest_first"


@dataclasses.dataclass(frozen=True)
class TextSpec:
    """How raw text becomes the model's inputs: what the bundle's I/O contract and predict() reproduce."""

    tokenizer_dir: Path
    max_length: int
    text_column: str
    label_column: str
    length_p50: int
    length_p95: int
    length_p99: int
    truncated_share: float
    model_cap: int | None
    texts: dict[str, list[str]]  # split name -> raw texts, row-aligned with that split's arrays
    padding: str = PADDING
    truncation: str = TRUNCATION

    @property
    def tokenizer_files(self) -> list[Path]:
        """The tokenizer's own files in the checkpoint folder (what a bundle ships; never the weights)."""
        from toolkit.intake.hf import TOKENIZER_FILES

        return [self.tokenizer_dir / n for n in TOKENIZER_FILES if (self.tokenizer_dir / n).is_file()]

    def contract(self) -> dict:
        """The preprocessing an integrator must reproduce (manifest, report)."""
        return {"kind": "text", "tokenizer": "tokenizer", "max_length": self.max_length, "padding": self.padding,
                "truncation": self.truncation, "inputs": ["input_ids", "attention_mask"],
                "max_length_rule": f"p{LENGTH_QUANTILE} of the data's token lengths rounded up to a multiple of "
                                   f"{LENGTH_MULTIPLE}" + (f", capped at {self.model_cap}" if self.model_cap else ""),
                "token_lengths": {"p50": self.length_p50, "p95": self.length_p95, "p99": self.length_p99},
                "truncated_share": self.truncated_share}


def is_text_file(path: str | Path) -> bool:
    return Path(path).suffix.lower() in TEXT_SUFFIXES


def choose_max_length(lengths: np.ndarray, cap: int | None) -> int:
    """p99 of the token lengths, rounded up to a multiple of 8, at least 8, at most the model's cap."""
    p = int(np.ceil(np.percentile(lengths, LENGTH_QUANTILE)))
    n = max(LENGTH_MULTIPLE, -(-p // LENGTH_MULTIPLE) * LENGTH_MULTIPLE)
    return min(n, cap) if cap else n


def _rows(path: Path) -> list[dict]:
    if not path.is_file():
        raise DataError(f"{path}: data file not found; pass an existing .csv, .jsonl or .parquet with --data")
    suffix = path.suffix.lower()
    try:
        if suffix == ".csv":
            with path.open(newline="", encoding="utf-8") as f:
                return list(csv.DictReader(f))
        if suffix == ".jsonl":
            rows = []
            for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                if line.strip():
                    row = json.loads(line)
                    if not isinstance(row, dict):
                        raise DataError(f"{path}: line {i} is not a JSON object; write one {{\"text\": ..., \"label\": ...}} per line")
                    rows.append(row)
            return rows
        try:
            import pyarrow.parquet as pq
        except ImportError as exc:
            raise DataError(f"{path}: reading .parquet needs pyarrow (pip install 'optkit[text]'); or save it as .csv") from exc
        return pq.read_table(str(path)).to_pylist()
    except DataError:
        raise
    except (OSError, UnicodeDecodeError, ValueError, csv.Error) as exc:
        raise DataError(f"{path}: not readable as {suffix} ({' '.join(str(exc).split())[:160]}); re-save it as UTF-8 "
                        f"{suffix}") from exc
    except Exception as exc:  # pyarrow's own errors (ArrowInvalid, ...)
        raise DataError(f"{path}: not a readable parquet file ({' '.join(str(exc).split())[:160]}); re-save it") from exc


def _labels(path: Path, values: list, column: str, model_labels: list[str] | None) -> tuple[np.ndarray, list[str]]:
    """Integer labels are class indices; strings are class names, ordered as the model's id2label when it names them."""
    if any(v is None or (isinstance(v, str) and not v.strip()) for v in values):
        n = sum(v is None or (isinstance(v, str) and not v.strip()) for v in values)
        raise DataError(f"{path}: column '{column}' is empty on {n} rows; give every row a label")
    as_int = [int(v) if isinstance(v, (int, np.integer)) or (isinstance(v, str) and v.strip().lstrip("-").isdigit())
              else None for v in values]
    if all(v is not None for v in as_int) and not (model_labels and set(map(str, values)) <= set(model_labels)):
        y = np.asarray(as_int, dtype=np.int64)
        if y.min() < 0:
            raise DataError(f"{path}: column '{column}' has negative labels; labels must be 0..n_classes-1 or names")
        n = int(y.max()) + 1
        if model_labels and n > len(model_labels):
            raise DataError(f"{path}: label {n - 1} but the model has {len(model_labels)} classes; fix '{column}'")
        return y, model_labels or [str(i) for i in range(n)]
    names = [str(v).strip() for v in values]
    if model_labels:
        unknown = sorted(set(names) - set(model_labels))
        if unknown:
            raise DataError(f"{path}: labels {unknown[:5]} are not the model's classes {model_labels[:8]} "
                            "(config.json id2label); rename them or use class indices")
        labels = list(model_labels)
    else:
        labels = sorted(set(names))
    index = {n: i for i, n in enumerate(labels)}
    return np.asarray([index[n] for n in names], dtype=np.int64), labels


def load_text(path: str | Path, tokenizer, *, tokenizer_dir: str | Path, model_cap: int | None = None,
              model_labels: list[str] | None = None, text_column: str = "text", label_column: str = "label",
              seed: int = 0):
    """Read, check, tokenize and split a text file into the Dataset the .npz path gives."""
    from toolkit.intake.data import (MAX_CLASSES, Dataset, Split, check_class_coverage, check_split_tags,
                                     stratified)

    path = Path(path)
    rows = _rows(path)
    if not rows:
        raise DataError(f"{path}: no rows; the data needs samples")
    for column in (text_column, label_column):
        if column not in rows[0]:
            flag = "--text-column" if column == text_column else "--label-column"
            raise DataError(f"{path}: no column '{column}' (columns: {', '.join(map(str, rows[0]))[:160]}); "
                            f"name it with {flag}")
    texts = [r.get(text_column) for r in rows]
    bad = [i for i, t in enumerate(texts) if not isinstance(t, str) or not t.strip()]
    if bad:
        raise DataError(f"{path}: column '{text_column}' is empty or not text on {len(bad)} rows (first: row "
                        f"{bad[0] + 1}); drop or fill those rows")
    y, labels = _labels(path, [r.get(label_column) for r in rows], label_column, model_labels)
    if len(labels) > MAX_CLASSES:
        raise DataError(f"{path}: {len(labels)} classes, beyond optkit's limit of {MAX_CLASSES}")

    lengths = np.asarray([len(ids) for ids in tokenizer(texts, truncation=False)["input_ids"]], dtype=np.int64)
    max_length = choose_max_length(lengths, model_cap)
    enc = tokenizer(texts, padding=PADDING, truncation=True, max_length=max_length, return_tensors="np")
    inputs = {"input_ids": enc["input_ids"].astype(np.int64), "attention_mask": enc["attention_mask"].astype(np.int64)}
    truncated = float(np.mean(lengths > max_length))
    lo, hi = np.percentile(lengths, [100 / 3, 200 / 3])
    slices = {"length": np.where(lengths <= lo, "short", np.where(lengths <= hi, "medium", "long")).astype(str)}
    for column in rows[0]:
        if str(column).startswith("slice_"):
            slices[str(column)[len("slice_"):]] = np.asarray([str(r.get(column)) for r in rows]).astype(str)
    whole_texts = np.asarray(texts, dtype=object)
    whole = Split(inputs, y, slices)

    if "split" in rows[0]:
        pick = check_split_tags(path, np.asarray([str(r.get("split")) for r in rows]).astype(str))
        parts = {k: pick[k] for k in ("train", "val", "test")}
    else:
        if len(y) < 20:
            raise DataError(f"{path}: only {len(y)} rows; need at least 20 to split into validation and test")
        counts = np.bincount(y, minlength=len(labels))
        single = [labels[k] for k in range(len(labels)) if 0 < counts[k] < 2]
        if single:
            raise DataError(f"{path}: classes {single[:5]} have a single row; give each class at least 2, "
                            "or mark rows with a 'split' column")
        v, t = stratified(y, [0.5, 0.5], seed)
        parts = {"train": np.array([], dtype=np.int64), "val": v, "test": t}
    notes = check_class_coverage(path, labels, y[parts["val"]], y[parts["test"]])
    p50, p95, p99 = (int(np.ceil(np.percentile(lengths, q))) for q in (50, 95, LENGTH_QUANTILE))
    cap_note = f", capped at {model_cap} by the model" if model_cap and max_length == model_cap else ""
    notes.append(f"max length {max_length} tokens, chosen from the data (token lengths p50 {p50}, p95 {p95}, "
                 f"p{LENGTH_QUANTILE} {p99}; rounded up to a multiple of {LENGTH_MULTIPLE}{cap_note}); "
                 f"{truncated:.1%} of rows ({int(np.sum(lengths > max_length))} of {len(y)}) truncated")
    spec = TextSpec(tokenizer_dir=Path(tokenizer_dir), max_length=max_length, text_column=text_column,
                    label_column=label_column, length_p50=p50, length_p95=p95, length_p99=p99,
                    truncated_share=round(truncated, 4), model_cap=model_cap,
                    texts={k: [str(s) for s in whole_texts[idx]] for k, idx in parts.items()})
    # identity: the file, how it was tokenized (tokenizer files, length), which columns
    key = json.dumps([file_sha256(path), _tokenizer_sha(Path(tokenizer_dir)), max_length, text_column, label_column])
    return Dataset(name=path.name, labels=labels, val=whole.take(parts["val"]), test=whole.take(parts["test"]),
                   train=whole.take(parts["train"]) if len(parts["train"]) else None,
                   sha256=hashlib.sha256(key.encode()).hexdigest(),
                   preprocessing=(f"raw text tokenized with the checkpoint's tokenizer ({type(tokenizer).__name__}), "
                                  f"padding to max_length {max_length}, truncation {TRUNCATION}"),
                   notes=tuple(notes), text=spec)


def _tokenizer_sha(folder: Path) -> str:
    from toolkit.intake.hf import TOKENIZER_FILES

    parts = [f"{n}:{file_sha256(folder / n)}" for n in TOKENIZER_FILES if (folder / n).is_file()]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def tokenizer_folder(checkpoint, tokenizer: str | Path | None = None) -> tuple[Path, str]:
    """Where the tokenizer for raw text comes from, and how that was decided (said in the run's notes).

    1. --tokenizer DIR, when given (what tokenizer.save_pretrained(DIR) wrote);
    2. a Hugging Face model folder: its own tokenizer files;
    3. a checkpoint file (.pt2, .safetensors + --model-factory, .onnx) with tokenizer files next to it: the layout
       Optimum's exporters and `save_pretrained(folder)` of model + tokenizer write, so an Optimum user's folder
       works as is.
    """
    from toolkit.intake import hf

    if tokenizer is not None:
        folder = Path(tokenizer)
        if not folder.is_dir() or not any((folder / n).is_file() for n in hf.TOKENIZER_FILES):
            raise DataError(f"{folder}: --tokenizer needs a folder with tokenizer files (tokenizer.json, vocab.txt, ...); "
                            "write one with tokenizer.save_pretrained(folder)")
        return folder, f"--tokenizer {folder}"
    if checkpoint is not None and hf.is_hf_folder(checkpoint):
        return Path(checkpoint), "the Hugging Face folder's own tokenizer"
    if checkpoint is not None and not str(checkpoint).startswith("builtin:") and Path(checkpoint).is_file():
        folder = Path(checkpoint).parent
        if any((folder / n).is_file() for n in hf.TOKENIZER_FILES):
            return folder, f"the tokenizer files next to {Path(checkpoint).name}"
    raise DataError("raw text needs a tokenizer: pass a Hugging Face model folder (config.json + tokenizer files) as the "
                    "checkpoint, save the tokenizer next to the checkpoint file (tokenizer.save_pretrained(its folder)), "
                    "pass --tokenizer DIR, or tokenize yourself into a .npz (input_ids, attention_mask, y)")


def load_for_checkpoint(path: str | Path, checkpoint, *, trust: bool = False, text_column: str = "text",
                        label_column: str = "label", seed: int = 0, tokenizer: str | Path | None = None):
    """Text data for a checkpoint: its tokenizer (tokenizer_folder), its position cap, its class names.

    The cap and the class names come from a config.json in the tokenizer's folder when there is one (the model's
    own, as save_pretrained writes it), and from the tokenizer's model_max_length.
    """
    from toolkit.intake import hf

    try:
        folder, where = tokenizer_folder(checkpoint, tokenizer)
    except DataError as exc:
        raise DataError(f"{path}: {exc}") from None
    is_model_folder = checkpoint is not None and hf.is_hf_folder(checkpoint) and folder == Path(checkpoint)
    cfg = hf.read_config(folder) if (folder / "config.json").is_file() else {}
    tok = hf.load_tokenizer(folder, trust, whole_folder=is_model_folder)
    cap = hf.max_sequence(cfg)
    tok_max = getattr(tok, "model_max_length", None)
    if isinstance(tok_max, int) and 0 < tok_max < 1_000_000:
        cap = min(cap, tok_max) if cap else tok_max
    data = load_text(path, tok, tokenizer_dir=folder, model_cap=cap, model_labels=hf.class_names(cfg),
                     text_column=text_column, label_column=label_column, seed=seed)
    if is_model_folder:
        return data
    return dataclasses.replace(data, notes=(*data.notes, f"raw text tokenized with {where} ({folder})"))
