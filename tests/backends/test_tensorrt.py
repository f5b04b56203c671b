"""TensorRT backend: what must hold on every host (honest unavailability, the trtexec line,
ORT's TensorRT EP options) and, on a GPU with TensorRT, a real engine build and run."""
from __future__ import annotations

import importlib.util
import json
import shlex
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from toolkit.backends import availability, open_session
from toolkit.backends import tensorrt as trt_backend
from toolkit.core.candidate import Candidate
from toolkit.core.errors import BackendUnavailable, UnsupportedError

TRT_OK, TRT_REASON = availability("tensorrt")
HAS_TRT_PACKAGE = importlib.util.find_spec("tensorrt") is not None
needs_trt = [pytest.mark.gpu, pytest.mark.tensorrt, pytest.mark.skipif(not TRT_OK, reason=TRT_REASON)]


def _conv_onnx(path: Path, dims=("batch", 3, 16, 16)) -> Path:
    """Conv2d(3, 8, 3, padding=1) with a named dynamic batch, built directly (fast, no exporter)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((8, 3, 3, 3)).astype(np.float32), "w")
    b = numpy_helper.from_array(rng.standard_normal(8).astype(np.float32), "b")
    node = helper.make_node("Conv", ["x", "w", "b"], ["logits"], pads=[1, 1, 1, 1])
    graph = helper.make_graph(
        [node], "conv",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(dims))],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [dims[0], 8, *dims[2:]])],
        initializer=[w, b],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


# --------------------------------------------------------------------------- availability, here
@pytest.mark.skipif(HAS_TRT_PACKAGE, reason="tensorrt is installed on this host")
def test_check_available_names_the_missing_package():
    with pytest.raises(BackendUnavailable) as info:
        trt_backend.TensorRTSession.check_available()
    msg = str(info.value)
    assert "no `tensorrt` Python package" in msg
    assert "JetPack" in msg and "NVIDIA's pip index" in msg
    assert "\n" not in msg


@pytest.mark.skipif(HAS_TRT_PACKAGE, reason="tensorrt is installed on this host")
def test_availability_reports_false_with_reason():
    ok, reason = availability("tensorrt")
    assert ok is False
    assert "tensorrt" in reason and "install TensorRT" in reason


def _fake_tensorrt(tmp_path: Path, monkeypatch, body: str) -> None:
    pkg = tmp_path / "fake" / "tensorrt"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text(textwrap.dedent(body))
    monkeypatch.delitem(sys.modules, "tensorrt", raising=False)
    monkeypatch.syspath_prepend(str(pkg.parent))


def test_bindings_without_parser_library(tmp_path, monkeypatch):
    # What STACK-NOTES saw with the pip bindings alone: the shared library is missing.
    _fake_tensorrt(tmp_path, monkeypatch, """
        raise ImportError("libnvonnxparser.so.10: cannot open shared object file: No such file or directory")
    """)
    with pytest.raises(BackendUnavailable, match=r"libnvonnxparser\.so\.10 is missing"):
        trt_backend.TensorRTSession.check_available()
    sys.modules.pop("tensorrt", None)


def test_stub_package_without_builder(tmp_path, monkeypatch):
    _fake_tensorrt(tmp_path, monkeypatch, """
        __version__ = "10.9.0"
        class Runtime: ...
    """)
    with pytest.raises(BackendUnavailable, match="lacks Builder, OnnxParser"):
        trt_backend.TensorRTSession.check_available()
    monkeypatch.delitem(sys.modules, "tensorrt", raising=False)


def test_full_bindings_but_no_cuda(tmp_path, monkeypatch):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA GPU is visible here")
    _fake_tensorrt(tmp_path, monkeypatch, """
        __version__ = "10.9.0"
        class Builder: ...
        class OnnxParser: ...
        class Runtime: ...
    """)
    with pytest.raises(BackendUnavailable, match=r"tensorrt 10\.9\.0 is installed but .*(CPU build|no CUDA GPU)"):
        trt_backend.TensorRTSession.check_available()
    monkeypatch.delitem(sys.modules, "tensorrt", raising=False)


@pytest.mark.skipif(TRT_OK, reason="TensorRT runs on this host")
def test_session_load_raises_backend_unavailable(tmp_path):
    onnx_path = _conv_onnx(tmp_path / "model.onnx")
    cand = Candidate(id="c", path=onnx_path, format="onnx", precision="fp16", backend="tensorrt", lineage=("baseline",))
    with pytest.raises(BackendUnavailable):
        with open_session(cand, threads=1):
            pass


def test_import_is_lean():
    code = ("import sys, toolkit.backends.tensorrt as t; "
            "print(sorted(m for m in ('tensorrt', 'onnxruntime', 'openvino', 'onnx') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[2])
    assert out.stdout.strip() == "[]"


# --------------------------------------------------------------------------- pure helpers
def test_trtexec_command_dynamic_batch(tmp_path):
    onnx_path = _conv_onnx(tmp_path / "model.onnx")
    shapes = trt_backend.onnx_input_profiles(onnx_path, min_batch=1, opt_batch=8, max_batch=32)
    assert shapes == {"x": ((1, 3, 16, 16), (8, 3, 16, 16), (32, 3, 16, 16))}

    cmd = trt_backend.trtexec_command("model.onnx", "fp16", shapes, "model.fp16.engine")
    args = shlex.split(cmd)
    assert args[0] == "trtexec"
    assert "--onnx=model.onnx" in args
    assert "--saveEngine=model.fp16.engine" in args
    assert "--fp16" in args and "--int8" not in args
    assert "--minShapes=x:1x3x16x16" in args
    assert "--optShapes=x:8x3x16x16" in args
    assert "--maxShapes=x:32x3x16x16" in args
    assert "--timingCacheFile=timing.cache" in args

    int8 = shlex.split(trt_backend.trtexec_command("model.qdq.onnx", "int8", shapes, "model.int8.engine"))
    assert "--int8" in int8 and "--fp16" in int8  # fp16 fallback for the unquantized layers

    fp32 = shlex.split(trt_backend.trtexec_command("model.onnx", "fp32", shapes, "m.engine", timing_cache=None))
    assert "--fp16" not in fp32 and "--int8" not in fp32 and "--noTF32" in fp32
    assert not any(a.startswith("--timingCacheFile") for a in fp32)


def test_trtexec_command_two_inputs_and_static_model(tmp_path):
    shapes = trt_backend.profile_shapes(
        {"input_ids": (-1, 128), "attention_mask": (-1, 128)}, min_batch=1, opt_batch=4, max_batch=16)
    args = shlex.split(trt_backend.trtexec_command("enc.onnx", "int8", shapes, "enc.engine"))
    assert "--minShapes=input_ids:1x128,attention_mask:1x128" in args
    assert "--maxShapes=input_ids:16x128,attention_mask:16x128" in args

    static = _conv_onnx(tmp_path / "static.onnx", dims=(1, 3, 16, 16))
    assert trt_backend.onnx_input_profiles(static) == {}
    args = shlex.split(trt_backend.trtexec_command("static.onnx", "fp16", {}, "static.engine"))
    assert not any("Shapes" in a for a in args)


def test_profile_shapes_rules():
    with pytest.raises(UnsupportedError, match="besides the batch"):
        trt_backend.profile_shapes({"input_ids": (-1, -1)})
    given = {"input_ids": ((1, 16), (4, 128), (8, 512))}
    assert trt_backend.profile_shapes({"input_ids": (-1, -1)}, input_shapes=given) == given
    with pytest.raises(UnsupportedError, match="min <= opt <= max"):
        trt_backend.profile_shapes({"x": (-1, 3)}, min_batch=8, opt_batch=4, max_batch=16)
    with pytest.raises(UnsupportedError):
        trt_backend.trtexec_command("m.onnx", "int4", {}, "m.engine")


def test_ort_tensorrt_provider_options(tmp_path):
    providers = trt_backend.ort_tensorrt_providers(tmp_path / "cache", fp16=True, int8=True)
    name, opts = providers[0]
    assert name == "TensorrtExecutionProvider"
    assert opts == {
        "trt_fp16_enable": True,
        "trt_int8_enable": True,
        "trt_engine_cache_enable": True,
        "trt_engine_cache_path": str(tmp_path / "cache"),
        "trt_timing_cache_enable": True,
        "trt_timing_cache_path": str(tmp_path / "cache"),
    }
    assert providers[1][0] == "CUDAExecutionProvider" and providers[-1] == "CPUExecutionProvider"
    _, fp32 = trt_backend.ort_tensorrt_providers("c", fp16=False, int8=False)[0]
    assert fp32["trt_fp16_enable"] is False and fp32["trt_int8_enable"] is False


def test_ort_tensorrt_available():
    import onnxruntime

    ok, why = trt_backend.ort_tensorrt_available()
    assert ok == ("TensorrtExecutionProvider" in onnxruntime.get_available_providers())
    assert "onnxruntime" in why
    if not ok:
        assert "onnxruntime-gpu" in why


def test_engine_compat_check():
    sidecar = {"tensorrt_version": "10.3.0", "compute_capability": "8.7"}
    trt_backend.check_engine_compat(sidecar, "10.3.0", "8.7")
    with pytest.raises(BackendUnavailable, match="TensorRT 10.3.0, this host has TensorRT 10.9.0"):
        trt_backend.check_engine_compat(sidecar, "10.9.0", "8.7", "m.engine")
    with pytest.raises(UnsupportedError, match="compute capability 8.7, this GPU is 9.0"):
        trt_backend.check_engine_compat(sidecar, "10.3.0", "9.0", "m.engine")
    assert trt_backend.engine_sidecar_path("out/m.engine") == Path("out/m.engine.json")


def test_int8_needs_qdq_model(tmp_path):
    onnx_path = _conv_onnx(tmp_path / "model.onnx")
    assert not trt_backend.onnx_has_qdq(onnx_path)
    with pytest.raises(UnsupportedError, match="QDQ"):
        trt_backend.build_engine(onnx_path, tmp_path / "m.engine", "int8")
    assert not (tmp_path / "m.engine").exists()


# --------------------------------------------------------------------------- on a GPU with TensorRT
@pytest.mark.parametrize("precision,atol", [("fp32", 1e-4), ("fp16", 2e-2)])
@pytest.mark.gpu
@pytest.mark.tensorrt
@pytest.mark.skipif(not TRT_OK, reason=TRT_REASON)
def test_build_and_run_engine(tmp_path, precision, atol):
    import onnxruntime as ort

    onnx_path = _conv_onnx(tmp_path / "model.onnx")
    x = np.random.default_rng(1).standard_normal((4, 3, 16, 16)).astype(np.float32)
    expected = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]

    engine = tmp_path / f"model.{precision}.engine"
    facts = trt_backend.build_engine(onnx_path, engine, precision, timing_cache_path=tmp_path / "timing.cache",
                                     min_batch=1, opt_batch=4, max_batch=8, workspace_mb=256)
    assert engine.is_file() and (tmp_path / "timing.cache").is_file()
    sidecar = json.loads(trt_backend.engine_sidecar_path(engine).read_text())
    assert sidecar == facts and sidecar["precision"] == precision and sidecar["compute_capability"]

    cand = Candidate(id="e", path=engine, format="tensorrt", precision=precision, backend="tensorrt", lineage=("baseline",))
    with open_session(cand, threads=1) as session:
        got = session.infer({"x": x})
        desc = session.describe()
    assert got.dtype == np.float32 and got.shape == expected.shape
    np.testing.assert_allclose(got, expected, atol=atol, rtol=atol)
    assert desc["backend"] == "tensorrt" and desc["precision"] == precision and desc["gpu"]

    # The same from the .onnx candidate: built into the cache folder, then reused.
    cand_onnx = Candidate(id="o", path=onnx_path, format="onnx", precision=precision, backend="tensorrt",
                          lineage=("baseline",), runtime_options={"trt_cache_dir": str(tmp_path / "cache")})
    with open_session(cand_onnx, threads=1) as session:
        np.testing.assert_allclose(session.infer({"x": x[:1]}), expected[:1], atol=atol, rtol=atol)
        assert session.describe()["engine_built_here"] is True
    with open_session(cand_onnx, threads=1) as session:
        assert session.describe()["engine_built_here"] is False


@pytest.mark.gpu
@pytest.mark.tensorrt
@pytest.mark.skipif(not TRT_OK, reason=TRT_REASON)
def test_engine_from_another_tensorrt_is_refused(tmp_path):
    onnx_path = _conv_onnx(tmp_path / "model.onnx")
    engine = tmp_path / "model.engine"
    trt_backend.build_engine(onnx_path, engine, "fp16", max_batch=2, opt_batch=1, workspace_mb=256)
    side = trt_backend.engine_sidecar_path(engine)
    facts = json.loads(side.read_text())
    side.write_text(json.dumps({**facts, "tensorrt_version": "0.0.1"}))
    cand = Candidate(id="e", path=engine, format="tensorrt", precision="fp16", backend="tensorrt", lineage=("baseline",))
    with pytest.raises(BackendUnavailable, match="not portable"):
        with open_session(cand, threads=1):
            pass
