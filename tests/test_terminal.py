"""What a person sees on the terminal (issue 15): an 80-column table, quiet libraries, early errors.

The compress runs here are real processes (`python -m toolkit.cli`): C++ prints and library loggers
write to file descriptors, which only a real process shows.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from toolkit.cli.app import app

ROOT = Path(__file__).resolve().parent.parent
runner = CliRunner()
# export + a percentile calibrator: torch.export's "torchvision is not installed" log lines and pytree
# FutureWarning, ORT's calibration prints ("Collecting tensor data", "Finding optimal threshold")
NOISY = """name: noisy
steps:
  - {id: onnx-fp32, pass: export_onnx}
  - {id: ort-int8-percentile-calibrated-long-id, pass: ort_static_int8, from: onnx-fp32,
     options: {calibration: percentile, per_channel: true, activations: uint8}}
"""
# what third-party output looks like: glog/absl prefixes, Python warnings, the libraries' own phrases
THIRD_PARTY = re.compile(r"^[WIEF]\d{4} \d\d:|Warning\b|warnings\.warn|torchvision|Collecting tensor data|"
                         r"Finding optimal threshold|Number of (tensors|histogram bins)|^Percentile|onnxruntime::|"
                         r"nncf|neural_compressor|torchao|executorch|openvino|\[W[0-9]|Traceback")
OPTKIT_TABLE_MARKS = ("★", "✓", "✗")


@pytest.fixture(scope="module")
def noisy_run(tmp_path_factory, demo_run):
    """demo_run: the session's demo checkpoint is trained and cached; --seed 7: the passes are not (they must run)."""
    w = tmp_path_factory.mktemp("terminal")
    (w / "noisy.yaml").write_text(NOISY)
    out = w / "run"
    env = {**os.environ, "COLUMNS": "80", "PYTHONWARNINGS": "default"}
    env.pop("FORCE_COLOR", None)
    p = subprocess.run([sys.executable, "-m", "toolkit.cli", "compress", "--device", "jetson", "--recipe",
                        str(w / "noisy.yaml"), "--out", str(out), "--seed", "7"], cwd=str(ROOT), env=env, capture_output=True,
                       text=True, timeout=600)
    return p, out


def test_compress_table_fits_80_columns(noisy_run):
    p, out = noisy_run
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    table = [ln for ln in lines if ln.rstrip().endswith(OPTKIT_TABLE_MARKS)]
    assert len(table) == 3, p.stdout  # torch-fp32, onnx-fp32 and the long-id int8 row: one line each
    assert table[0].split()[0] != "torch-fp32"  # the selected row comes first
    # every line but the two that print paths whole (so they can be copied)
    too_wide = [ln for ln in lines if len(ln) > 80 and not ln.startswith(("report: ", "bundle: "))]
    assert not too_wide, too_wide
    assert "was selected:" in p.stdout and f"report: {out.resolve()}/report/index.html" in p.stdout
    assert lines[-1].startswith("done in") and lines[-1].endswith("exit 0")


def test_terminal_holds_no_third_party_line_and_the_log_does(noisy_run):
    p, out = noisy_run
    assert p.returncode == 0, p.stderr
    leaked = [ln for ln in (p.stdout + p.stderr).splitlines() if THIRD_PARTY.search(ln)]
    assert not leaked, leaked
    assert p.stderr.strip() == "", p.stderr
    log = (out / "logs" / "optkit.log").read_text()
    # the noise was there, and went to the run's log: Python logging, a captured warning, a C-level print
    assert "torchvision is not installed" in log
    assert "Warning" in log
    assert "Finding optimal threshold" in log or "Collecting tensor data" in log
    # each step said what it was doing, with the elapsed time
    assert re.search(r"^\s+\d+\.\ds\s+passes 2/2 · ort-int8-percentile-calibrated-long-id", p.stdout, re.M), p.stdout
    assert re.search(r"^\s+\d+\.\ds\s+evaluate \d/3 · onnx-fp32", p.stdout, re.M), p.stdout


def _timed(args: list[str]):
    t0 = time.perf_counter()
    r = runner.invoke(app, args)
    return r, time.perf_counter() - t0


def test_input_mistakes_fail_before_any_slow_step(tmp_path, monkeypatch):
    """A forgotten --data, a missing data file, a held lock: said before the checkpoint is opened (< 1 s)."""
    from toolkit.intake import checkpoints

    def never(*a, **k):
        raise AssertionError("the checkpoint was opened before the inputs were checked")

    monkeypatch.setattr(checkpoints, "load", never)
    ckpt = tmp_path / "model.safetensors"
    ckpt.write_bytes(b"\0" * 16)
    base = ["compress", str(ckpt), "--model-factory", "toolkit.intake.demo:digits_cnn", "--device", "jetson"]
    runner.invoke(app, ["devices", "show", "jetson"])  # imports warmed: the timing below is the checks only

    r, s = _timed(base + ["--out", str(tmp_path / "a")])
    assert r.exit_code == 2 and "no data given" in r.stderr and "--data" in r.stderr, r.output
    assert s < 1.0, s

    r, s = _timed(base + ["--data", str(tmp_path / "missing.npz"), "--out", str(tmp_path / "b")])
    assert r.exit_code == 2 and "missing.npz" in r.stderr and "not found" in r.stderr, r.output
    assert s < 1.0, s

    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (tmp_path / ".c.optkit.lock").write_text(str(holder.pid))
        r, s = _timed(base + ["--data", str(tmp_path / "missing.npz"), "--out", str(tmp_path / "c")])
        assert r.exit_code == 2 and f"pid {holder.pid}" in r.stderr and "another optkit run" in r.stderr, r.output
        assert s < 1.0, s
        assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    finally:
        holder.kill()
        holder.wait()


def _command_paths(group, prefix=()):
    yield prefix  # typer vendors click: a group is what has sub-commands
    for name, sub in getattr(group, "commands", {}).items():
        yield from _command_paths(sub, prefix + (name,))


def test_flags_are_shown_as_flags():
    import typer.main

    r = runner.invoke(app, ["compress", "--help"], env={"COLUMNS": "120"})
    assert r.exit_code == 0
    for flag in ("--overwrite", "--resume", "--no-cache", "--trust-checkpoint", "--json", "--verbose", "--help"):
        line = next(ln for ln in r.stdout.splitlines() if flag in ln)
        assert "<bool>" not in line, line
    paths = list(_command_paths(typer.main.get_command(app)))
    assert ("report", "nightly") in paths and () in paths
    for path in paths:  # every command and group, the top level included: a flag never reads as taking a value
        r = runner.invoke(app, [*path, "--help"], env={"COLUMNS": "120"})
        assert r.exit_code == 0 and "<bool>" not in r.stdout, (path, [ln for ln in r.stdout.splitlines() if "<bool>" in ln])


def test_devices_show_is_a_readable_table():
    r = runner.invoke(app, ["devices", "show", "jetson"], env={"COLUMNS": "80"})
    assert r.exit_code == 0
    assert "{" not in r.stdout and "p95 latency (ms)" in r.stdout and "timed calls" in r.stdout
    assert max(len(ln) for ln in r.stdout.splitlines()) <= 80


def test_verify_json_is_json_on_failure_too(tmp_path):
    import json

    r = runner.invoke(app, ["verify", str(tmp_path), "--json"])
    assert r.exit_code == 3
    body = json.loads(r.stdout)
    assert body["ok"] is False and "no manifest.json" in body["error"] and body["exit_code"] == 3


def test_ctrl_c_in_a_real_process_says_interrupted(tmp_path):
    import signal

    env = {**os.environ, "COLUMNS": "80"}
    p = subprocess.Popen([sys.executable, "-m", "toolkit.cli", "compress", "--device", "jetson", "--out",
                          str(tmp_path / "run")], cwd=str(ROOT), env=env, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True,
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # as in a terminal
    try:
        for line in p.stdout:  # interrupt once the run has started working
            if "start ·" in line:
                break
        p.send_signal(signal.SIGINT)
        _, err = p.communicate(timeout=120)
    finally:
        p.kill()
    assert p.returncode == 130 and err.strip().splitlines() == ["interrupted"], err
    assert not (tmp_path / "run").exists() and not list(tmp_path.glob(".run.optkit*"))


def test_python_api_returns_the_typed_result(demo_run):
    """The README's example: the selected candidate's own numbers, not candidates[0] (the baseline)."""
    from toolkit.core.result import CandidateResult

    s = demo_run.selected
    assert isinstance(s, CandidateResult) and s.id == demo_run.report.selected != demo_run.baseline.id
    assert demo_run.candidate(s.id) is s and 0 < s.metrics.macro_f1 <= 1 and s.metrics.size_mb > 0
    assert demo_run.report_path.name == "index.html" and demo_run.report_path.exists()


def test_no_candidate_selected_still_shows_the_table_and_why(tmp_path, demo_run):
    """A run whose only candidate is not deployable (torch on a Jetson): table, why, then the one error line."""
    (tmp_path / "base.yaml").write_text("name: baseline-only\nsteps: []\n")
    r = runner.invoke(app, ["compress", "--device", "jetson", "--recipe", str(tmp_path / "base.yaml"), "--out",
                            str(tmp_path / "run")], env={"COLUMNS": "80"})
    assert r.exit_code == 3, r.output
    assert "torch-fp32" in r.stdout and "✗" in r.stdout and "No candidate was selected" in r.stdout
    assert f"report: {tmp_path / 'run'}/report/index.html" in r.stdout
    err = r.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and "no candidate met" in err[0], r.stderr


def test_quiet_routes_logging_warnings_prints_and_fd_writes_to_the_log(capfd):
    import logging
    import warnings

    from toolkit.cli.quiet import quiet

    with quiet() as term:
        warnings.warn("a library's FutureWarning", FutureWarning)
        logging.getLogger("some.library").warning("a library's log line")
        print("a library's print")
        os.write(2, b"a C++ print on fd 2\n")
        term.out.write("optkit's own line\n")
    captured = capfd.readouterr()
    assert "optkit's own line" in captured.out
    assert "library" not in captured.out + captured.err and "C++" not in captured.out + captured.err
    log = term.log_path.read_text()
    for text in ("FutureWarning", "a library's log line", "a library's print", "a C++ print on fd 2"):
        assert text in log, text
    run = term.move_into(term.log_path.parent / "run-folder-missing")  # not a folder: the log stays where it is
    assert run == term.log_path
    (term.log_path.parent / "run").mkdir(exist_ok=True)
    moved = term.move_into(term.log_path.parent / "run")
    assert moved.name == "optkit.log" and "a C++ print on fd 2" in moved.read_text()
