"""Distillation for encoders: DistilBERT's every-other-layer student of a tiny random BERT folder, trained with KD."""
from __future__ import annotations

import csv
import sys
from pathlib import Path

import pytest

pytest.importorskip("transformers", reason="transformers is not installed (pip install 'optkit[text]')")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from tests.test_text import make_hf_folder, reviews  # noqa: E402  (the tiny BERT + toy reviews, one of each)

RECIPE = """name: text-distill
calibration_size: 32
steps:
  - id: onnx-fp32
    pass: export_onnx
  - id: student
    pass: distill
    options: {student: every_other_layer, alpha: 0.5, temperature: 2.0, lr: 0.0005, epochs: 4, max_steps: 40,
              batch_size: 16, patience: 4, label_smoothing: 0.0, ablation: false}
  - id: student-onnx-fp32
    pass: export_onnx
    from: student
  - id: student-int8-dynamic
    pass: ort_dynamic_int8
    from: student-onnx-fp32
"""


@pytest.fixture(scope="module")
def bert4(tmp_path_factory):
    root = tmp_path_factory.mktemp("bert4")
    folder = make_hf_folder(root / "tiny-bert-4", layers=4, train_on=reviews(200, seed=1))
    data = root / "reviews.csv"
    with data.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["text", "label", "split"])
        for i, (t, y) in enumerate(reviews(240, seed=2)):
            w.writerow([t, ("negative", "positive")[y], ("train", "train", "val", "test")[(i // 2) % 4]])
    return folder, data


def test_every_other_layer_student_is_distilberts_init(bert4):
    import torch

    from toolkit.intake.hf import load_folder
    from toolkit.passes.distill import DistillOptions, make_student

    teacher = load_folder(bert4[0])["module"]
    student, how = make_student(DistillOptions(student="every_other_layer"), teacher, 2)
    t_bert, s_bert = teacher.inner.bert, student.inner.bert
    assert len(t_bert.encoder.layer) == 4 and len(s_bert.encoder.layer) == 2
    assert student.inner.config.num_hidden_layers == 2 and teacher.inner.config.num_hidden_layers == 4
    assert "layers [0, 2] of 4" in how

    def same(a, b):
        sa, sb = a.state_dict(), b.state_dict()
        return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)

    for s_layer, t_index in zip(s_bert.encoder.layer, (0, 2)):
        assert same(s_layer, t_bert.encoder.layer[t_index])
    assert same(s_bert.embeddings, t_bert.embeddings) and same(s_bert.pooler, t_bert.pooler)
    assert same(student.inner.classifier, teacher.inner.classifier)
    # a copy, not a view: training the student leaves the teacher as it was
    assert s_bert.encoder.layer[0].attention.self.query.weight is not t_bert.encoder.layer[0].attention.self.query.weight


@pytest.fixture(scope="module")
def distill_run(bert4, tmp_path_factory):
    import toolkit

    folder, data = bert4
    root = tmp_path_factory.mktemp("distill-run")
    (root / "r.yaml").write_text(RECIPE)
    return toolkit.compress(folder, data=data, device="x86-avx512", recipe=root / "r.yaml", out=root / "run")


def test_kd_student_trains_exports_and_is_reported_with_f1(distill_run):
    rep = distill_run.report
    rows = {c.id: c for c in rep.candidates}
    assert {"torch-fp32", "student", "student-onnx-fp32", "student-int8-dynamic"} <= set(rows), \
        [(p["id"], p.get("status"), p.get("reason")) for p in rep.plan]
    info = rows["student"].info
    assert info["student"] == "every_other_layer" and info["param_ratio"] < 1
    assert info["kd"]["alpha"] == 0.5 and info["kd"]["temperature"] == 2.0 and info["kd"]["train_samples"] == 120
    losses = info["curves"]["train_loss"]
    assert len(losses) >= 2 and losses[-1] < losses[0]  # KD lowers the training loss
    assert info["steps_run"] <= 40 and info["stopped_by"] in ("epochs", "max_steps", "patience")
    for cid in ("student", "student-onnx-fp32", "student-int8-dynamic"):
        assert 0.0 <= rows[cid].metrics.macro_f1 <= 1.0
        assert 0.0 <= rows[cid].metrics.ece <= 1.0 and 0.0 <= rows[cid].metrics.ece_recalibrated <= 1.0
    assert rows["student-int8-dynamic"].info["contents"]["quantized_ops"] > 0
    # the student learned the toy task from the teacher (random chance is ~0.5)
    assert rows["student"].metrics.macro_f1 > 0.7


def test_max_steps_and_the_deadline_bound_training(bert4, tmp_path):
    """The budget is a step count (reproducible) and the recipe's deadline; the run stops there and says so."""
    import time

    from tests.conftest import make_pass_ctx
    from toolkit.intake import checkpoints, text
    from toolkit.passes import load_all
    from toolkit.passes.distill import DistillOptions
    from toolkit.passes.export import save_baseline

    folder, data = bert4
    module = checkpoints.load(folder).module
    ctx = make_pass_ctx(tmp_path, text.load_for_checkpoint(data, folder), module)
    base = save_baseline(ctx, module)
    opts = DistillOptions(student="every_other_layer", epochs=5, batch_size=16, max_steps=3, ablation=False)
    made = load_all()["distill"].fn(ctx, base, opts, "student")
    assert made.info["steps_run"] == 3 and made.info["stopped_by"] == "max_steps" and made.info["epochs_run"] == 1
    ctx.deadline = time.time() - 1  # the recipe's time budget already spent: one validated epoch, no step
    late = load_all()["distill"].fn(ctx, base, opts.model_copy(update={"max_steps": None}), "student-late")
    assert late.info["stopped_by"] == "time" and late.info["steps_run"] == 0 and late.info["epochs_run"] == 1


def test_every_other_layer_from_a_pt2_graph_says_why_not(bert4, tmp_path):
    import torch

    from benchmarks.text_routes import build_routes
    from tests.conftest import make_pass_ctx
    from toolkit.core import modelio
    from toolkit.core.errors import UnsupportedError
    from toolkit.intake import text
    from toolkit.passes import load_all
    from toolkit.passes.distill import DistillOptions
    from toolkit.passes.export import save_baseline

    folder, data = bert4
    pt2 = build_routes(folder, tmp_path / "routes")["pt2"]["checkpoint"]
    graph = torch.export.load(pt2).module()
    ds = text.load_for_checkpoint(data, folder)
    ctx = make_pass_ctx(tmp_path / "c", ds, graph)
    ctx.io = modelio.from_data(ds.val.inputs, ds.n_classes, module=graph)  # the archive's own dim ranges
    with pytest.raises(UnsupportedError, match="a .pt2 graph has none to halve"):
        load_all()["distill"].fn(ctx, save_baseline(ctx, graph), DistillOptions(student="every_other_layer"), "student")
