"""pt2e_ptq: torch.ao PT2E (torchao) int8 on the demo, exported to QDQ ONNX, within tolerance."""
from __future__ import annotations

import pytest

TOL = 0.01


def test_pt2e_int8_onnx_runs_within_tolerance(demo_ctx, digits):
    pytest.importorskip("torchao")
    from toolkit.pipeline.evaluate import evaluate
    from toolkit.passes.quantize_pt2e import Pt2eOptions, pt2e_ptq

    ctx, base = demo_ctx
    cand = pt2e_ptq(ctx, base, Pt2eOptions(), "pt2e-int8")
    assert cand.engine == "pt2e" and cand.precision == "int8" and cand.format == "onnx"
    assert cand.info["quantizer"] == "X86InductorQuantizer"
    import onnx

    ops = {n.op_type for n in onnx.load(str(cand.path)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    base_m, _, base_out = evaluate(base, digits, ctx.device, None)
    m, _, _ = evaluate(cand, digits, ctx.device, base_out)
    assert base_m["macro_f1"] - m["macro_f1"] <= TOL


def test_pt2e_torch_output_loads_back(demo_ctx):
    pytest.importorskip("torchao")
    from toolkit.backends import open_session
    from toolkit.passes.quantize_pt2e import Pt2eOptions, pt2e_ptq

    ctx, base = demo_ctx
    cand = pt2e_ptq(ctx, base, Pt2eOptions(output="torch"), "pt2e-torch")
    assert cand.format == "torch" and cand.path.suffix == ".pt2"
    with open_session(cand, threads=1) as s:
        out = s.infer({"x": ctx.data.val.inputs["x"][:3]})
    assert out.shape == (3, ctx.data.n_classes)


def test_arm_quantizer_is_picked_for_arm_targets(demo_ctx):
    pytest.importorskip("torchao")
    from toolkit.pipeline.devices import load_device
    from toolkit.passes.quantize_pt2e import pick_quantizer

    ctx, _ = demo_ctx
    arm = ctx.device.model_copy(update={"arch": "aarch64"})
    ctx2 = type(ctx)(**{**ctx.__dict__, "device": arm})
    assert pick_quantizer("auto", ctx2)[1] == "ArmInductorQuantizer"
    assert pick_quantizer("auto", ctx)[1] == "X86InductorQuantizer"
    assert load_device("x86-avx512").default_recipe == "x86-engines"


def test_shared_module_call_sites_get_one_partition_each(tmp_path):
    """A module called twice (a ResNet block's self.relu): after re-exporting a .pt2 non-strict, torchao's
    partitioner grouped both calls into one partition with two outputs; split_shared_call_sites separates them."""
    pytest.importorskip("torchao")
    import torch
    import torch.nn as nn
    from torch.fx.passes.utils.source_matcher_utils import get_source_partitions

    from toolkit.passes.quantize_pt2e import split_shared_call_sites

    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.relu = nn.Conv2d(1, 4, 3, padding=1), nn.ReLU()

        def forward(self, x):
            y = self.relu(self.conv(x))
            return self.relu(y + x)

    path = tmp_path / "twice.pt2"
    x = torch.randn(2, 1, 8, 8)
    torch.export.save(torch.export.export(Twice().eval(), (x,)), str(path))
    graph = torch.export.export(torch.export.load(str(path)).module(), (x,), strict=False).module()
    before = get_source_partitions(graph.graph, [nn.ReLU])[nn.ReLU]
    assert [len(p.output_nodes) for p in before] == [2]
    assert split_shared_call_sites(graph) == 1  # the second call is re-keyed; the first keeps the module's path
    after = get_source_partitions(graph.graph, [nn.ReLU])[nn.ReLU]
    assert sorted(len(p.output_nodes) for p in after) == [1, 1]
    assert split_shared_call_sites(graph) == 0, "idempotent"
