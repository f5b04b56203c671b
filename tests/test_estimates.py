"""Target estimates: exact MAC counts on tiny models, and a roofline that says what bounds it."""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest

from toolkit.pipeline.devices import Accelerator, DeviceProfile
from toolkit.core.errors import UnsupportedError
from toolkit.pipeline.estimates import estimate_for_device, onnx_cost, pick_accelerator, roofline_latency_ms


def _export(module, example, path: Path) -> Path:
    """torch.onnx.export with the dynamo exporter and a dynamic batch (example batch 2, per STACK-NOTES)."""
    import torch

    batch = torch.export.Dim("batch")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module.eval(), (example,), str(path), dynamo=True, dynamic_shapes=({0: batch},),
                          input_names=["x"], output_names=["logits"])
    return path


@pytest.fixture(scope="module")
def conv_onnx(tmp_path_factory) -> Path:
    import torch

    torch.manual_seed(0)
    return _export(torch.nn.Conv2d(3, 8, 3, padding=1), torch.randn(2, 3, 16, 16),
                   tmp_path_factory.mktemp("conv") / "conv.onnx")


@pytest.fixture(scope="module")
def linear_onnx(tmp_path_factory) -> Path:
    import torch

    torch.manual_seed(0)
    return _export(torch.nn.Linear(64, 10), torch.randn(2, 64), tmp_path_factory.mktemp("lin") / "linear.onnx")


def _graph(path: Path, nodes, inputs, outputs, inits) -> Path:
    import onnx
    from onnx import helper

    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def test_conv_macs_and_bytes(conv_onnx):
    cost = onnx_cost(conv_onnx)
    assert cost["kind"].startswith("estimate")
    assert cost["batch_size"] == 1
    assert cost["macs"] == 8 * 16 * 16 * 3 * 3 * 3
    assert cost["flops"] == 2 * cost["macs"]
    assert cost["params"] == 8 * 3 * 3 * 3 + 8
    assert cost["weight_bytes"] == cost["params"] * 4
    assert cost["activation_bytes"] == 8 * 16 * 16 * 4
    assert cost["input_bytes"] == 3 * 16 * 16 * 4
    assert cost["per_op"] == {"Conv": 1}
    assert cost["uncounted"] == []


def test_linear_macs_and_bytes(linear_onnx):
    cost = onnx_cost(linear_onnx)
    assert cost["macs"] == 640
    assert cost["params"] == 650
    assert cost["weight_bytes"] == 650 * 4
    assert cost["activation_bytes"] == 10 * 4


def test_batch_size_scales_macs(linear_onnx):
    assert onnx_cost(linear_onnx, batch_size=4)["macs"] == 4 * 640


def test_depthwise_convtranspose_and_batched_matmul(tmp_path):
    from onnx import TensorProto, helper, numpy_helper

    f32 = np.float32
    inits = [
        numpy_helper.from_array(np.ones((8, 1, 3, 3), f32), "dw_w"),        # depthwise, groups=8
        numpy_helper.from_array(np.ones((8, 2, 3, 3), f32), "ct_w"),        # ConvTranspose 8 -> 2
        numpy_helper.from_array(np.ones((12, 7), f32), "mm_w"),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "dw_w"], ["dw"], group=8),                   # 1x8x8x8
        helper.make_node("ConvTranspose", ["dw", "ct_w"], ["ct"]),                  # 1x2x10x10
        helper.make_node("Reshape", ["ct", "shape"], ["r"]),                        # 1x5x4x10 ... see below
        helper.make_node("MatMul", ["q", "mm_w"], ["y"]),                           # batched: 1x4x5x12 @ 12x7
    ]
    inits.append(numpy_helper.from_array(np.array([1, 5, 4, 10], np.int64), "shape"))
    path = _graph(
        tmp_path / "mix.onnx", nodes,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 8, 10, 10]),
         helper.make_tensor_value_info("q", TensorProto.FLOAT, ["N", 4, 5, 12])],
        [helper.make_tensor_value_info("r", TensorProto.FLOAT, None),
         helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        inits,
    )
    cost = onnx_cost(path)
    assert cost["macs_by_op"]["Conv"] == 8 * 8 * 8 * (1 * 3 * 3)           # out elements x fan-in per group
    assert cost["macs_by_op"]["ConvTranspose"] == (8 * 8 * 8) * (2 * 3 * 3)  # input elements x scatter
    assert cost["macs_by_op"]["MatMul"] == 4 * 5 * 7 * 12
    assert cost["params"] == 72 + 144 + 84          # the int64 shape tensor is not a parameter
    assert cost["weight_bytes"] == (72 + 144 + 84) * 4 + 4 * 8


def test_sequence_dims_need_a_size(tmp_path):
    from onnx import TensorProto, helper, numpy_helper

    path = _graph(
        tmp_path / "seq.onnx",
        [helper.make_node("MatMul", ["h", "w"], ["y"])],
        [helper.make_tensor_value_info("h", TensorProto.FLOAT, ["batch", "seq", 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "seq", 4])],
        [numpy_helper.from_array(np.ones((16, 4), np.float32), "w")],
    )
    with pytest.raises(UnsupportedError, match="seq"):
        onnx_cost(path)
    cost = onnx_cost(path, dim_values={"seq": 128})
    assert cost["macs"] == 128 * 16 * 4
    assert cost["dims"] == {"batch": 1, "seq": 128}


def test_qdq_model_counts_int8_weights(tmp_path, conv_onnx):
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self):
            rng = np.random.default_rng(0)
            self.batches = iter([{"x": rng.standard_normal((1, 3, 16, 16)).astype(np.float32)} for _ in range(4)])

        def get_next(self):
            return next(self.batches, None)

    qdq = tmp_path / "conv.qdq.onnx"
    quantize_static(str(conv_onnx), str(qdq), Reader(), quant_format=QuantFormat.QDQ,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    fp32, q = onnx_cost(conv_onnx), onnx_cost(qdq)
    assert q["macs"] == fp32["macs"]
    assert q["quantized_macs"] == q["macs"]           # the Conv sits between DequantizeLinear nodes
    # 1 byte per int8 weight, plus the int8 zero point(s) (per tensor or per channel)
    assert 8 * 3 * 3 * 3 < q["weight_bytes_by_dtype"]["INT8"] <= 8 * 3 * 3 * 3 + 8
    assert q["weight_bytes"] < fp32["weight_bytes"] / 2
    assert q["per_op"]["DequantizeLinear"] >= 2


def _acc(**specs) -> Accelerator:
    return Accelerator(name="test-gpu", kind="gpu", source="test", **specs)


def test_roofline_memory_bound_on_high_tops_device(conv_onnx):
    cost = onnx_cost(conv_onnx)
    est = roofline_latency_ms(cost, _acc(peak_int8_tops=1000, peak_fp16_tflops=500, memory_bandwidth_gbs=50), "fp16")
    assert est["kind"] == "estimate (roofline lower bound)"
    assert est["bound"] == "memory"
    assert est["estimate_ms"] == est["memory_bound_ms"] > est["compute_bound_ms"]
    # fp32 tensors move as 2 bytes at fp16
    nbytes = (cost["weight_bytes"] + cost["activation_bytes"]) // 2
    assert est["memory_bound_ms"] == pytest.approx(nbytes / 50e9 * 1e3)
    assert est["compute_bound_ms"] == pytest.approx(cost["flops"] / 500e12 * 1e3)
    assert "never reached" in est["assumptions"]
    assert est["reason"] is None


def test_roofline_compute_bound_with_huge_bandwidth(conv_onnx):
    cost = onnx_cost(conv_onnx)
    est = roofline_latency_ms(cost, _acc(peak_int8_tops=1, memory_bandwidth_gbs=1e9), "int8")
    assert est["bound"] == "compute"
    assert est["estimate_ms"] == est["compute_bound_ms"] == pytest.approx(cost["flops"] / 1e12 * 1e3)


def test_roofline_fp32_falls_back_to_half_fp16_peak(linear_onnx):
    cost = onnx_cost(linear_onnx)
    est = roofline_latency_ms(cost, _acc(peak_fp16_tflops=2, memory_bandwidth_gbs=1e9), "fp32")
    assert est["compute_bound_ms"] == pytest.approx(cost["flops"] / 1e12 * 1e3)
    assert "peak_fp16_tflops / 2" in est["assumptions"]


def test_roofline_missing_specs_give_a_reason(linear_onnx):
    cost = onnx_cost(linear_onnx)
    est = roofline_latency_ms(cost, _acc(peak_fp16_tflops=10), "int8")
    assert est["estimate_ms"] is None and est["compute_bound_ms"] is None and est["bound"] is None
    assert "peak_int8_tops" in est["reason"] and "memory_bandwidth_gbs" in est["reason"]


def _device(backends, accelerators) -> DeviceProfile:
    return DeviceProfile(
        name="test-device", description="test", arch="aarch64", accelerators=accelerators, backends=backends,
        precisions=["fp16", "int8"], stand_in={"backend": "onnxruntime", "note": "host stand-in"},
    )


def test_estimate_for_device_picks_the_gpu_for_tensorrt(conv_onnx):
    cpu = Accelerator(name="cpu", kind="cpu", peak_fp32_tflops=0.1, memory_bandwidth_gbs=10, source="test")
    gpu = _acc(peak_int8_tops=40, peak_fp16_tflops=20, memory_bandwidth_gbs=68)
    dev = _device(["tensorrt", "onnxruntime"], [cpu, gpu])
    assert pick_accelerator(dev).name == "test-gpu"
    est = estimate_for_device(conv_onnx, "fp16", dev)
    assert est["accelerator"] == "test-gpu" and est["kind"] == "estimate (roofline lower bound)"
    assert est["estimate_ms"] == est["roofline"]["estimate_ms"] > 0
    assert est["cost"]["macs"] == 8 * 16 * 16 * 27
    assert pick_accelerator(_device(["onnxruntime"], [cpu, gpu])).name == "cpu"
    fp32 = estimate_for_device(conv_onnx, "fp32", dev)
    assert "does not list fp32" in fp32["roofline"]["assumptions"]
