"""Target estimates from an ONNX graph and a device profile's public specs.

These numbers are *estimates*, never measurements (DESIGN.md, honesty rules): every
dict this module returns carries a ``kind`` that says so, and the roofline carries the
assumptions it rests on. They exist because the target (a Jetson, an NPU) is often not
the host: the report can then show "at least X ms on the target, from its specs" next to
what was measured on the host, without mixing the two.

* ``onnx_cost``: MACs, FLOPs, stored weight bytes, activation bytes, parameters and op
  counts of an ONNX model at batch 1, by static shape inference.
* ``roofline_latency_ms``: max(compute time at peak, memory time at peak bandwidth), a
  lower bound: real kernels reach neither peak.
* ``estimate_for_device``: the two together for a DeviceProfile.
"""
from __future__ import annotations

import math
from collections import Counter
from pathlib import Path
from typing import Any, Mapping

from toolkit.pipeline.devices import Accelerator, DeviceProfile
from toolkit.core.errors import DataError, UnsupportedError

COST_KIND = "estimate (static count from the ONNX graph)"
ROOFLINE_KIND = "estimate (roofline lower bound)"

# Ops whose arithmetic we count, and which of their inputs are the activation / the weight.
_MATMUL_LIKE = {"MatMul": (0, 1), "MatMulInteger": (0, 1), "QLinearMatMul": (0, 3)}
_CONV_LIKE = {"Conv": (0, 1), "ConvInteger": (0, 1), "QLinearConv": (0, 3)}
_INTEGER_OPS = {"MatMulInteger", "QLinearMatMul", "ConvInteger", "QLinearConv"}
# Heavy ops we do not count: listed in the result so nobody reads a low MAC count as the truth.
_NOT_COUNTED = {"Einsum", "LSTM", "GRU", "RNN", "Attention", "MultiHeadAttention", "ConvInteger4"}
# Integer dtypes that hold indices and shapes, not parameters.
_INDEX_DTYPES = {"INT64", "BOOL", "STRING"}
_SUB_BYTE_BITS = {"INT4": 4, "UINT4": 4, "FLOAT4E2M1": 4, "INT2": 2, "UINT2": 2}


def _dtype_name(elem_type: int) -> str:
    import onnx  # noqa: PLC0415

    return onnx.TensorProto.DataType.Name(elem_type)


def _dtype_bits(elem_type: int) -> int | None:
    """Storage bits per element (int4 is 4), None for strings/undefined."""
    import onnx  # noqa: PLC0415

    name = _dtype_name(elem_type)
    if name in _SUB_BYTE_BITS:
        return _SUB_BYTE_BITS[name]
    if name in ("STRING", "UNDEFINED"):
        return None
    try:
        return int(onnx.helper.tensor_dtype_to_np_dtype(elem_type).itemsize) * 8
    except (KeyError, TypeError, ValueError):
        return None


def _nbytes(elem_type: int, numel: int) -> int:
    bits = _dtype_bits(elem_type)
    return 0 if bits is None else math.ceil(numel * bits / 8)


def _fix_input_dims(model, batch_size: int, dim_values: Mapping[str, int]) -> dict[str, int]:
    """Give every graph input a concrete shape: axis 0 is the batch, named dims come from dim_values.

    Shape info the exporter left in value_info and on the outputs is symbolic (``batch``,
    ``s0*2``), so it is dropped and re-inferred from the now-static inputs.
    """
    inits = {i.name for i in model.graph.initializer}
    resolved: dict[str, int] = {}
    for inp in model.graph.input:
        if inp.name in inits or not inp.type.HasField("tensor_type"):
            continue
        for axis, dim in enumerate(inp.type.tensor_type.shape.dim):
            if dim.HasField("dim_value") and dim.dim_value > 0:
                continue
            param = dim.dim_param
            if param and param in dim_values:
                value = int(dim_values[param])
            elif axis == 0:
                value = int(batch_size)
            else:
                raise UnsupportedError(
                    f"input '{inp.name}' axis {axis} is dynamic ('{param or '?'}') and not the batch; "
                    f"pass its example size, e.g. dim_values={{'{param or 'seq'}': 128}}"
                )
            dim.Clear()
            dim.dim_value = value
            if param:
                resolved[param] = value
    del model.graph.value_info[:]
    for out in model.graph.output:
        if out.type.HasField("tensor_type"):
            out.type.tensor_type.ClearField("shape")
    return resolved


def _attr(node, name: str, default: Any = None) -> Any:
    import onnx  # noqa: PLC0415

    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def onnx_cost(onnx_path: str | Path, *, batch_size: int = 1, dim_values: Mapping[str, int] | None = None) -> dict[str, Any]:
    """Static cost of an ONNX model at ``batch_size`` (1 by default).

    MACs are counted for Conv (grouped/depthwise included: output elements times the
    weight's per-output fan-in), ConvTranspose, Gemm, MatMul (batched included) and their
    integer forms (QLinearConv, QLinearMatMul, ConvInteger, MatMulInteger). In a QDQ model
    the Conv/MatMul/Gemm whose inputs come from DequantizeLinear are the quantized ones:
    their MACs also go into ``quantized_macs``. ``flops`` is 2 x MACs; elementwise ops are
    not counted (they are memory-bound and show up in activation bytes).

    ``weight_bytes`` are the stored bytes of initializers and Constant tensors (int8
    weights count 1 byte, scales and zero points included). ``activation_bytes`` is the
    sum of every node output's size, each written once, leaving out outputs computed from
    constants alone (weight DequantizeLinear, shape arithmetic), which runtimes fold.
    Dynamic dims other than the batch need ``dim_values`` (by dim name).
    """
    import onnx  # noqa: PLC0415

    path = Path(onnx_path)
    if not path.is_file():
        raise DataError(f"{path}: ONNX file not found")
    try:
        model = onnx.load(str(path), load_external_data=False)  # sizes come from dims: no need to read GBs
    except Exception as exc:  # onnx raises DecodeError and friends, not one type
        raise DataError(f"{path}: not a readable ONNX model ({exc})") from exc
    resolved = _fix_input_dims(model, batch_size, dict(dim_values or {}))
    try:
        model = onnx.shape_inference.infer_shapes(model, check_type=False, strict_mode=False, data_prop=True)
    except Exception as exc:
        raise UnsupportedError(f"{path}: ONNX shape inference failed ({exc}); costs need static shapes") from exc

    graph = model.graph
    shapes: dict[str, tuple[int, tuple[int, ...] | None]] = {}
    for vi in [*graph.input, *graph.value_info, *graph.output]:
        tt = vi.type.tensor_type
        if not vi.type.HasField("tensor_type"):
            continue
        dims = None
        if tt.HasField("shape") and all(d.HasField("dim_value") for d in tt.shape.dim):
            dims = tuple(int(d.dim_value) for d in tt.shape.dim)
        shapes[vi.name] = (tt.elem_type, dims)

    constants: set[str] = set()
    weight_bytes = 0
    params = 0
    weight_bytes_by_dtype: Counter[str] = Counter()

    def add_weight(tensor) -> None:
        nonlocal weight_bytes, params
        numel = math.prod(tensor.dims)
        nbytes = _nbytes(tensor.data_type, numel)
        weight_bytes += nbytes
        weight_bytes_by_dtype[_dtype_name(tensor.data_type)] += nbytes
        if _dtype_name(tensor.data_type) not in _INDEX_DTYPES:
            params += numel
        constants.add(tensor.name)
        shapes[tensor.name] = (tensor.data_type, tuple(int(d) for d in tensor.dims))

    for init in graph.initializer:
        add_weight(init)
    for node in graph.node:
        if node.op_type == "Constant" and node.output:
            value = _attr(node, "value")
            if value is not None and hasattr(value, "dims"):
                value.name = node.output[0]
                add_weight(value)
            else:
                constants.add(node.output[0])

    producer = {out: node for node in graph.node for out in node.output}

    def from_dq(name: str) -> bool:
        node = producer.get(name)
        return node is not None and node.op_type == "DequantizeLinear"

    def dims_of(name: str) -> tuple[int, ...] | None:
        return shapes.get(name, (0, None))[1]

    per_op: Counter[str] = Counter(n.op_type for n in graph.node)
    macs_by_op: Counter[str] = Counter()
    macs = quantized_macs = 0
    activation_bytes = 0
    activation_bytes_by_dtype: Counter[str] = Counter()
    uncounted: list[str] = []
    unknown_shapes = 0

    for node in graph.node:
        op = node.op_type
        label = f"{op} '{node.name or node.output[0]}'"
        # Outputs computed from constants only are folded by every runtime: not activations.
        folded = op == "Constant" or (node.input and all(not i or i in constants for i in node.input))
        if folded:
            constants.update(node.output)
        else:
            for out in node.output:
                if not out:
                    continue
                elem, dims = shapes.get(out, (0, None))
                if dims is None:
                    unknown_shapes += 1
                    continue
                nbytes = _nbytes(elem, math.prod(dims))
                activation_bytes += nbytes
                activation_bytes_by_dtype[_dtype_name(elem)] += nbytes

        count: int | None = None
        if op in _MATMUL_LIKE or op == "Gemm":
            a_idx, b_idx = _MATMUL_LIKE.get(op, (0, 1))
            a, out = dims_of(node.input[a_idx]), dims_of(node.output[0])
            if a is None or out is None:
                uncounted.append(f"{label}: shape unknown")
                continue
            if op == "Gemm":
                k = a[0] if _attr(node, "transA", 0) else a[1]
            else:
                k = a[-1]
            count = math.prod(out) * k
        elif op in _CONV_LIKE:
            _, w_idx = _CONV_LIKE[op]
            w, out = dims_of(node.input[w_idx]), dims_of(node.output[0])
            if w is None or out is None:
                uncounted.append(f"{label}: shape unknown")
                continue
            count = math.prod(out) * math.prod(w[1:])  # out elements x (C/groups x kernel): grouped included
        elif op == "ConvTranspose":
            x, w = dims_of(node.input[0]), dims_of(node.input[1])
            if x is None or w is None:
                uncounted.append(f"{label}: shape unknown")
                continue
            count = math.prod(x) * math.prod(w[1:])  # every input element scatters into (M/groups x kernel)
        elif op in _NOT_COUNTED:
            uncounted.append(f"{label}: MACs of {op} are not counted")
        if count is None:
            continue
        macs += count
        macs_by_op[op] += count
        if op in _INTEGER_OPS or (len(node.input) >= 2 and from_dq(node.input[0]) and from_dq(node.input[1])):
            quantized_macs += count

    input_bytes = 0
    for inp in graph.input:
        elem, dims = shapes.get(inp.name, (0, None))
        if inp.name not in constants and dims is not None:
            input_bytes += _nbytes(elem, math.prod(dims))

    return {
        "kind": COST_KIND,
        "source": str(path),
        "batch_size": int(batch_size),
        "dims": resolved,
        "macs": int(macs),
        "flops": int(2 * macs),
        "quantized_macs": int(quantized_macs),
        "params": int(params),
        "weight_bytes": int(weight_bytes),
        "activation_bytes": int(activation_bytes),
        "input_bytes": int(input_bytes),
        "weight_bytes_by_dtype": dict(weight_bytes_by_dtype),
        "activation_bytes_by_dtype": dict(activation_bytes_by_dtype),
        "per_op": dict(sorted(per_op.items())),
        "macs_by_op": dict(macs_by_op),
        "uncounted": uncounted,
        "tensors_with_unknown_shape": unknown_shapes,
    }


def _bytes_at_precision(cost: Mapping[str, Any], precision: str) -> tuple[int, str]:
    """Bytes moved at the target precision, and what was assumed.

    An fp32 ONNX built at fp16/bf16 (TensorRT --fp16, OpenVINO f16) stores and moves fp32
    tensors as 2-byte values, so their bytes are halved; otherwise bytes are as stored.
    """
    weights = int(cost["weight_bytes"])
    acts = int(cost["activation_bytes"])
    if precision in ("fp16", "bf16"):
        w32 = int(cost.get("weight_bytes_by_dtype", {}).get("FLOAT", 0))
        a32 = int(cost.get("activation_bytes_by_dtype", {}).get("FLOAT", 0))
        return weights - w32 // 2 + acts - a32 // 2, "fp32 tensors counted at 2 bytes (run at " + precision + ")"
    return weights + acts, "bytes as stored in the ONNX"


def _peak_tflops(acc: Accelerator, precision: str) -> tuple[float | None, str]:
    """Peak dense throughput (tera-ops/s) for a precision, and the note on where it came from."""
    if precision == "int8":
        return acc.peak_int8_tops, "peak_int8_tops"
    if precision == "fp16":
        return acc.peak_fp16_tflops, "peak_fp16_tflops"
    if precision == "bf16":
        return acc.peak_fp16_tflops, "peak_fp16_tflops (bf16 assumed to run at the fp16 rate)"
    if precision == "fp32":
        if acc.peak_fp32_tflops is not None:
            return acc.peak_fp32_tflops, "peak_fp32_tflops"
        if acc.peak_fp16_tflops is not None:
            return acc.peak_fp16_tflops / 2, "peak_fp32_tflops missing: assumed peak_fp16_tflops / 2"
        return None, "peak_fp32_tflops"
    raise UnsupportedError(f"precision '{precision}' has no roofline; use fp32, fp16, bf16 or int8")


def roofline_latency_ms(cost: Mapping[str, Any], accelerator: Accelerator, precision: str) -> dict[str, Any]:
    """Roofline lower bound of one inference: max(flops / peak, bytes / bandwidth).

    A lower bound, not a prediction: it assumes kernels at peak throughput and bandwidth,
    every weight read once and every activation written once from DRAM (no re-reads, no
    launch overhead). When the accelerator's profile lacks a needed spec the numbers are
    None and ``reason`` says which spec is missing; nothing is invented.
    """
    result: dict[str, Any] = {
        "kind": ROOFLINE_KIND,
        "accelerator": accelerator.name,
        "precision": precision,
        "estimate_ms": None,
        "compute_bound_ms": None,
        "memory_bound_ms": None,
        "bound": None,
        "reason": None,
        "assumptions": "",
    }
    peak, peak_note = _peak_tflops(accelerator, precision)
    missing = []
    if peak is None:
        missing.append(peak_note)
    if accelerator.memory_bandwidth_gbs is None:
        missing.append("memory_bandwidth_gbs")
    if missing:
        result["reason"] = (f"accelerator '{accelerator.name}' has no {' or '.join(missing)} in its device profile; "
                            f"no {precision} roofline estimate")
        return result
    flops = int(cost["flops"])
    nbytes, bytes_note = _bytes_at_precision(cost, precision)
    compute_ms = flops / (peak * 1e12) * 1e3
    memory_ms = nbytes / (accelerator.memory_bandwidth_gbs * 1e9) * 1e3
    bound = "compute" if compute_ms >= memory_ms else "memory"
    notes = [
        f"{flops} FLOPs (2 x MACs, elementwise ops not counted) at {peak_note} = {peak:g} T/s",
        f"{nbytes} bytes (weights read once + activations written once; {bytes_note}) at "
        f"{accelerator.memory_bandwidth_gbs:g} GB/s",
        "peak throughput and bandwidth are never reached in practice: the real latency is higher",
        f"specs from {accelerator.source}",
    ]
    if precision == "int8" and cost.get("macs") and cost.get("quantized_macs", 0) < cost["macs"]:
        notes.append("not every MAC is quantized; all were counted at the int8 peak")
    if cost.get("uncounted"):
        notes.append(f"{len(cost['uncounted'])} op(s) not counted")
    result.update({
        "estimate_ms": max(compute_ms, memory_ms),
        "compute_bound_ms": compute_ms,
        "memory_bound_ms": memory_ms,
        "bound": bound,
        "flops": flops,
        "bytes": nbytes,
        "assumptions": "; ".join(notes),
    })
    return result


def pick_accelerator(device: DeviceProfile) -> Accelerator:
    """The accelerator the preferred backend runs on: the GPU for TensorRT-first devices, else the first listed."""
    if not device.accelerators:
        raise UnsupportedError(f"device '{device.name}' lists no accelerators; no estimate")
    if device.backends[0] == "tensorrt":
        for acc in device.accelerators:
            if acc.kind == "gpu":
                return acc
    return device.accelerators[0]


def estimate_for_device(onnx_path: str | Path, precision: str, device: DeviceProfile, *,
                        dim_values: Mapping[str, int] | None = None) -> dict[str, Any]:
    """Cost of the model plus its roofline lower bound on the device's preferred accelerator, batch 1."""
    cost = onnx_cost(onnx_path, dim_values=dim_values)
    acc = pick_accelerator(device)
    roof = roofline_latency_ms(cost, acc, precision)
    if precision not in device.precisions:
        note = f"device '{device.name}' does not list {precision} among its precisions ({', '.join(device.precisions)})"
        roof["assumptions"] = "; ".join(x for x in (roof["assumptions"], note) if x)
    return {
        "kind": ROOFLINE_KIND,
        "device": device.name,
        "accelerator": acc.name,
        "accelerator_kind": acc.kind,
        "precision": precision,
        "batch_size": cost["batch_size"],
        "cost": cost,
        "roofline": roof,
        "estimate_ms": roof["estimate_ms"],
        "reason": roof["reason"],
    }


__all__ = ["onnx_cost", "roofline_latency_ms", "estimate_for_device", "pick_accelerator", "COST_KIND", "ROOFLINE_KIND"]
