"""ONNX introspection, once: graph inputs, stored precision, quantized-op count, int8 weight share.

Used by the ONNX Runtime backend's inspect(), TensorRT's build shapes, bench's input synthesis,
the pipeline's model/data fit check and the passes' own gates. Reads the graph only
(external data is not loaded): cheap on any model size.
"""
from __future__ import annotations

from pathlib import Path

from toolkit.core.artifacts import ArtifactFacts, InputFacts

DYNAMIC_INT8_OPS = {"DynamicQuantizeLinear", "MatMulInteger", "DynamicQuantizeMatMul", "DynamicQuantizeLSTM"}
STATIC_INT8_OPS = {"QuantizeLinear", "DequantizeLinear", "QLinearConv", "QLinearMatMul", "ConvInteger", "QGemm",
                   "QLinearAdd", "QLinearMul", "QLinearGlobalAveragePool", "QLinearSigmoid", "QAttention"}
STANDARD_DOMAINS = {"", "ai.onnx", "ai.onnx.ml", "com.microsoft", "ai.onnx.preview.training"}


def load_graph(path: str | Path):
    import onnx

    return onnx.load(str(path), load_external_data=False)


def graph_inputs(model) -> list[InputFacts]:
    """Inputs the caller feeds (initializers listed as inputs by old exporters are left out)."""
    import onnx

    inits = {i.name for i in model.graph.initializer}
    out = []
    for inp in model.graph.input:
        if inp.name in inits:
            continue
        tt = inp.type.tensor_type
        shape = tuple(d.dim_value if d.HasField("dim_value") else None for d in tt.shape.dim)
        out.append(InputFacts(inp.name, str(onnx.helper.tensor_dtype_to_np_dtype(tt.elem_type)), shape))
    return out


def op_counts(model) -> dict[str, int]:
    counts: dict[str, int] = {}
    for node in model.graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return counts


def custom_domains(model) -> list[str]:
    return sorted({n.domain for n in model.graph.node} - STANDARD_DOMAINS)


def _n_elements(t) -> int:
    n = 1
    for d in t.dims:
        n *= int(d)
    return n


def int8_weight_fraction(model) -> float:
    """Share of initializer elements stored as 8-bit (or narrower) integers, weights only (no scales/zero points)."""
    import onnx

    narrow = {onnx.TensorProto.INT8, onnx.TensorProto.UINT8, onnx.TensorProto.INT4, onnx.TensorProto.UINT4}
    total = low = 0
    # per-channel scales and zero points are vectors: a QDQ file with fp32 weights and int8 zero points is not int8
    qparams = {name for n in model.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear") for name in n.input[1:]}
    for t in model.graph.initializer:
        n = _n_elements(t)
        if n <= 1 or t.name in qparams:  # scales and zero points are scalars per tensor: not weights
            continue
        total += n
        if t.data_type in narrow:
            low += n
    return low / total if total else 0.0


def stored_precision(model) -> str:
    import onnx

    ops = set(op_counts(model))
    if ops & DYNAMIC_INT8_OPS:
        return "int8-dynamic"
    if ops & STATIC_INT8_OPS:
        return "int8"
    if any(t.data_type == onnx.TensorProto.FLOAT16 for t in model.graph.initializer):
        return "fp16"
    return "fp32"


def has_qdq(model) -> bool:
    ops = op_counts(model)
    return ops.get("QuantizeLinear", 0) > 0 and ops.get("DequantizeLinear", 0) > 0


def inspect(path: str | Path) -> ArtifactFacts:
    model = load_graph(path)
    counts = op_counts(model)
    quantized = sum(n for op, n in counts.items() if op in STATIC_INT8_OPS | DYNAMIC_INT8_OPS)
    return ArtifactFacts(format="onnx", inputs=tuple(graph_inputs(model)), precision=stored_precision(model),
                         quantized_ops=quantized, int8_weight_fraction=int8_weight_fraction(model),
                         details={"opset": model.opset_import[0].version if model.opset_import else None,
                                  "custom_domains": custom_domains(model)})
