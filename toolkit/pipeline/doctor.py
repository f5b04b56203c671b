"""What this host can run: backends, precisions, quantization engines, and why not."""
from __future__ import annotations

import importlib.util


def _engine(name: str, module: str, backend: str) -> dict:
    from toolkit.backends import availability

    if importlib.util.find_spec(module) is None:
        return {"engine": name, "ok": False, "why": f"python package '{module}' is not installed"}
    ok, why = availability(backend)
    return {"engine": name, "ok": ok, "why": f"runs on {backend}" if ok else why}


def doctor() -> dict:
    from toolkit.backends import availability
    from toolkit.core.host import host, library_versions

    backends = []
    for name in ("torch", "onnxruntime", "openvino", "tensorrt"):
        ok, why = availability(name)
        backends.append({"backend": name, "ok": ok, "detail": why})
    precisions = {"fp32": True}
    try:
        from toolkit.backends.openvino import cpu_capabilities

        caps = cpu_capabilities()
        precisions.update({"bf16 (OpenVINO CPU)": "BF16" in caps, "fp16 (OpenVINO CPU)": "FP16" in caps,
                           "int8 (OpenVINO CPU)": "INT8" in caps})
    except Exception as exc:  # openvino missing or broken: report, do not crash doctor
        precisions["openvino"] = f"unavailable: {exc}"
    precisions["int8 (ONNX Runtime CPU)"] = True
    precisions["fp16 (ONNX Runtime CPU)"] = "runs with inserted casts to fp32 where the CPU provider lacks fp16 kernels"
    engines = [_engine("ort", "onnxruntime", "onnxruntime"), _engine("nncf", "nncf", "openvino"),
               _engine("pt2e", "torchao", "torch"), _engine("inc", "neural_compressor", "torch")]
    return {"host": host(), "backends": backends, "precisions": precisions, "engines": engines,
            "versions": library_versions()}
