"""OpenVINO session on the CPU plugin.

OpenVINO's CPU default is not fp32: on CPUs with bf16 it infers in bf16, and an f16 hint
runs as bf16. The precision hint is therefore always set explicitly and read back, and the
precision that actually ran is what describe() reports.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from toolkit.backends.base import Session, register_backend
from toolkit.core.artifacts import ArtifactFacts, InputFacts
from toolkit.core.errors import DataError


def shape_size(shape) -> int:
    n = 1
    for d in shape:
        n *= int(d)
    return n


def cpu_capabilities() -> list[str]:
    import openvino as ov

    return list(ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"))


def ov_model(path):
    """The OpenVINO model of an IR (.xml) or of an ONNX file, ready to quantize or compile.

    ONNX goes through ov.convert_model, as the openvino_ir pass does, never Core.read_model: read_model's ONNX frontend
    keeps the export's shape arithmetic for a dynamic batch (170 ShapeOf and 53 Broadcast on a MobileNetV3 export),
    which convert_model folds away. NNCF then quantized those chains too (91 FakeQuantize instead of 80) and the int8
    model ran 2-3x slower than the same network converted (benchmarks/vision.py, 224x224 MobileNetV3).
    """
    import openvino as ov

    path = Path(path)
    return ov.convert_model(str(path)) if path.suffix == ".onnx" else ov.Core().read_model(str(path))


@register_backend("openvino", formats=("openvino", "onnx"), reads={".xml": "openvino"})
class OpenVinoSession(Session):
    @classmethod
    def inspect(cls, path: Path, trust: bool = False) -> ArtifactFacts:
        import openvino as ov

        if not path.with_suffix(".bin").is_file():
            raise DataError(f"{path}: the OpenVINO weights {path.with_suffix('.bin').name} are missing next to it")
        try:
            model = ov.Core().read_model(str(path))
        except Exception as exc:
            raise DataError(f"{path}: not a readable OpenVINO IR ({str(exc).splitlines()[0]}); "
                            "pass the .xml with its .bin next to it") from exc
        inputs = tuple(InputFacts(port.get_any_name(), str(port.get_element_type().to_dtype()),
                                  tuple(None if d.is_dynamic else d.get_length() for d in port.get_partial_shape()))
                       for port in model.inputs)
        ops = model.get_ops()
        fq = sum(op.get_type_name() == "FakeQuantize" for op in ops)
        consts = [op for op in ops if op.get_type_name() == "Constant" and shape_size(op.get_output_shape(0)) > 1]
        total = sum(shape_size(op.get_output_shape(0)) for op in consts)
        low = sum(shape_size(op.get_output_shape(0)) for op in consts
                  if op.get_element_type().get_type_name() in ("i8", "u8", "i4", "u4"))  # str() is "<Type: 'int8_t'>"
        f16 = any(op.get_element_type().get_type_name() == "f16" for op in consts)
        precision = "int8" if fq else ("int8 (weights)" if low else ("fp16 (weights)" if f16 else "fp32"))
        return ArtifactFacts(format="openvino", inputs=inputs, precision=precision, quantized_ops=fq,
                             int8_weight_fraction=low / total if total else 0.0)

    @classmethod
    def precisions_here(cls) -> dict[str, str | None]:
        caps = cpu_capabilities()
        return {"fp32": None,
                "bf16": None if "BF16" in caps else "this CPU has no BF16 (OpenVINO CPU capabilities: " + ", ".join(caps) + ")",
                "fp16": None if "FP16" in caps else "this CPU has no FP16 compute; an f16 hint does not run as f16",
                "int8": None if "INT8" in caps else "OpenVINO reports no INT8 on this CPU"}

    @classmethod
    def run_modes(cls, fmt: str, fixed: dict) -> list[dict]:
        """fp32 always (OpenVINO's CPU default is not fp32, so it is set), and bf16 where the CPU has it;
        an IR made for one inference precision runs at that one."""
        if fmt == "openvino" and fixed.get("inference_precision"):
            return [dict(fixed)]
        hints = ["f32"] + (["bf16"] if cls.precisions_here()["bf16"] is None else [])
        return [{**fixed, "inference_precision": h} for h in hints]

    @classmethod
    def precision_label(cls, stored: str, described: dict) -> str:
        return f"{stored} / {described.get('inference_precision', '?')} compute"

    @classmethod
    def check_available(cls) -> str:
        import openvino as ov

        return f"openvino {ov.get_version().split('-')[0]} (CPU: {', '.join(cpu_capabilities())})"

    def load(self) -> None:
        import openvino as ov

        self._core = ov.Core()
        hint = self.candidate.runtime_options.get("inference_precision", "f32")
        self._config = {"INFERENCE_PRECISION_HINT": hint, "INFERENCE_NUM_THREADS": self.threads,
                        "PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": 1}
        self._model = ov_model(self.candidate.path)
        # A port has several names (e.g. an fp16 model's input is also "graph_input_cast_0"): match any of them.
        self._names = [set(port.get_names()) for port in self._model.inputs]
        self._dynamic = any(port.get_partial_shape().is_dynamic for port in self._model.inputs)
        self._static: dict[tuple, tuple] = {}  # input shapes -> compiled for exactly them (fix_shapes)
        self._any_shape = self._compile(self._model)
        ran = self._any_shape[0].get_property("INFERENCE_PRECISION_HINT")
        self._ran_precision = ran.to_string() if hasattr(ran, "to_string") else str(ran)  # "f32", "bf16"
        self._version = ov.get_version().split("-")[0]

    def _compile(self, model) -> tuple:
        compiled = self._core.compile_model(model, "CPU", self._config)
        return compiled, compiled.create_infer_request()

    def _arrays(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        arrays = []
        for names in self._names:
            name = next((n for n in feeds if n in names), None)
            if name is None:
                raise KeyError(f"no input named any of {sorted(names)} in {sorted(feeds)}")
            arrays.append(feeds[name])
        return arrays

    def fix_shapes(self, feeds_list: list[dict[str, np.ndarray]]) -> None:
        """Compile a static copy for each of these input shapes, as OpenVINO deploys a fixed batch (benchmark_app
        -shape, Optimum's model.reshape): its CPU kernels for dynamic dims are slower (a 224x224 MobileNetV3 int8:
        0.87 vs 0.63 ms p50 at batch 1 here). The any-shape model is released; it is compiled again on demand."""
        if not self._dynamic:
            return
        for feeds in feeds_list:
            key = tuple(a.shape for a in self._arrays(feeds))
            if key not in self._static:
                model = self._model.clone()
                model.reshape({port.get_any_name(): list(shape) for port, shape in zip(model.inputs, key)})
                self._static[key] = self._compile(model)
        self._any_shape = None

    def infer(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        arrays = self._arrays(feeds)
        compiled, request = self._static.get(tuple(a.shape for a in arrays)) or self._any_shape or self._recompile()
        result = request.infer(dict(zip(compiled.inputs, arrays)))
        return np.asarray(result[compiled.outputs[0]], dtype=np.float32)

    def _recompile(self) -> tuple:
        self._any_shape = self._compile(self._model)
        return self._any_shape

    def close(self) -> None:
        self._static, self._any_shape, self._model = {}, None, None

    def describe(self) -> dict:
        static = ", compiled for each timed input shape (static)" if self._static else ""
        return {"backend": "openvino", "runtime": f"openvino {self._version} CPU{static}",
                "inference_precision": self._ran_precision, "threads": self.threads}
