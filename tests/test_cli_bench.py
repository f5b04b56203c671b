"""`optkit bench` and `optkit report nightly` through the CLI, with real bench runs."""
from __future__ import annotations

import json
import platform
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from toolkit.output import history
from toolkit.cli.app import app

runner = CliRunner()
# Settings of the nightly check: the detector must see the slow night clearly, so the floor is 30%.
NIGHTLY = ["--min-relative", "0.3"]

PROFILE = """\
name: nightly-test-cpu
description: few iterations at one batch size, for tests
arch: {arch}
accelerators:
  - {{name: test cpu, kind: cpu, source: test}}
backends: [onnxruntime]
precisions: [fp32]
bench: {{threads: 2, batch_sizes: [{batch}], warmup: 2, iterations: {iterations}}}
stand_in: {{backend: onnxruntime, note: test}}
"""


def write_profile(tmp_path: Path, batch: int = 1, iterations: int = 10) -> Path:
    path = tmp_path / "nightly-test-cpu.yaml"
    path.write_text(PROFILE.format(arch=platform.machine(), batch=batch, iterations=iterations))
    return path


def test_bench_json_parses(demo_run, tmp_path):
    result = runner.invoke(app, ["bench", str(demo_run.run_dir), "--device", str(write_profile(tmp_path)),
                                 "--backend", "onnxruntime", "--backend", "torch", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    rows = data["rows"]
    assert rows and all("backend" in r and "precision" in r and "latency_p50_ms" in r for r in rows)
    assert {r["backend"] for r in rows} == {"onnxruntime", "torch"}
    assert len({(r["backend"], r["precision"]) for r in rows}) >= 3


def test_bench_table_and_errors(demo_run, tmp_path):
    onnx_path = demo_run.run_dir / "candidates" / "onnx-fp32" / "model.onnx"
    result = runner.invoke(app, ["bench", str(onnx_path), "--device", str(write_profile(tmp_path)), "-b", "onnxruntime"])
    assert result.exit_code == 0, result.output
    assert "onnxruntime" in result.stdout and "p50 ms" in result.stdout
    bad = runner.invoke(app, ["bench", str(tmp_path / "missing.onnx"), "--device", "jetson"])
    assert bad.exit_code == 2 and "no such file" in bad.output
    missing = runner.invoke(app, ["report", "nightly", "--history", str(tmp_path / "none.db"), "--out", str(tmp_path / "r")])
    assert missing.exit_code == 2 and "no such history" in missing.output


def mlp_onnx(path: Path) -> Path:
    """An MLP of 1024x1024 layers: big enough that 1 thread vs 2 shows at batch 32."""
    import torch

    torch.manual_seed(0)
    layers = []
    for _ in range(6):
        layers += [torch.nn.Linear(1024, 1024), torch.nn.ReLU()]
    model = torch.nn.Sequential(*layers, torch.nn.Linear(1024, 10)).eval()
    torch.onnx.export(model, (torch.randn(1, 1024),), str(path), input_names=["x"], output_names=["logits"],
                      dynamic_axes={"x": {0: "batch"}, "logits": {0: "batch"}}, dynamo=False)
    return path


def test_nightly_flags_a_slower_run(tmp_path):
    model = mlp_onnx(tmp_path / "mlp.onnx")
    profile = write_profile(tmp_path, batch=32, iterations=20)
    db = tmp_path / "bench.db"

    def bench_once(threads: int, record: bool = True) -> float:
        args = ["bench", str(model), "--device", str(profile), "--threads", str(threads), "-b", "onnxruntime", "--json"]
        r = runner.invoke(app, args + (["--history", str(db)] if record else []))
        assert r.exit_code == 0, r.output
        (row,) = json.loads(r.stdout)["rows"]
        assert row["threads"] == threads
        return row["latency_p50_ms"]

    # On a quiet 2-core host 2 threads are ~1.5-1.8x faster than 1; on a shared, oversubscribed one the
    # spinning second thread can make 2 threads the slower setting. Probe (not recorded) which it is now.
    probe = {t: bench_once(t, record=False) for t in (1, 2)}
    fast_threads, slow_threads = sorted(probe, key=probe.get)
    fast = [bench_once(fast_threads) for _ in range(3)]
    shutil.copy(db, tmp_path / "quiet.db")  # the same history without the slow night
    # The slow night, on purpose: the slower thread count on a machine whose cores are busy with other
    # work (two spinning processes, bounded to this one bench call): what a noisy neighbour does to CI.
    hogs = [subprocess.Popen([sys.executable, "-c", "import time\nend = time.time() + 120\nwhile time.time() < end: pass"])
            for _ in range(2)]
    try:
        slow = bench_once(slow_threads)
    finally:
        for h in hogs:
            h.kill()
            h.wait()
    print(f"nightly: fast {fast_threads} threads p50 {fast} ms, slow {slow_threads} threads p50 {slow} ms")
    assert len(history.runs(db)) == 4

    quiet = runner.invoke(app, ["report", "nightly", "--history", str(tmp_path / "quiet.db"),
                                "--out", str(tmp_path / "quiet"), *NIGHTLY])
    expected_quiet = 1 if history.detect_regressions(tmp_path / "quiet.db", min_relative=0.3) else 0
    assert quiet.exit_code == expected_quiet, quiet.output
    if expected_quiet:
        pytest.skip(f"this host is too noisy right now: the three 2-thread runs {fast} ms already differ by >30%")
    assert "0 regression(s)" in quiet.stdout

    found = history.detect_regressions(db, min_relative=0.3)
    if not found:
        pytest.skip(f"{slow_threads} threads were not clearly slower than {fast_threads} this time: {slow} vs {fast} ms")
    flagged = runner.invoke(app, ["report", "nightly", "--history", str(db), "--out", str(tmp_path / "nightly"), *NIGHTLY])
    assert flagged.exit_code == 1, flagged.output
    assert "regression" in flagged.stdout and "mlp.onnx" in flagged.stdout
    assert slow > 1.3 * statistics.median(fast)
    summary = json.loads((tmp_path / "nightly" / "nightly.json").read_text())
    (reg,) = summary["regressions"]
    assert reg["threads"] == slow_threads and reg["series"]["batch"] == 32 and reg["series"]["backend"] == "onnxruntime"
    as_json = runner.invoke(app, ["report", "nightly", "--history", str(db), "--out", str(tmp_path / "nightly"),
                                  "--json", *NIGHTLY])
    assert as_json.exit_code == 1 and json.loads(as_json.stdout)["regressions"]
