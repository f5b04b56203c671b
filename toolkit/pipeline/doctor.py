"""What this host can run: backends, the precisions each can run here (and why not), quantization engines."""
from __future__ import annotations

import importlib.util

# Quantization engines: (name, python package, backend its artifacts run on)
ENGINES = (("ort", "onnxruntime", "onnxruntime"), ("nncf", "nncf", "openvino"), ("pt2e", "torchao", "torch"),
           ("inc", "neural_compressor", "torch"))


def _engine(name: str, module: str, backend: str) -> dict:
    from toolkit.backends import availability

    if importlib.util.find_spec(module) is None:
        return {"engine": name, "ok": False, "why": f"python package '{module}' is not installed"}
    ok, why = availability(backend)
    return {"engine": name, "ok": ok, "why": f"runs on {backend}" if ok else why}


def doctor() -> dict:
    from toolkit.backends import all_classes, availability
    from toolkit.core.host import host, library_versions

    backends, precisions = [], {}
    for cls in all_classes():
        ok, why = availability(cls.name)
        backends.append({"backend": cls.name, "ok": ok, "detail": why, "formats": list(cls.formats)})
        if not ok:
            continue
        try:
            for precision, why_not in cls.precisions_here().items():
                precisions[f"{precision} ({cls.name})"] = True if why_not is None else why_not
        except Exception as exc:  # a runtime that fails to describe itself: report, do not crash doctor
            precisions[cls.name] = f"unavailable: {exc}"
    engines = [_engine(*e) for e in ENGINES]
    return {"host": host(), "backends": backends, "precisions": precisions, "engines": engines,
            "versions": library_versions()}
