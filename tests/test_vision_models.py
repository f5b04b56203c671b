"""The CNNs users bring (issue 12), built here from torch.nn (no torchvision/timm): a MobileNetV3-like block
(depthwise + SE + hardswish), a ConvNeXt-like block (LayerNorm + GELU), a bounded-batch .pt2 and a factory
model. Each compresses with every planned candidate built or failed for a named reason, the .pt2's own
dim range is kept, and no candidate is labelled int8 without Q/DQ nodes and int8 weights in its file.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
import yaml

BATCH_MAX = 1024  # the bound users write: Dim("batch", min=1, max=1024)


class SE(nn.Module):
    def __init__(self, c: int, r: int = 4):
        super().__init__()
        self.fc1, self.fc2 = nn.Conv2d(c, max(1, c // r), 1), nn.Conv2d(max(1, c // r), c, 1)

    def forward(self, x):
        return x * F.hardsigmoid(self.fc2(F.relu(self.fc1(F.adaptive_avg_pool2d(x, 1)))))


class MobileNetLike(nn.Module):
    """Stem conv + BN + hardswish, a depthwise block with squeeze-excite, pointwise projection, linear head."""

    def __init__(self, classes: int = 10, c: int = 8):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, c, 3, 1, 1, bias=False), nn.BatchNorm2d(c), nn.Hardswish())
        self.dw = nn.Sequential(nn.Conv2d(c, c, 3, 1, 1, groups=c, bias=False), nn.BatchNorm2d(c), nn.Hardswish())
        self.se = SE(c)
        self.pw = nn.Sequential(nn.Conv2d(c, 2 * c, 1, bias=False), nn.BatchNorm2d(2 * c), nn.Hardswish())
        self.head = nn.Linear(2 * c, classes)

    def forward(self, x):
        return self.head(F.adaptive_avg_pool2d(self.pw(self.se(self.dw(self.stem(x)))), 1).flatten(1))


class LayerNorm2d(nn.LayerNorm):
    def forward(self, x):
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class ConvNeXtLike(nn.Module):
    """Patchify stem + LayerNorm, one ConvNeXt block (7x7 depthwise, LayerNorm, Linear-GELU-Linear, layer scale)."""

    def __init__(self, classes: int = 10, c: int = 16):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, c, 2, 2), LayerNorm2d(c))
        self.dw, self.norm = nn.Conv2d(c, c, 7, padding=3, groups=c), nn.LayerNorm(c)
        self.fc1, self.fc2 = nn.Linear(c, 4 * c), nn.Linear(4 * c, c)
        self.gamma = nn.Parameter(torch.full((c,), 0.5))
        self.head_norm, self.head = nn.LayerNorm(c), nn.Linear(c, classes)

    def forward(self, x):
        x = self.stem(x)
        h = self.fc2(F.gelu(self.fc1(self.norm(self.dw(x).permute(0, 2, 3, 1))))) * self.gamma
        x = x + h.permute(0, 3, 1, 2)
        return self.head(self.head_norm(x.mean((2, 3))))


class BasicBlock(nn.Module):
    """A ResNet BasicBlock as torchvision writes it: conv-bn-relu, conv-bn, + skip, relu — one `self.relu` called twice."""

    def __init__(self, c: int):
        super().__init__()
        self.c1, self.b1 = nn.Conv2d(c, c, 3, 1, 1, bias=False), nn.BatchNorm2d(c)
        self.c2, self.b2 = nn.Conv2d(c, c, 3, 1, 1, bias=False), nn.BatchNorm2d(c)
        self.relu = nn.ReLU()

    def forward(self, x):
        return self.relu(self.b2(self.c2(self.relu(self.b1(self.c1(x))))) + x)


class ResNetLike(nn.Module):
    """Stem conv-bn-relu, two residual BasicBlocks, pooled linear head."""

    def __init__(self, classes: int = 10, c: int = 8):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, c, 3, 1, 1, bias=False), nn.BatchNorm2d(c), nn.ReLU())
        self.blocks = nn.Sequential(BasicBlock(c), BasicBlock(c))
        self.head = nn.Linear(c, classes)

    def forward(self, x):
        return self.head(F.adaptive_avg_pool2d(self.blocks(self.stem(x)), 1).flatten(1))


def mobilenet_like():  # factories (--model-factory tests.test_vision_models:mobilenet_like)
    return MobileNetLike()


def convnext_like():
    return ConvNeXtLike()


def resnet_like():
    return ResNetLike()


BLOCKS = {"mobilenet": MobileNetLike, "convnext": ConvNeXtLike, "resnet": ResNetLike}


@pytest.fixture(scope="module")
def trained(digits):
    """Each block trained for a moment on digits (8x8): real, non-trivial F1 so int8 collapse would show."""
    from toolkit.intake.demo import train_classifier

    out = {}
    for name, cls in BLOCKS.items():
        torch.manual_seed(0)
        out[name] = train_classifier(cls(), digits, epochs=3, seed=0, lr=1e-2).eval()
    return out


@pytest.fixture(scope="module")
def digits_npz(tmp_path_factory, digits):
    path = tmp_path_factory.mktemp("data") / "digits.npz"
    parts = [("train", digits.train), ("val", digits.val), ("test", digits.test)]
    np.savez(path, x=np.concatenate([s.inputs["x"] for _, s in parts]), y=np.concatenate([s.y for _, s in parts]),
             split=np.concatenate([np.full(len(s.y), t) for t, s in parts]), labels=np.array(digits.labels))
    return path


def quick_device(tmp: Path, name: str = "x86-avx512") -> Path:
    """The device profile with a short bench (the tests check what is built, not how fast)."""
    from toolkit.core.paths import DEVICES_DIR

    data = yaml.safe_load((DEVICES_DIR / f"{name}.yaml").read_text())
    data["bench"].update({"batch_sizes": [1], "warmup": 2, "iterations": 10})
    path = tmp / f"{name}-quick.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def bounded_pt2(module, path: Path) -> Path:
    from torch.export import Dim

    program = torch.export.export(module, (torch.zeros(4, 1, 8, 8),),
                                  dynamic_shapes=({0: Dim("batch", min=1, max=BATCH_MAX)},))
    torch.export.save(program, str(path))
    return path


def int8_contents(path: Path) -> tuple[int, int]:
    """(Q/DQ nodes, int8/uint8 weight initializers with more than one element) of an ONNX file.

    Scales and zero points (inputs 1 and 2 of Q/DQ) are not weights: per-channel zero points are int8 vectors,
    and INC's unfolded output once passed this count with every weight still fp32."""
    import onnx

    model = onnx.load(str(path))
    qdq = sum(n.op_type in ("QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "MatMulInteger",
                            "ConvInteger") for n in model.graph.node)
    qparams = {i for n in model.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear") for i in n.input[1:]}
    low = sum(t.data_type in (onnx.TensorProto.INT8, onnx.TensorProto.UINT8) and int(np.prod(t.dims)) > 1
              and t.name not in qparams for t in model.graph.initializer)
    return qdq, low


def assert_int8_is_int8(report: dict, run: Path) -> list[str]:
    """Every candidate labelled int8 holds Q/DQ nodes and int8 weights; returns the int8 candidates checked."""
    from toolkit.backends import inspect

    checked = []
    for c in report["candidates"]:
        if "int8" not in c["precision"]:
            continue
        path = run / c["path"]
        if path.suffix == ".onnx":
            qdq, low = int8_contents(path)
            assert qdq > 0 and low > 0, f"{c['id']} is labelled {c['precision']} but has {qdq} Q/DQ nodes, {low} int8 weights"
        else:  # OpenVINO IR, .pte, .pt2: read by the backend that owns the format
            facts = inspect(path)
            assert facts.quantized_ops > 0 and facts.int8_weight_fraction > 0, f"{c['id']}: {facts.to_dict()}"
        checked.append(c["id"])
    return checked


def assert_every_step_accounted(report: dict) -> None:
    built = {c["id"] for c in report["candidates"]}
    for step in report["plan"]:
        assert step["status"] in ("built", "cached", "resumed", "alias", "skip", "failed"), step
        if step["status"] in ("skip", "failed"):
            assert step["reason"], f"{step['id']} {step['status']} without a reason"
        elif step["status"] != "alias":
            assert step["id"] in built, f"{step['id']} built but not evaluated"


# --------------------------------------------------------------------------- the I/O contract keeps the archive's ranges

def test_bounded_batch_pt2_keeps_its_own_range(tmp_path, trained):
    from toolkit.core import modelio
    from toolkit.intake import checkpoints as intake

    loaded = intake.load(bounded_pt2(trained["mobilenet"], tmp_path / "m.pt2"))
    io = modelio.from_data({"x": np.zeros((3, 1, 8, 8), np.float32)}, 10, module=loaded.module)
    assert io.dim_ranges["batch"] == (1, BATCH_MAX) and io.ranges_from == "checkpoint"
    assert io.to_dict()["dim_ranges"]["batch"] == {"min": 1, "max": BATCH_MAX, "from": "checkpoint"}
    factory = modelio.from_data({"x": np.zeros((3, 1, 8, 8), np.float32)}, 10, module=trained["mobilenet"])
    assert factory.ranges_from == "data" and factory.dim_ranges["batch"][0] == 1


def test_export_failure_says_torchs_reason_and_fix(tmp_path, digits):
    from toolkit.core.errors import UnsupportedError
    from toolkit.passes.export import export_program
    from tests.conftest import make_pass_ctx

    class Branchy(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(64, 10)

        def forward(self, x):
            return self.fc(x.flatten(1)) if x.sum() > 0 else -self.fc(x.flatten(1))  # data-dependent control flow

    ctx = make_pass_ctx(tmp_path, digits, Branchy())
    ctx.source = "branchy.safetensors"
    with pytest.raises(UnsupportedError) as err:
        export_program(Branchy(), ctx)
    msg = str(err.value)
    assert msg.startswith("branchy.safetensors: torch.export") and "data-dependent" in msg and "\n" not in msg
    assert "batch in [1, 4096]" in msg and "ranges from the data" in msg


def test_int8_pass_that_quantizes_nothing_fails(tmp_path, digits, trained):
    from toolkit.core.errors import UnsupportedError
    from toolkit.passes import load_all
    from toolkit.passes.base import check_contents
    from toolkit.passes.export import export_onnx, save_baseline
    from tests.conftest import make_pass_ctx

    ctx = make_pass_ctx(tmp_path, digits, trained["mobilenet"])
    onnx_c = export_onnx(ctx, save_baseline(ctx, trained["mobilenet"]), None, "onnx-fp32")
    with pytest.raises(UnsupportedError, match="made no int8 model .0 quantized ops, 0% int8 weights"):
        check_contents(load_all()["ort_static_int8"], None, onnx_c.derive(precision="int8"))


def test_nncf_int8_quantizes_the_network_not_the_exports_shape_arithmetic(tmp_path, digits, trained):
    """NNCF on a dynamic-batch ONNX starts from the converted model (what ov-fp32 runs), not read_model's raw graph:
    read_model keeps the export's ShapeOf/Broadcast chains, NNCF quantized them too, and that int8 IR ran 2-3x slower."""
    pytest.importorskip("openvino")
    import collections

    import openvino as ov

    from tests.conftest import make_pass_ctx
    from toolkit.passes.export import export_onnx, save_baseline
    from toolkit.passes.openvino_ir import OpenVinoOptions, openvino_ir
    from toolkit.passes.quantize_nncf import NncfOptions, nncf_ptq

    def ops(path):
        return collections.Counter(op.get_type_name() for op in ov.Core().read_model(str(path)).get_ops())

    ctx = make_pass_ctx(tmp_path, digits, trained["mobilenet"])
    onnx_c = export_onnx(ctx, save_baseline(ctx, trained["mobilenet"]), None, "onnx-fp32")
    raw = ops(onnx_c.path)  # the case this is about: the export carries shape arithmetic for its dynamic batch
    assert raw["ShapeOf"] > 0, raw
    fp32 = ops(openvino_ir(ctx, onnx_c, OpenVinoOptions(), "ov-fp32").path)
    int8 = ops(nncf_ptq(ctx, onnx_c, NncfOptions(), "nncf-int8").path)
    assert int8["FakeQuantize"] > 0
    for kind in ("ShapeOf", "Broadcast", "Concat", "Gather"):
        assert int8[kind] == fp32[kind], f"{kind}: int8 IR {int8[kind]}, the converted fp32 IR {fp32[kind]}"
    for kind in ("Convolution", "GroupConvolution", "MatMul"):
        assert int8[kind] == fp32[kind], kind


# --------------------------------------------------------------------------- PT2E and INC on .pt2 inputs really are int8

@pytest.mark.parametrize("block", sorted(BLOCKS))
def test_pt2e_on_a_bounded_pt2_is_really_int8(tmp_path, digits, trained, block):
    pytest.importorskip("torchao")
    from tests.conftest import make_pass_ctx
    from toolkit.core import modelio
    from toolkit.intake import checkpoints as intake
    from toolkit.passes.export import save_baseline
    from toolkit.passes.quantize_pt2e import Pt2eOptions, pt2e_ptq

    loaded = intake.load(bounded_pt2(trained[block], tmp_path / f"{block}.pt2"))
    ctx = make_pass_ctx(tmp_path, digits, loaded.module)
    ctx.io = modelio.from_data(digits.val.inputs, digits.n_classes, module=loaded.module)
    base = save_baseline(ctx, loaded.module)
    cand = pt2e_ptq(ctx, base, Pt2eOptions(), "pt2e-int8")
    qdq, low = int8_contents(cand.path)
    assert qdq >= 4 and low >= 2, f"PT2E on a {block} .pt2 made {qdq} Q/DQ nodes and {low} int8 weights"
    assert cand.info["contents"]["quantized_ops"] == qdq and cand.info["contents"]["int8_weight_fraction"] > 0.5
    fp32_f1 = ctx.val_macro_f1(base)
    assert fp32_f1 - cand.info["val_macro_f1"] <= 0.05, "int8 stays close to fp32 on this block"
    import onnx

    dims = onnx.load(str(cand.path)).graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param == "batch", "the dynamic batch survives the re-export"


def test_inc_runs_on_a_pt2_input(tmp_path, digits, trained):
    pytest.importorskip("neural_compressor")
    from tests.conftest import make_pass_ctx
    from toolkit.core import modelio
    from toolkit.intake import checkpoints as intake
    from toolkit.passes.export import save_baseline
    from toolkit.passes.quantize_inc import IncOptions, inc_ptq

    loaded = intake.load(bounded_pt2(trained["convnext"], tmp_path / "c.pt2"))
    ctx = make_pass_ctx(tmp_path, digits, loaded.module)
    ctx.io = modelio.from_data(digits.val.inputs, digits.n_classes, module=loaded.module)
    cand = inc_ptq(ctx, save_baseline(ctx, loaded.module), IncOptions(tuning=False), "inc-int8")
    qdq, low = int8_contents(cand.path)
    assert qdq > 0 and low > 0 and cand.engine == "inc"


def test_pt2e_and_inc_quantize_a_residual_pt2(tmp_path, digits, trained):
    """A ResNet BasicBlock's shared ReLU made torchao refuse the .pt2 ("Input partition has more than one output
    node"): with one partition per call site both engines make int8 QDQ with every conv's weight int8."""
    pytest.importorskip("torchao")
    pytest.importorskip("neural_compressor")
    import onnx

    from tests.conftest import make_pass_ctx
    from toolkit.backends import inspect
    from toolkit.core import modelio
    from toolkit.intake import checkpoints as intake
    from toolkit.passes.export import save_baseline
    from toolkit.passes.quantize_inc import IncOptions, inc_ptq
    from toolkit.passes.quantize_pt2e import Pt2eOptions, pt2e_ptq

    loaded = intake.load(bounded_pt2(trained["resnet"], tmp_path / "resnet.pt2"))
    ctx = make_pass_ctx(tmp_path, digits, loaded.module)
    ctx.io = modelio.from_data(digits.val.inputs, digits.n_classes, module=loaded.module)
    base = save_baseline(ctx, loaded.module)
    fp32_f1 = ctx.val_macro_f1(base)
    convs = 5  # stem + 2 per block
    for cand in (pt2e_ptq(ctx, base, Pt2eOptions(), "pt2e-int8"), inc_ptq(ctx, base, IncOptions(tuning=False), "inc-int8")):
        # 4 call sites of the two blocks' shared ReLUs are re-keyed; the stem's own ReLU is not shared
        assert cand.info["shared_call_sites_split"] >= 2, cand.info
        model = onnx.load(str(cand.path))
        ops = [n.op_type for n in model.graph.node]
        qdq, low = int8_contents(cand.path)
        int8_weights = [t for t in model.graph.initializer if t.data_type == onnx.TensorProto.INT8 and len(t.dims) == 4]
        assert ops.count("QuantizeLinear") >= convs and ops.count("DequantizeLinear") >= 2 * convs, (cand.id, ops)
        assert len(int8_weights) == convs, f"{cand.id}: {len(int8_weights)} int8 conv weights of {convs}"
        facts = inspect(cand.path)
        assert facts.quantized_ops == qdq and facts.int8_weight_fraction > 0.9, (cand.id, facts.to_dict())
        assert fp32_f1 - cand.info["val_macro_f1"] <= 0.05, (cand.id, fp32_f1, cand.info["val_macro_f1"])


# --------------------------------------------------------------------------- remedies when default int8 collapses

def default_ptq(tmp_path, digits, module):
    """(ctx, the ONNX fp32 candidate, ORT's default static int8 of it), both in ctx.candidates for the remedies."""
    from tests.conftest import make_pass_ctx
    from toolkit.passes.export import export_onnx, save_baseline
    from toolkit.passes.quantize_ort import OrtStaticOptions, ort_static_int8

    ctx = make_pass_ctx(tmp_path, digits, module)
    onnx_c = export_onnx(ctx, save_baseline(ctx, module), None, "onnx-fp32")
    ptq = ort_static_int8(ctx, onnx_c, OrtStaticOptions(), "ort-int8-minmax")
    ctx.candidates = {"onnx-fp32": onnx_c, "ort-int8-minmax": ptq}
    return ctx, onnx_c, ptq


def test_remedy_fixes_a_collapsing_int8(tmp_path, digits, demo_model):
    from tests.passes.test_mixed_precision import outlier_model
    from toolkit.passes.remedies import REMEDIES, RemedyOptions, int8_remedies

    ctx, onnx_c, ptq = default_ptq(tmp_path, digits, outlier_model(demo_model.module))
    assert ctx.val_macro_f1(onnx_c) - ctx.val_macro_f1(ptq) > 0.01, "the default int8 must collapse on this model"
    cand = int8_remedies(ctx, onnx_c, RemedyOptions(ptq_candidate="ort-int8-minmax", tolerance=0.01), "ort-int8-remedied")
    info = cand.info
    assert info["fixed_by"] in REMEDIES and info["trials"][-1]["remedy"] == info["fixed_by"]
    assert info["trials"][-1]["within_tolerance"] and info["gate"]["ptq_val_drop"] > 0.01
    assert all(not t.get("within_tolerance") for t in info["trials"][:-1])
    assert info["trials"][0] == {"remedy": "per_channel", "what": REMEDIES["per_channel"][0],
                                 "skipped": "the PTQ candidate already used it"}
    assert ctx.val_macro_f1(onnx_c) - ctx.val_macro_f1(cand) <= 0.01 + 1e-9
    qdq, low = int8_contents(cand.path)
    assert qdq > 0 and low > 0
    ok_ptq = ctx.candidates["onnx-fp32"]  # a PTQ within the gate: skipped, said
    ctx.candidates["fine"] = ok_ptq
    from toolkit.core.errors import StepNotNeeded

    with pytest.raises(StepNotNeeded, match="meets the F1 gate"):
        int8_remedies(ctx, onnx_c, RemedyOptions(ptq_candidate="fine"), "again")


def last_layer_outlier(demo_module, units: int = 2):
    """The demo CNN with the head's input columns of its `units` most used hidden units scaled x1000 (and those
    units scaled /1000 in the layer before): the same function in fp32, but every row of the head holds a weight
    1000x its others, so per-channel int8 crushes the rest of the head — a last layer that needs higher precision."""
    import copy

    m = copy.deepcopy(demo_module).eval()
    lin1, head = m[6], m[8]
    with torch.no_grad():
        for k in torch.argsort(head.weight.abs().sum(0), descending=True)[:units]:
            head.weight[:, k] *= 1000.0
            lin1.weight[k] /= 1000.0
            lin1.bias[k] /= 1000.0
    return m


def test_first_last_fp32_is_the_remedy_that_fixes_a_collapsing_head(tmp_path, digits, demo_model):
    from toolkit.passes.remedies import RemedyOptions, int8_remedies

    ctx, onnx_c, ptq = default_ptq(tmp_path, digits, last_layer_outlier(demo_model.module))
    assert ctx.val_macro_f1(onnx_c) - ctx.val_macro_f1(ptq) > 0.5, "per-channel int8 must collapse on this head"
    # 0.02: the rest of the network, still int8, costs ~1.4 pt here; the point is which remedy comes first
    cand = int8_remedies(ctx, onnx_c, RemedyOptions(ptq_candidate="ort-int8-minmax", tolerance=0.02), "ort-int8-remedied")
    info = cand.info
    assert info["fixed_by"] == "first_last_fp32" and info["fixed_by_what"] == "first and last layers kept fp32", info["trials"]
    names = {t["remedy"]: t for t in info["trials"]}
    assert not names["percentile"]["within_tolerance"] and not names["entropy"]["within_tolerance"]
    assert len(info["excluded_nodes"]) == 2 and cand.precision == "mixed-int8"  # the stem conv and the head stay fp32
    qdq, low = int8_contents(cand.path)
    assert qdq > 0 and low > 0
    assert ctx.val_macro_f1(onnx_c) - ctx.val_macro_f1(cand) <= 0.02 + 1e-9


# --------------------------------------------------------------------------- end to end: default and x86 recipes

def test_default_recipe_int8_candidates_hold_int8(demo_run):
    import json

    report = json.loads((demo_run.run_dir / "report" / "report.json").read_text())
    checked = assert_int8_is_int8(report, demo_run.run_dir)
    assert len(checked) >= 3, checked
    assert_every_step_accounted(report)


@pytest.mark.slow  # minutes each: every engine of the recipe (INC autotune, NNCF accuracy control)
@pytest.mark.parametrize("block,form", [(b, f) for b in sorted(BLOCKS) for f in ("pt2", "factory")])
def test_x86_recipe_on_user_cnns(tmp_path, trained, digits_npz, block, form):
    """x86-engines on a bounded-batch .pt2 and on a safetensors + factory model: every step accounted for,
    every int8 candidate holds int8, the .pt2's batch range is in the report and the bundle."""
    import json

    import toolkit

    if form == "pt2":
        ckpt, factory = bounded_pt2(trained[block], tmp_path / f"{block}.pt2"), None
    else:
        from safetensors.torch import save_file

        ckpt = tmp_path / f"{block}.safetensors"
        save_file({k: v.contiguous() for k, v in trained[block].state_dict().items()}, str(ckpt))
        factory = f"tests.test_vision_models:{block}_like"  # mobilenet_like, convnext_like, resnet_like
    from toolkit.core.errors import GateFailed

    run = tmp_path / "run"
    try:  # a model trained for seconds may miss the profile's ECE gates: the run still finishes and says so
        toolkit.compress(ckpt, device=str(quick_device(tmp_path)), recipe="x86-engines", data=digits_npz, out=run,
                         model_factory=factory)
    except GateFailed:
        pass
    report = json.loads((run / "report" / "report.json").read_text())
    assert_every_step_accounted(report)
    checked = assert_int8_is_int8(report, run)
    assert {"ort-int8-minmax", "pt2e-int8"} <= set(checked), checked
    if block == "resnet":  # the residual block's shared ReLU no longer stops PT2E or INC (one partition per call site)
        assert "inc-int8" in checked, [(p["id"], p["status"], p["reason"]) for p in report["plan"]]
    ranges = report["io"]["dim_ranges"]["batch"]
    assert ranges == ({"min": 1, "max": BATCH_MAX, "from": "checkpoint"} if form == "pt2"
                      else {"min": 1, "max": 4096, "from": "data"})
    if report["selected"]:
        manifest = json.loads((run / "bundle" / "manifest.json").read_text())
        assert manifest["io"]["dim_ranges"]["batch"] == ranges


def test_steps_past_the_time_budget_are_skipped_with_that_reason(tmp_path):
    import json

    import toolkit

    recipe = {"name": "tight", "search": {"max_minutes": 1e-9},  # 60 ns: over before any step can start
              "steps": [{"id": "onnx-fp32", "pass": "export_onnx"},
                        {"id": "ort-int8", "pass": "ort_static_int8", "from": "onnx-fp32"}]}
    path = tmp_path / "tight.yaml"
    path.write_text(yaml.safe_dump(recipe))
    from toolkit.core.errors import GateFailed

    try:  # the torch baseline alone may miss the profile's latency budget on a busy host: the run still finishes
        toolkit.compress(None, device=str(quick_device(tmp_path)), recipe=str(path), out=tmp_path / "run")
    except GateFailed:
        pass
    plan = {p["id"]: p for p in json.loads((tmp_path / "run" / "report" / "report.json").read_text())["plan"]}
    assert plan["onnx-fp32"]["status"] == "skip"
    assert plan["onnx-fp32"]["reason"] == "over the recipe's time budget (search.max_minutes: 1e-09)"
    assert plan["ort-int8"]["status"] == "skip" and plan["ort-int8"]["reason"]  # its input never started
