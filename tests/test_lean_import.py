"""`import toolkit` (and building the CLI) imports no runtime: onnxruntime, openvino, tensorrt load on use."""
from __future__ import annotations

import subprocess
import sys

RUNTIMES = ["onnxruntime", "openvino", "tensorrt", "nncf", "neural_compressor", "onnx", "torchao"]


def test_import_toolkit_imports_no_runtime():
    code = ("import sys, toolkit, toolkit.cli.app, toolkit.pipeline.compress, toolkit.passes; toolkit.passes.load_all(); "
            f"print([m for m in {RUNTIMES!r} if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]"
