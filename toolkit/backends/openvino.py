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

        core = ov.Core()
        hint = self.candidate.runtime_options.get("inference_precision", "f32")
        config = {"INFERENCE_PRECISION_HINT": hint, "INFERENCE_NUM_THREADS": self.threads,
                  "PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": 1}
        self._compiled = core.compile_model(str(self.candidate.path), "CPU", config)
        self._request = self._compiled.create_infer_request()
        ran = self._compiled.get_property("INFERENCE_PRECISION_HINT")
        self._ran_precision = ran.to_string() if hasattr(ran, "to_string") else str(ran)  # "f32", "bf16"
        self._version = ov.get_version().split("-")[0]
        # A port has several names (e.g. an fp16 model's input is also "graph_input_cast_0"): match any of them.
        self._ports = [(port, set(port.get_names())) for port in self._compiled.inputs]

    def infer(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        inputs = {}
        for port, names in self._ports:
            name = next((n for n in feeds if n in names), None)
            if name is None:
                raise KeyError(f"no input named any of {sorted(names)} in {sorted(feeds)}")
            inputs[port] = feeds[name]
        result = self._request.infer(inputs)
        return np.asarray(result[self._compiled.outputs[0]], dtype=np.float32)

    def close(self) -> None:
        self._request = None
        self._compiled = None

    def describe(self) -> dict:
        return {"backend": "openvino", "runtime": f"openvino {self._version} CPU",
                "inference_precision": self._ran_precision, "threads": self.threads}
