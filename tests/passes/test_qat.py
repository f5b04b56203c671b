"""qat pass: on a model where per-tensor activation PTQ loses >= 1 pt macro-F1, QAT recovers at least half."""
from __future__ import annotations

import pytest

from toolkit.passes import PassContext, load_all


def outlier_mlp(digits):
    """A digits MLP whose strongest hidden unit is scaled x100 (and its outgoing weights /100): the same function
    in fp32, but the per-tensor uint8 activation range is set by that one unit, so PTQ crushes the others."""
    import torch
    import torch.nn as nn

    from toolkit.intake.demo import train_classifier
    from toolkit.passes.distill import deterministic

    with deterministic(0):
        m = train_classifier(nn.Sequential(nn.Flatten(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10)), digits, 15, 0)
    with torch.no_grad():
        h = torch.relu(m[1](torch.from_numpy(digits.train.inputs["x"]).flatten(1)))
        u = int(h.mean(0).argmax())
        m[1].weight[u] *= 100
        m[1].bias[u] *= 100
        m[3].weight[:, u] /= 100
    return m.eval()


def _f1(cand, split, n):
    from toolkit.backends import open_session
    from toolkit.pipeline.evaluate import run_split
    from toolkit.metrics.classification import macro_f1_score

    with open_session(cand, threads=2) as s:
        return macro_f1_score(split.y, run_split(s, split).argmax(1), n)


@pytest.fixture(scope="module")
def setup(tmp_path_factory, digits):
    from toolkit.core import modelio
    from toolkit.pipeline.devices import load_device
    from toolkit.passes.export import save_baseline

    P = load_all()
    model = outlier_mlp(digits)
    io = modelio.from_data(digits.val.inputs, digits.n_classes)
    ctx = PassContext(workdir=tmp_path_factory.mktemp("qat"), data=digits, io=io, device=load_device("x86-avx512"),
                      seed=0, calibration_size=300, torch_module=model, threads=2, log=lambda m: None)
    base = save_baseline(ctx, model)
    onnx_c = P["export_onnx"].fn(ctx, base, P["export_onnx"].options(), "onnx-fp32")
    ptq = P["ort_static_int8"].fn(ctx, onnx_c, P["ort_static_int8"].options(), "ptq")
    ctx.candidates.update({"baseline": base, "onnx-fp32": onnx_c, "ptq": ptq})
    return ctx, base, ptq


def test_qat_recovers_half_of_the_ptq_loss(setup, digits):
    ctx, base, ptq = setup
    spec = load_all()["qat"]
    q = spec.fn(ctx, base, spec.options.model_validate({"ptq_candidate": "ptq", "lr": 1e-3, "epochs": 6}), "qat")
    n = digits.n_classes
    fp32, f_ptq, f_qat = (_f1(c, digits.test, n) for c in (base, ptq, q))
    loss = fp32 - f_ptq
    print(f"test macro-F1 fp32 {fp32:.4f}, PTQ {f_ptq:.4f} (loss {loss:.4f}), QAT {f_qat:.4f} "
          f"(recovered {(f_qat - f_ptq) / max(loss, 1e-9):.0%})")
    assert loss >= 0.01, "the constructed model should make per-tensor PTQ lose >= 1 pt"
    assert f_qat - f_ptq >= 0.5 * loss
    assert q.format == "onnx" and q.precision == "int8" and q.backend == "onnxruntime" and q.lineage[-1].startswith("qat")
    assert {"QuantizeLinear", "DequantizeLinear"} <= set(q.info["onnx_ops"])
    assert q.info["curves"]["epoch"][0] == 0 and q.info["gate"]["ptq_val_drop"] > 0


def test_qat_skips_when_ptq_is_within_tolerance(setup):
    from toolkit.core.errors import StepNotNeeded

    ctx, base, _ = setup
    spec = load_all()["qat"]
    opts = spec.options.model_validate({"when": "if_ptq_misses_gate", "ptq_candidate": "ptq", "tolerance": 0.5})
    with pytest.raises(StepNotNeeded, match="PTQ candidate ptq is within tolerance"):
        spec.fn(ctx, base, opts, "qat-skip")


def test_if_ptq_misses_gate_needs_a_ptq_candidate():
    from pydantic import ValidationError

    from toolkit.passes.qat import QatOptions

    with pytest.raises(ValidationError):
        QatOptions(when="if_ptq_misses_gate")
