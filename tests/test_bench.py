"""optkit bench as a library: every backend x precision this host runs, honest labels, typed errors."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from toolkit.backends import availability
from toolkit.core.shapes import FALLBACK_DIM
from toolkit.pipeline.bench import bench
from toolkit.core.errors import ConfigError, DataError, UnsupportedError
from toolkit.core.host import host_label

FAST_PROFILE = """\
name: bench-test-cpu
description: a test profile with few iterations
arch: {arch}
accelerators:
  - {{name: test cpu, kind: cpu, source: test}}
backends: [onnxruntime, openvino, torch]
precisions: [fp32, int8]
bench: {{threads: 2, batch_sizes: [1, 4], warmup: 2, iterations: 10}}
stand_in: {{backend: onnxruntime, note: test}}
"""


def fast_profile(tmp_path: Path) -> Path:
    import platform

    path = tmp_path / "bench-test-cpu.yaml"
    path.write_text(FAST_PROFILE.format(arch="aarch64" if platform.machine() == "x86_64" else "x86_64"))
    return path


@pytest.fixture(scope="module")
def demo_bench(demo_run):
    return bench([demo_run.run_dir], device="jetson")


def test_demo_run_compares_backends_and_precisions(demo_bench):
    rows = demo_bench["rows"]
    pairs = {(r["backend"], r["precision"]) for r in rows}
    assert len(pairs) >= 3, pairs
    assert {"onnxruntime", "openvino", "torch"} <= {r["backend"] for r in rows}
    for r in rows:
        assert r["latency_p50_ms"] > 0 and r["latency_p50_ms"] <= r["latency_p95_ms"] <= r["latency_p99_ms"]
        assert r["throughput_per_s"] > 0 and r["peak_rss_mb"] >= 0 and len(r["model_sha256"]) == 64
        assert r["device"] == "jetson-orin-nano" and r["batch"] in (1, 8)
        # honest label: this host, the runtime, threads, batch and number of runs
        assert f"this host ({host_label()}" in r["measured_on"] and r["measured_on"].startswith("measured on a stand-in")
        assert f"{r['threads']} threads" in r["measured_on"] and f"batch {r['batch']}" in r["measured_on"]
        assert f"{r['runs']} runs in {r['rounds']} rounds" in r["measured_on"] and r["rounds"] >= 2
        assert isinstance(r["contended"], bool) and (r["contention_reason"] != "") == r["contended"]
        assert r["stand_in_for"] == "jetson-orin-nano"  # this CI host is not a Jetson
        assert r["kind"] in ("target", "stand-in") and "RSS" in r["memory"]
    # OpenVINO's precision says what actually computed, read back from the compiled model
    assert any(r["precision"] == "fp32 / f32 compute" for r in rows if r["backend"] == "openvino")


def test_tensorrt_is_a_skipped_row_with_the_reason(demo_bench):
    ok, why = availability("tensorrt")
    if ok:
        pytest.skip("TensorRT is usable on this host: it is measured, not skipped")
    trt = [s for s in demo_bench["skipped"] if s["backend"] == "tensorrt"]
    assert trt and all(s["status"] == "skipped" and s["reason"] == why and "latency_p50_ms" not in s for s in trt)
    assert not [r for r in demo_bench["rows"] if r["backend"] == "tensorrt"]


def test_threads_are_capped_at_host_cores(demo_run, tmp_path):
    import os

    r = bench([demo_run.run_dir / "candidates" / "onnx-fp32" / "model.onnx"], device=str(fast_profile(tmp_path)),
              threads=512, backends=["onnxruntime"])
    assert r["threads_requested"] == 512 and r["threads"] <= (os.cpu_count() or 1)
    assert {row["precision"] for row in r["rows"]} == {"fp32"}  # read from the file when no report names it
    assert [row["batch"] for row in r["rows"]] == [1, 4]


def test_synthesizes_int64_inputs_with_a_dynamic_sequence(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    ids = helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "sequence"])
    out = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 1])
    graph = helper.make_graph([helper.make_node("Cast", ["input_ids"], ["f"], to=TensorProto.FLOAT),
                               helper.make_node("ReduceMean", ["f"], ["logits"], axes=[1], keepdims=1)],
                              "ids", [ids], [out])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    path = tmp_path / "ids.onnx"
    onnx.save(model, path)
    r = bench([path], device=str(fast_profile(tmp_path)), backends=["onnxruntime"])
    assert [row["batch"] for row in r["rows"]] == [1, 4]
    assert f"sequence {FALLBACK_DIM} (fallback" in r["rows"][0]["inputs"] and r["rows"][0]["model"] == "ids.onnx"


def test_bad_inputs_are_typed_errors(tmp_path, demo_run):
    with pytest.raises(DataError, match="no such file"):
        bench([tmp_path / "missing.onnx"], device="jetson")
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(UnsupportedError, match=r"\.onnx"):
        bench([tmp_path / "notes.txt"], device="jetson")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="run folder"):
        bench([tmp_path / "empty"], device="jetson")
    (tmp_path / "bad.onnx").write_bytes(b"not onnx")
    with pytest.raises(DataError, match="ONNX"):
        bench([tmp_path / "bad.onnx"], device="jetson")
    with pytest.raises(ConfigError, match="backend"):
        bench([demo_run.run_dir], device="jetson", backends=["tflite"])
    with pytest.raises(ConfigError, match="unknown device"):
        bench([demo_run.run_dir], device="no-such-device")
    with pytest.raises(ConfigError):
        bench([demo_run.run_dir], device="jetson", history=tmp_path / "nope" / "bench.db")
    assert not (tmp_path / "nope").exists()


def test_history_gets_the_rows(demo_run, tmp_path):
    from toolkit.output import history

    db = tmp_path / "bench.db"
    onnx_path = demo_run.run_dir / "candidates" / "onnx-fp32" / "model.onnx"
    r = bench([onnx_path], device=str(fast_profile(tmp_path)), backends=["onnxruntime"], history=db)
    assert r["history"]["run_id"] == 1
    run = history.runs(db)[0]
    assert run["meta"]["command"] == "optkit bench" and run["library_versions"]["onnxruntime"]
    assert run["host_fingerprint"]["cpu_model"]
    points = history.series_points(db)
    assert len(points) == 2 and all(len(p) == 1 for p in points.values())
    assert np.isfinite([p[0]["value"] for p in points.values()]).all()


def test_compress_candidates_carry_the_one_measured_on_record(demo_run):
    """evaluate and bench share pipeline/measure.py: the same provenance fields on every candidate."""
    from toolkit.core.host import isa_features

    for c in demo_run.report.candidates:
        mo = c.measured_on
        assert mo.kind in ("target", "stand-in") and mo.rounds and mo.rounds >= 2 and len(mo.round_p50_ms) == mo.rounds
        assert mo.isa == isa_features() and mo.usable_cores and mo.runtime
        assert mo.contended == bool(mo.contention_reason) and (("CONTENDED" in mo.label) == mo.contended)
        assert f"{mo.runs} runs in {mo.rounds} rounds" in mo.label
        m = c.metrics
        assert m.latency_p95_quietest_round_ms is not None and m.latency_p50_ms <= m.latency_p95_ms
        assert all(t.batch > 1 and t.runs >= 20 for t in m.throughput)
        for chk in c.checks:  # a latency budget failed on a contended measurement says so
            if chk.name == "latency_p95_ms" and chk.status == "fail" and mo.contended:
                assert "contended host" in chk.reason
