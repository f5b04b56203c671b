"""OpenVINO session on the CPU plugin.

OpenVINO's CPU default is not fp32: on CPUs with bf16 it infers in bf16, and an f16 hint
runs as bf16. The precision hint is therefore always set explicitly and read back, and the
precision that actually ran is what describe() reports.
"""
from __future__ import annotations

import numpy as np

from toolkit.backends.base import Session, register_backend


def cpu_capabilities() -> list[str]:
    import openvino as ov

    return list(ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"))


@register_backend("openvino")
class OpenVinoSession(Session):
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
