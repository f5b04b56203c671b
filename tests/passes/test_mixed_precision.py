"""mixed_precision: sensitivity analysis + accuracy-aware search on a model where full int8 fails."""
from __future__ import annotations

import copy

import pytest

TOL = 0.01


def _ctx(tmp_path, data, module, calibration_size=100):
    from toolkit.core import modelio
    from toolkit.pipeline.devices import load_device
    from toolkit.passes import PassContext

    io = modelio.from_data(data.val.inputs, data.n_classes)
    return PassContext(workdir=tmp_path, data=data, io=io, device=load_device("x86-avx512"), seed=0,
                       calibration_size=calibration_size, torch_module=module, threads=2, log=lambda m: None)


def _onnx(ctx, module):
    from toolkit.passes.export import export_onnx, save_baseline

    base = save_baseline(ctx, module)
    return base, export_onnx(ctx, base, None, "onnx-fp32")


def outlier_model(demo_module):
    """The demo CNN with one hidden unit of the first Linear scaled x2000 and the next Linear's column
    divided by 2000: the same function in fp32, but a per-tensor int8 activation range that crushes
    every other unit feeding the classifier head (a classic activation-outlier layer)."""
    import torch

    m = copy.deepcopy(demo_module).eval()
    lin1, lin2 = m[6], m[8]
    with torch.no_grad():
        k = int(torch.argmax(lin2.weight.abs().sum(0)))
        lin1.weight[k] *= 2000.0
        lin1.bias[k] *= 2000.0
        lin2.weight[:, k] /= 2000.0
    return m


@pytest.fixture(scope="module")
def sensitive(tmp_path_factory, digits, demo_model):
    from toolkit.passes.mixed_precision import MixedOptions, mixed_precision

    tmp = tmp_path_factory.mktemp("mixed")
    module = outlier_model(demo_model.module)
    ctx = _ctx(tmp, digits, module)
    base, onnx_c = _onnx(ctx, module)
    cand = mixed_precision(ctx, onnx_c, MixedOptions(tolerance=TOL), "mixed-int8")
    return ctx, base, onnx_c, cand


def test_full_int8_fails_and_plan_meets_tolerance_with_fewer_fp32_layers(sensitive):
    import math

    _, _, _, cand = sensitive
    info = cand.info
    steps = info["search"]
    assert steps[0]["kept_fp32"] == [] and steps[0]["drop"] > TOL, "the test model must break under full int8"
    kept = info["plan"]["fp32"]
    chosen = next(s for s in steps if set(s["kept_fp32"]) == set(kept))
    assert chosen["within_tolerance"] and chosen["drop"] <= TOL
    # bisection: full int8 + at most ceil(log2(n)) plans, not one evaluation per layer
    assert len(steps) <= 1 + math.ceil(math.log2(info["layers_total"]))
    assert all(not s["within_tolerance"] for s in steps if len(s["kept_fp32"]) < len(kept)), "the fewest layers found"
    assert 0 < len(kept) < info["layers_total"], "fewer high-precision layers than keeping everything"
    assert cand.precision == "mixed-int8" and cand.engine == "ort"
    assert any("mixed_precision" in s for s in cand.lineage)
    assert [len(s["kept_fp32"]) for s in steps] == sorted(len(s["kept_fp32"]) for s in steps)  # fastest plan first


def test_sensitivity_ranking_is_one_pass_and_keeps_the_outlier_path(sensitive):
    _, _, _, cand = sensitive
    table = cand.info["sensitivity"]
    assert {r["op"] for r in table} <= {"Conv", "Gemm", "MatMul"} and len(table) == 4
    for r in table:
        assert {"activation_sqnr_db", "weight_sqnr_db", "score", "rank"} <= set(r)
    assert [r["rank"] for r in table] == [1, 2, 3, 4]
    assert [r["score"] for r in table] == sorted((r["score"] for r in table), reverse=True)
    # the Gemm reading the x2000 outlier activation must be among the layers kept in fp32
    assert any(r["op"] == "Gemm" for r in table if r["layer"] in cand.info["plan"]["fp32"])


def test_bisection_finds_the_fewest_layers_in_log_steps():
    from toolkit.passes.mixed_precision import bisect_plan

    calls = []

    def evaluate(k):  # drop falls as more of the ranking stays fp32; 13 layers are needed
        calls.append(k)
        return (0.2 if k < 13 else 0.0), {"kept_fp32": list(range(k))}

    steps, k = bisect_plan(evaluate, 40, 0.01)
    assert k == 13 and len(calls) <= 1 + 6 and calls[0] == 0
    steps, k = bisect_plan(lambda k: (0.5, {"kept_fp32": list(range(k))}), 8, 0.01)
    assert k is None, "no evaluated plan met the tolerance: no int8 candidate, said"
    steps, k = bisect_plan(evaluate, 40, 0.01, time_left=lambda: -1.0)
    assert k is None and steps[-1]["stopped"] == "over the recipe's time budget"


def test_kept_layers_really_run_fp32_and_the_rest_int8(sensitive):
    import onnx

    _, _, _, cand = sensitive
    model = onnx.load(str(cand.path))
    producers = {o: n for n in model.graph.node for o in n.output}
    by_name = {n.name: n for n in model.graph.node}
    for name in cand.info["plan"]["fp32"]:
        w = by_name[name].input[1]
        assert w not in producers or producers[w].op_type != "DequantizeLinear", f"{name} weight is still quantized"
    for name in cand.info["plan"]["int8"]:
        w = by_name[name].input[1]
        assert producers[w].op_type == "DequantizeLinear", f"{name} should be int8"


def test_mixed_candidate_evaluates_within_tolerance(sensitive, digits):
    from toolkit.pipeline.devices import load_device
    from toolkit.pipeline.evaluate import evaluate

    ctx, _, onnx_c, cand = sensitive
    dev = load_device("x86-avx512").model_copy(update={"bench": load_device("x86-avx512").bench.model_copy(
        update={"warmup": 2, "iterations": 10, "batch_sizes": [1]})})
    base_m, _, base_out = evaluate(onnx_c, digits, dev, None)
    m, _, _ = evaluate(cand, digits, dev, base_out)
    assert base_m["macro_f1"] - m["macro_f1"] <= TOL + 0.006  # test split; the plan was chosen on validation


def test_report_section_renders(sensitive, tmp_path):
    from toolkit.output.sections.quantization import quantization_section

    _, _, _, cand = sensitive
    row = {"id": cand.id, "engine": cand.engine, "precision": cand.precision, "backend": cand.backend, "info": cand.info,
           "metrics": {"macro_f1": 0.9, "latency_p50_ms": 0.1}}
    sec = quantization_section({"candidates": [row]}, tmp_path)
    assert sec and "Accuracy-aware search" in sec["markdown"] and (tmp_path / sec["plots"]["sensitivity_mixed-int8"]).exists()
    assert "<table>" in sec["html"]


def test_nncf_ignored_scope_variant(tmp_path, digits, demo_model):
    pytest.importorskip("nncf")
    from toolkit.passes.mixed_precision import MixedOptions, mixed_precision

    module = outlier_model(demo_model.module)
    ctx = _ctx(tmp_path, digits, module, calibration_size=50)
    _, onnx_c = _onnx(ctx, module)
    cand = mixed_precision(ctx, onnx_c, MixedOptions(engine="nncf", tolerance=TOL), "mixed-nncf")
    assert cand.engine == "nncf" and cand.info["engine_mechanism"].startswith("NNCF")
    assert cand.info["search"][-1]["within_tolerance"]
    assert len(cand.info["plan"]["fp32"]) < cand.info["layers_total"]
