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


def test_toolkit_and_the_local_executor_never_import_ray():
    """Ray is an optional extra (`.[ray]`): the sweep, its CLI and the local executor work without it."""
    code = ("import sys, toolkit, toolkit.api, toolkit.cli.app, toolkit.pipeline.sweep; "
            "from toolkit.pipeline.executors import get_executor; get_executor('local'); "
            "import toolkit.pipeline.executors.tasks, toolkit.pipeline.executors.results; "
            "print('ray' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "False"
