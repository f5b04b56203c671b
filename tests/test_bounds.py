"""Bounds on every setting (issue 10, item 7): device bench settings, recipe and CLI seeds, CLI numbers,
TensorRT profile shapes. Each bad value is a one-line error naming the setting, before any compute."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from toolkit.cli.app import app

runner = CliRunner()
ROOT = Path(__file__).resolve().parent.parent
JETSON = (ROOT / "devices/jetson-orin-nano.yaml").read_text()


def one_line_error(r, *words):
    err = [line for line in r.stderr.splitlines() if line.strip()]
    assert r.exit_code == 2, r.output
    assert len(err) == 1 and "Traceback" not in r.output, r.output
    for w in words:
        assert w in err[0], err[0]


def device_with_bench(tmp_path: Path, bench: str) -> Path:
    start, end = JETSON.index("bench:"), JETSON.index("stand_in:")
    path = tmp_path / "dev.yaml"
    path.write_text(JETSON[:start] + f"bench: {bench}\n" + JETSON[end:])
    return path


BENCH = [
    ("threads-0", "{threads: 0}", "threads"),
    ("threads-huge", "{threads: 5000}", "threads"),
    ("threads-bool", "{threads: true}", "threads"),
    ("threads-float", "{threads: 2.5}", "threads"),
    ("threads-string", "{threads: '4'}", "threads"),
    ("iterations-0", "{iterations: 0}", "iterations"),
    ("iterations-huge", "{iterations: 1000000000}", "iterations"),
    ("warmup-negative", "{warmup: -1}", "warmup"),
    ("warmup-huge", "{warmup: 1000000}", "warmup"),
    ("batch-empty", "{batch_sizes: []}", "batch_sizes"),
    ("batch-0", "{batch_sizes: [0]}", "batch_sizes"),
    ("batch-negative", "{batch_sizes: [1, -8]}", "batch_sizes"),
    ("batch-huge", "{batch_sizes: [1000000]}", "batch_sizes"),
    ("batch-too-many", "{batch_sizes: [" + ", ".join(str(i) for i in range(1, 18)) + "]}", "batch_sizes"),
]


@pytest.mark.parametrize("case,bench,words", BENCH, ids=[b[0] for b in BENCH])
def test_device_bench_settings_are_bounded(tmp_path, case, bench, words):
    one_line_error(runner.invoke(app, ["devices", "show", str(device_with_bench(tmp_path, bench))]), words, "dev.yaml")


def test_every_shipped_profile_is_within_bounds():
    from toolkit.pipeline.devices import device_names, load_device

    for name in device_names():
        load_device(name)  # raises ConfigError otherwise


RECIPES = [
    ("seed-negative", "seed: -1", "seed"),
    ("seed-2**32", f"seed: {2**32}", "seed"),
    ("seed-float", "seed: 1.5", "seed"),
    ("calibration-0", "calibration_size: 0", "calibration_size"),
    ("calibration-huge", "calibration_size: 1000000000", "calibration_size"),
    ("pass-seed-negative", None, "seed"),
    ("pass-batch-huge", None, "batch_size"),
]


@pytest.mark.parametrize("case,line,words", RECIPES, ids=[r[0] for r in RECIPES])
def test_recipe_numbers_are_bounded(tmp_path, case, line, words):
    path = tmp_path / "r.yaml"
    if line is not None:
        path.write_text(f"name: r\n{line}\nsteps:\n  - {{id: a, pass: export_onnx}}\n")
    else:
        opt = "{seed: -5}" if "seed" in case else "{batch_size: 100000}"
        path.write_text(f"name: r\nsteps:\n  - {{id: s, pass: distill, options: {opt}}}\n")
    one_line_error(runner.invoke(app, ["recipes", "show", str(path)]), words, "r.yaml")


CLI = [
    ("compress-seed-negative", ["compress", "--seed", "-1"], "--seed"),
    ("compress-seed-2**32", ["compress", "--seed", str(2**32)], "--seed"),
    ("bench-threads-0", ["bench", "x.onnx", "--device", "jetson", "--threads", "0"], "--threads"),
    ("bench-threads-huge", ["bench", "x.onnx", "--device", "jetson", "--threads", "100000"], "--threads"),
    ("calibrate-threads-0", ["calibrate", "x.onnx", "--data", "d.npz", "--threads", "0"], "--threads"),
    ("nightly-min-relative-nan", ["report", "nightly", "--history", "{db}", "--min-relative", "nan"], "--min-relative"),
    ("nightly-min-relative-inf", ["report", "nightly", "--history", "{db}", "--min-relative", "inf"], "--min-relative"),
    ("nightly-min-relative-negative", ["report", "nightly", "--history", "{db}", "--min-relative", "-0.1"], "--min-relative"),
]


@pytest.mark.parametrize("case,argv,words", CLI, ids=[c[0] for c in CLI])
def test_cli_numbers_are_bounded_before_any_compute(tmp_path, monkeypatch, case, argv, words):
    from toolkit.output import history

    from tests.test_history import bench_rows

    db = tmp_path / "bench.db"
    history.record(db, bench_rows(1.0), {})
    monkeypatch.chdir(tmp_path)
    before = sorted(p.name for p in tmp_path.iterdir())
    one_line_error(runner.invoke(app, [a.replace("{db}", str(db)) for a in argv]), words)
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no run folder, no report


def test_library_seed_bound_matches_numpy():
    import numpy as np

    from toolkit.core.bounds import SEED_MAX, check_seed
    from toolkit.core.errors import ConfigError

    np.random.RandomState(check_seed(SEED_MAX))  # the largest accepted seed is one numpy takes
    for bad in (-1, SEED_MAX + 1, True, 1.0, "3"):
        with pytest.raises(ConfigError, match="seed"):
            check_seed(bad)


SHAPES = [
    ("min-above-opt", ((8, 3), (4, 3), (16, 3)), "min <= opt <= max"),
    ("opt-above-max", ((1, 3), (32, 3), (16, 3)), "min <= opt <= max"),
    ("zero-dim", ((0, 3), (1, 3), (2, 3)), "between 1 and"),
    ("negative-dim", ((1, -1), (1, 3), (1, 3)), "between 1 and"),
    ("named-dim", ((1, "height"), (1, 3), (1, 3)), "'height'"),
    ("float-dim", ((1, 3.5), (1, 3), (1, 3)), "3.5"),
    ("huge-dim", ((1, 3), (1, 3), (1, 1 << 30)), "between 1 and"),
    ("rank-mismatch", ((1, 3), (1, 3, 3), (1, 3)), "differ in rank"),
    ("two-shapes", ((1, 3), (1, 3)), "three shapes"),
    ("not-shapes", 7, "three shapes"),
]


@pytest.mark.parametrize("case,profile,words", SHAPES, ids=[s[0] for s in SHAPES])
def test_tensorrt_build_command_shapes_are_bounded(case, profile, words):
    from toolkit.backends.tensorrt import profile_shapes, trtexec_command
    from toolkit.core.errors import UnsupportedError

    with pytest.raises(UnsupportedError, match=re.escape(words)) as err:
        trtexec_command("model.onnx", "fp16", {"x": profile}, "model.engine")
    assert "\n" not in str(err.value) and "'x'" in str(err.value)
    with pytest.raises(UnsupportedError):
        profile_shapes({"x": (-1, 3)}, input_shapes={"x": profile})


def test_a_good_profile_is_written_as_given():
    from toolkit.backends.tensorrt import trtexec_command

    cmd = trtexec_command("model.onnx", "fp16", {"x": ((1, 3), (8, 3), (32, 3))}, "model.engine")
    assert "--minShapes=x:1x3" in cmd and "--optShapes=x:8x3" in cmd and "--maxShapes=x:32x3" in cmd
