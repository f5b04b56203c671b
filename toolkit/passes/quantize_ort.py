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
    # Calibration batches whose activations are held at once before they are folded into the ranges/histograms.
    # ORT's histogram calibrators (entropy, percentile) otherwise keep every activation of every sample until the
    # end: 8-9.5 GB for MiniLM-L6 with 300 samples at sequence 64 (STACK-NOTES).
    stream_batches: int = Field(default=16, ge=1, le=4096)


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
    """CalibrationDataReader over optkit's calibration batches; set_range lets ORT collect them a stride at a time."""

    def __init__(self, batches: list[dict], say=None):
        self._batches = batches
        self._it = iter(batches)
        self._n, self._total, self._say = 0, len(batches), say

    def __len__(self) -> int:
        return self._total

    def set_range(self, start_index: int, end_index: int) -> None:  # ORT's strided collection (CalibStridedMinMax)
        self._it = iter(self._batches[start_index:end_index])

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


def streaming_options(n_batches: int, stream_batches: int) -> dict:
    """ORT extra_options that bound the activations held during calibration to `stream_batches` batches.

    CalibStridedMinMax (despite its name, used for every method) makes quantize_static call collect_data once per
    stride through reader.set_range; each call folds its outputs into the running state and drops them: min/max
    ranges are merged exactly, histograms (entropy, percentile) merged by HistogramCollector (re-binned when a
    larger value arrives). The stride must divide the count: the largest divisor <= stream_batches is used.
    Not CalibMaxIntermediateOutputs: in ORT 1.32 it reaches only the MinMax calibrator, and there it clears every
    N batches' outputs without folding them into the ranges (the ranges come from the last partial chunk only,
    and a count divisible by N fails with "No data is collected"); the histogram calibrators never read it.
    """
    return {"CalibStridedMinMax": max(d for d in range(1, min(stream_batches, n_batches) + 1) if n_batches % d == 0)}


def quantize_static_qdq(ctx: PassContext, src, dst, opts: OrtStaticOptions) -> dict:
    """Quantize src -> dst (QDQ); returns how calibration was streamed."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    method = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
              "percentile": CalibrationMethod.Percentile}[opts.calibration]
    pre = dst.parent / "preprocessed.onnx"
    preprocess(src, pre)
    batches = ctx.calibration_batches(batch_size=1)  # batch 1: the histogram calibrators need equally shaped batches
    streaming = streaming_options(len(batches), opts.stream_batches)
    with contextlib.redirect_stdout(sys.stderr):  # ORT's histogram calibrators print progress lines
        quantize_static(
            str(pre), str(dst), CalibrationReader(batches, say=ctx.log),
            quant_format=QuantFormat.QDQ, per_channel=opts.per_channel,
            activation_type=QuantType.QUInt8 if opts.activations == "uint8" else QuantType.QInt8,
            weight_type=QuantType.QInt8, calibrate_method=method, nodes_to_exclude=list(opts.nodes_to_exclude),
            extra_options={"ActivationSymmetric": opts.activations == "int8", **streaming},
        )
    pre.unlink(missing_ok=True)
    return {"ort_extra_options": streaming, "calibration_batches": len(batches)}


@register_pass("ort_static_int8", accepts=("onnx",), backend="onnxruntime", precision="int8", options=OrtStaticOptions)
def ort_static_int8(ctx: PassContext, parent: Candidate, opts: OrtStaticOptions, cid: str) -> Candidate:
    """ONNX Runtime static int8, QDQ format, calibrated on the validation split."""
    path = ctx.folder(cid) / "model.onnx"
    streaming = quantize_static_qdq(ctx, parent.path, path, opts)
    precision = "mixed-int8" if opts.nodes_to_exclude else "int8"
    return parent.derive(id=cid, path=path, precision=precision, engine="ort", step=f"ort_static_int8[{opts.calibration}]",
                         info={"format": "QDQ", "calibration": opts.calibration, "per_channel": opts.per_channel,
                               "activations": opts.activations, "calibration_samples": ctx.calibration_size,
                               "excluded_nodes": list(opts.nodes_to_exclude), "calibration_streaming": streaming})


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
