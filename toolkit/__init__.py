"""optkit: take a trained PyTorch classifier to a calibrated, benchmarked, device-ready bundle.

    import toolkit
    result = toolkit.compress("model.pt2", data="val.npz", device="jetson-orin-nano")
    print(result.selected.id, result.selected.metrics.macro_f1)

The public API is toolkit.api (re-exported here). Importing this package imports no runtime
(onnxruntime, openvino, tensorrt, executorch); they load on use.
"""
from __future__ import annotations

from toolkit.api import (RunReport, RunResult, bench, calibrate, compress, device, devices, distill, doctor, nightly,
                         load_bundle, predict, recipe, recipes, report, sign, sweep, verify)

__version__ = "0.1.0"

__all__ = ["compress", "distill", "calibrate", "bench", "verify", "load_bundle", "predict", "sign", "doctor", "devices", "device", "recipes",
           "recipe", "nightly", "report", "sweep", "RunResult", "RunReport"]
