"""The .pt2 (bounded dims) and safetensors + --model-factory routes of a BERT classifier, with raw-text data."""
from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

pytest.importorskip("transformers", reason="transformers is not installed (pip install 'optkit[text]')")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks.text_routes import build_routes  # noqa: E402  (the routes the benchmark builds, tested here)
from tests.test_text import make_hf_folder, reviews, write_csv  # noqa: E402

RECIPE = """name: routes-small
calibration_size: 32
steps:
  - id: onnx-fp32
    pass: export_onnx
  - id: ort-int8-dynamic
    pass: ort_dynamic_int8
    from: onnx-fp32
"""


@pytest.fixture(scope="module")
def routes(tmp_path_factory):
    root = tmp_path_factory.mktemp("routes")
    folder = make_hf_folder(root / "tiny-bert", train_on=reviews(200, seed=1))
    data = write_csv(root / "reviews.csv", reviews())
    (root / "r.yaml").write_text(RECIPE)
    return root, folder, data, build_routes(folder, root / "routes")


def _compress(root, name, checkpoint, data, **kw):
    import toolkit

    return toolkit.compress(checkpoint, data=data, device="x86-avx512", recipe=root / "r.yaml", out=root / f"run-{name}",
                            text_column="review", label_column="sentiment", **kw)


@pytest.fixture(scope="module")
def hf_result(routes):
    root, folder, data, _ = routes
    return _compress(root, "hf", folder, data)


def test_pt2_with_bounded_dims_compresses_with_the_tokenizer_next_to_it(routes, hf_result):
    import torch

    root, _, data, r = routes
    program = torch.export.load(r["pt2"]["checkpoint"])
    # batch <= 1024, sequence <= 64 (the tiny BERT's 64 positions; MiniLM's 512 in the benchmark)
    assert sorted(int(v.upper) for v in program.range_constraints.values()) == [64, 1024]
    result = _compress(root, "pt2", r["pt2"]["checkpoint"], data)
    rep = result.report
    assert any("tokenizer files next to model.pt2" in n for n in rep.data.notes)
    assert rep.io["dim_ranges"]["sequence"]["max"] <= 64 and rep.io["dim_ranges"]["batch"]["max"] == 1024
    rows, ref = {c.id: c for c in rep.candidates}, {c.id: c for c in hf_result.report.candidates}
    assert {"torch-fp32", "onnx-fp32", "ort-int8-dynamic"} <= set(rows)
    # the same weights and the same tokenizer as the HF folder: the same predictions, so the same F1
    assert rows["onnx-fp32"].metrics.macro_f1 == pytest.approx(ref["onnx-fp32"].metrics.macro_f1, abs=1e-9)
    assert rows["torch-fp32"].metrics.macro_f1 > 0.8
    assert rep.data.sha256 == hf_result.report.data.sha256  # tokenized identically


def test_safetensors_and_factory_compress_with_the_tokenizer_next_to_them(routes, hf_result, monkeypatch):
    root, _, data, r = routes
    spec = r["factory"]
    monkeypatch.syspath_prepend(spec["pythonpath"])  # the user's factory module, on their PYTHONPATH
    assert (Path(spec["pythonpath"]) / "route_factory.py").is_file()  # code next to the tokenizer does not block it
    result = _compress(root, "factory", spec["checkpoint"], data, model_factory=spec["model_factory"])
    rows, ref = {c.id: c for c in result.report.candidates}, {c.id: c for c in hf_result.report.candidates}
    assert rows["onnx-fp32"].metrics.macro_f1 == pytest.approx(ref["onnx-fp32"].metrics.macro_f1, abs=1e-9)
    assert rows["ort-int8-dynamic"].info["contents"]["quantized_ops"] > 0


def test_tokenizer_option_and_the_error_without_one(routes, tmp_path):
    from toolkit.core.errors import DataError, UnsafeCheckpoint
    from toolkit.intake import text

    root, folder, data, r = routes
    alone = tmp_path / "alone"
    alone.mkdir()
    shutil.copy2(r["pt2"]["checkpoint"], alone / "model.pt2")
    with pytest.raises(DataError, match=r"reviews.csv: raw text needs a tokenizer.*--tokenizer DIR"):
        text.load_for_checkpoint(data, alone / "model.pt2", text_column="review", label_column="sentiment")
    got = text.load_for_checkpoint(data, alone / "model.pt2", tokenizer=folder, text_column="review",
                                   label_column="sentiment")
    assert got.text.tokenizer_dir == folder and any(f"--tokenizer {folder}" in n for n in got.notes)
    assert got.labels == ["negative", "positive"]  # from config.json in the tokenizer's folder
    with pytest.raises(DataError, match="--tokenizer needs a folder with tokenizer files"):
        text.load_for_checkpoint(data, alone / "model.pt2", tokenizer=alone)
    # custom tokenizer code (auto_map) is still refused without --trust-checkpoint
    evil = tmp_path / "evil"
    shutil.copytree(Path(r["pt2"]["checkpoint"]).parent, evil)
    cfg = (evil / "tokenizer_config.json").read_text()
    (evil / "tokenizer_config.json").write_text(cfg.replace("{", '{"auto_map": {"AutoTokenizer": ["x.Tok", null]},', 1))
    with pytest.raises(UnsafeCheckpoint, match="auto_map"):
        text.load_for_checkpoint(data, evil / "model.pt2", text_column="review", label_column="sentiment")


def test_transformer_recipe_chosen_for_a_pt2_with_config_next_to_it(routes):
    from toolkit.intake.hf import transformer_reason

    _, _, _, r = routes
    assert "config.json says a Hugging Face BERT encoder" in transformer_reason(r["pt2"]["checkpoint"])
    assert "BERT" in transformer_reason(r["factory"]["checkpoint"])


def test_cli_tokenizer_option_reaches_the_run(routes, tmp_path):
    """`optkit compress model.pt2 --data reviews.csv --tokenizer DIR`: the flag is the CLI face of tokenizer=."""
    import json

    from typer.testing import CliRunner

    from toolkit.cli import app

    root, folder, data, r = routes
    alone = tmp_path / "alone"
    alone.mkdir()
    shutil.copy2(r["pt2"]["checkpoint"], alone / "model.pt2")
    args = ["compress", str(alone / "model.pt2"), "--data", str(data), "--device", "x86-avx512", "--recipe",
            str(root / "r.yaml"), "--text-column", "review", "--label-column", "sentiment", "--out"]
    bad = CliRunner().invoke(app, [*args, str(tmp_path / "no-tok")])
    assert bad.exit_code != 0 and "--tokenizer DIR" in bad.output
    run = CliRunner().invoke(app, [*args, str(tmp_path / "run"), "--tokenizer", str(folder), "--json"])
    assert run.exit_code in (0, 3), run.output  # 3: nothing met the gates on a busy host; the report is written
    notes = json.loads((tmp_path / "run" / "report" / "report.json").read_text())["data"]["notes"]
    assert any(f"--tokenizer {folder}" in n for n in notes)
