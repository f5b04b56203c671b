"""ONNX Runtime quantization: static int8 QDQ (TensorRT-ready) and dynamic int8."""
from __future__ import annotations

import contextlib
import sys
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from toolkit.core.candidate import Candidate
from toolkit.passes.base import PassContext, register_pass


class OrtStaticOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    calibration: Literal["minmax", "entropy", "percentile"] = "minmax"
    per_channel: bool = True
    # U8S8 (uint8 activations, int8 weights) lets ORT fuse Conv into integer kernels on x86;
    # S8S8 is what TensorRT expects for explicit QDQ and is symmetric.
    activations: Literal["uint8", "int8"] = "uint8"
    nodes_to_exclude: list[str] = Field(default_factory=list)


class OrtDynamicOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    per_channel: bool = False


def preprocess(src, dst) -> None:
    """ORT's recommended pre-processing (shape inference + graph cleanup) before quantizing."""
    import onnx
    from onnxruntime.quantization.shape_inference import quant_pre_process

    source = str(src)
    graph = onnx.load(source, load_external_data=False)
    if any(t.data_location == onnx.TensorProto.EXTERNAL for t in graph.graph.initializer):
        # in memory with its weights: ORT's temporary copies of a path would lose the external data file
        source = onnx.load(str(src))
    quant_pre_process(source, str(dst), skip_symbolic_shape=True)


class CalibrationReader:
    """CalibrationDataReader over optkit's calibration batches."""

    def __init__(self, batches: list[dict], say=None):
        self._it = iter(batches)
        self._n, self._total, self._say = 0, len(batches), say

    def get_next(self):
        item = next(self._it, None)
        if item is not None and self._say is not None:
            self._n += 1  # what the calibration is doing now: a line at each quarter, not per sample
            if self._n == self._total or self._n % max(1, self._total // 4) == 0:
                self._say(f"calibration sample {self._n}/{self._total}")
        return item

    def __iter__(self):  # ORT's qdq_loss_debug iterates the reader
        return self._it

    def rewind(self):  # pragma: no cover - only some calibrators call it
        pass


def quantize_static_qdq(ctx: PassContext, src, dst, opts: OrtStaticOptions) -> None:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    method = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
              "percentile": CalibrationMethod.Percentile}[opts.calibration]
    pre = dst.parent / "preprocessed.onnx"
    preprocess(src, pre)
    with contextlib.redirect_stdout(sys.stderr):  # ORT's histogram calibrators print progress lines
        quantize_static(
            # batch 1: ORT's histogram calibrators (entropy, percentile) need equally shaped batches
            str(pre), str(dst), CalibrationReader(ctx.calibration_batches(batch_size=1), say=ctx.log),
            quant_format=QuantFormat.QDQ, per_channel=opts.per_channel,
            activation_type=QuantType.QUInt8 if opts.activations == "uint8" else QuantType.QInt8,
            weight_type=QuantType.QInt8, calibrate_method=method, nodes_to_exclude=list(opts.nodes_to_exclude),
            extra_options={"ActivationSymmetric": opts.activations == "int8"},
        )
    pre.unlink(missing_ok=True)


@register_pass("ort_static_int8", accepts=("onnx",), backend="onnxruntime", precision="int8", options=OrtStaticOptions)
def ort_static_int8(ctx: PassContext, parent: Candidate, opts: OrtStaticOptions, cid: str) -> Candidate:
    """ONNX Runtime static int8, QDQ format, calibrated on the validation split."""
    path = ctx.folder(cid) / "model.onnx"
    quantize_static_qdq(ctx, parent.path, path, opts)
    precision = "mixed-int8" if opts.nodes_to_exclude else "int8"
    return parent.derive(id=cid, path=path, precision=precision, engine="ort", step=f"ort_static_int8[{opts.calibration}]",
                         info={"format": "QDQ", "calibration": opts.calibration, "per_channel": opts.per_channel,
                               "activations": opts.activations, "calibration_samples": ctx.calibration_size,
                               "excluded_nodes": list(opts.nodes_to_exclude)})


@register_pass("ort_dynamic_int8", accepts=("onnx",), backend="onnxruntime", precision="int8", options=OrtDynamicOptions)
def ort_dynamic_int8(ctx: PassContext, parent: Candidate, opts: OrtDynamicOptions, cid: str) -> Candidate:
    """ONNX Runtime dynamic int8 (weights int8, activations quantized per call): no calibration data needed."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    path = ctx.folder(cid) / "model.onnx"
    pre = path.parent / "preprocessed.onnx"
    preprocess(parent.path, pre)
    quantize_dynamic(str(pre), str(path), weight_type=QuantType.QInt8, per_channel=opts.per_channel)
    pre.unlink(missing_ok=True)
    return parent.derive(id=cid, path=path, precision="int8-dynamic", engine="ort", step="ort_dynamic_int8",
                         info={"per_channel": opts.per_channel})
