"""Environment faults and the CLI's last line of defence (issue 10, items 5 and 9).

--out folders that must never be replaced, a full disk in the last step (nothing half-written, finished
work kept for --resume), an unusable cache (the run goes on without it), a baseline-only recipe, and an
unexpected exception or Ctrl-C in any command: one line, exit 70/130, the traceback in a log file.
"""
from __future__ import annotations

import errno
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from toolkit.cli.app import app

runner = CliRunner()
ROOT = Path(__file__).resolve().parent.parent
ONE_PASS = "name: one-pass\nsteps:\n  - {id: onnx-fp32, pass: export_onnx}\n"
BASELINE_ONLY = "name: baseline-only\nsteps: []\n"
INTERNAL = re.compile(r"^internal error: (\w+): (.*); details in (\S+?)(; .*)?$")


def tree(root: Path) -> dict[str, bytes | str]:
    return {str(p.relative_to(root)): p.read_bytes() if p.is_file() else "dir" for p in sorted(root.rglob("*"))}


def lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


@pytest.fixture(scope="module")
def env(tmp_path_factory, demo_model):
    """Recipes, a quick bench profile, and the demo as safetensors + .npz (so no run needs the demo cache)."""
    from safetensors.torch import save_file

    from toolkit.intake.demo import digits_dataset

    w = tmp_path_factory.mktemp("env")
    (w / "one.yaml").write_text(ONE_PASS)
    (w / "base.yaml").write_text(BASELINE_ONLY)
    # its budgets, with a latency budget a loaded 2-core CI host always meets: these tests are about faults
    text = (ROOT / "devices/x86-avx512.yaml").read_text().replace("latency_p95_ms: 10\n", "latency_p95_ms: 10000\n")
    assert "latency_p95_ms: 10000" in text
    start, end = text.index("bench:"), text.index("stand_in:")
    (w / "quick.yaml").write_text(text[:start] + "bench: {threads: 2, batch_sizes: [1], warmup: 2, iterations: 10}\n"
                                  + text[end:])
    d = digits_dataset()
    np.savez(w / "digits.npz", x=np.concatenate([d.val.inputs["x"], d.test.inputs["x"]]),
             y=np.concatenate([d.val.y, d.test.y]))
    save_file({k: v.contiguous() for k, v in demo_model.module.state_dict().items()}, str(w / "demo.safetensors"))
    return w


def compress_args(env: Path, out: Path, recipe: str = "base.yaml", *extra: str) -> list[str]:
    return ["compress", str(env / "demo.safetensors"), "--model-factory", "toolkit.intake.demo:digits_cnn",
            "--data", str(env / "digits.npz"), "--device", str(env / "quick.yaml"), "--recipe", str(env / recipe),
            "--out", str(out), *extra]


# --------------------------------------------------------------------------- --out that must never be replaced
OUT_CASES = [
    ("dot", ".", "is the current folder"),
    ("cwd-absolute", "{cwd}", "is the current folder"),
    ("cwd-via-dotdot", "{cwd}/sub/..", "is the current folder"),
    ("parent", "..", "is a parent of the current folder"),
    ("root", "/", "is a parent of the current folder"),
    ("home", "{home}", "is your home folder"),
    ("foreign-folder-overwrite", "{cwd}/sub/foreign", "never replaced, even with --overwrite"),
]


@pytest.mark.parametrize("case,out,words", OUT_CASES, ids=[c[0] for c in OUT_CASES])
def test_out_that_must_not_be_replaced_is_refused_untouched(tmp_path, monkeypatch, case, out, words):
    cwd, home = tmp_path / "work", tmp_path / "home"
    (cwd / "sub" / "foreign").mkdir(parents=True)
    (cwd / "sub" / "foreign" / "thesis.tex").write_text("years of work")
    (cwd / "notes.txt").write_text("mine")
    home.mkdir()
    (home / ".bashrc").write_text("export A=1")
    monkeypatch.chdir(cwd)
    monkeypatch.setenv("HOME", str(home))
    before = tree(tmp_path)
    r = runner.invoke(app, ["compress", "--out", out.format(cwd=cwd, home=home), "--overwrite"])
    assert r.exit_code == 2, r.output
    assert len(lines(r.stderr)) == 1 and words in r.stderr and "Traceback" not in r.output
    assert tree(tmp_path) == before  # nothing created, nothing moved, no lock or staging left behind


def test_nightly_out_dot_is_refused(tmp_path, monkeypatch):
    from toolkit.output import history

    from tests.test_history import bench_rows

    db = tmp_path / "bench.db"
    history.record(db, bench_rows(1.0), {})
    (tmp_path / "empty").mkdir()  # an empty current folder: the nightly's own "not empty" check does not fire
    monkeypatch.chdir(tmp_path / "empty")
    before = tree(tmp_path)
    r = runner.invoke(app, ["report", "nightly", "--history", str(db), "--out", "."])
    assert r.exit_code == 2 and "is the current folder" in r.stderr, r.output
    assert tree(tmp_path) == before


# --------------------------------------------------------------------------- baseline-only recipe
def test_baseline_only_recipe_succeeds_end_to_end_and_overwrite_replaces_only_optkit_folders(env, tmp_path):
    out = tmp_path / "run"
    r = runner.invoke(app, compress_args(env, out))
    assert r.exit_code == 0, r.output
    report = json.loads((out / "report/report.json").read_text())
    assert report["selected"] == report["baseline"] and report["plan"] == []
    html, md = (out / "report/index.html").read_text(), (out / "report/report.md").read_text()
    assert report["selected"] in html and report["selected"] in md
    assert runner.invoke(app, ["verify", str(out / "bundle")]).exit_code == 0
    # the folder optkit wrote may be replaced with --overwrite ...
    r = runner.invoke(app, compress_args(env, out, "base.yaml", "--overwrite"))
    assert r.exit_code == 0, r.output
    assert (out / ".optkit-output").exists()


# --------------------------------------------------------------------------- a full disk in the last step
def _no_space(path="report/index.html"):
    def fail(*a, **k):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)
    return fail


@pytest.mark.parametrize("where", ["toolkit.output.report.write_report", "toolkit.output.bundle.write_bundle"])
def test_full_disk_at_the_end_keeps_the_work_and_resume_finishes(env, tmp_path, monkeypatch, where):
    out = tmp_path / "run"
    staging = tmp_path / ".run.optkit-staging"
    with monkeypatch.context() as m:
        m.setattr(where, _no_space())
        r = runner.invoke(app, compress_args(env, out, "one.yaml"))
    assert r.exit_code == 2, r.output
    err = lines(r.stderr)
    assert len(err) == 1 and "No space left on device" in err[0] and "--resume" in err[0] and str(staging) in err[0]
    assert "Traceback" not in r.output
    assert not out.exists()  # nothing half-written where users look
    assert (staging / "candidates/onnx-fp32/.optkit-step.json").exists()  # the finished pass is kept
    assert not (tmp_path / ".run.optkit.lock").exists()
    r = runner.invoke(app, compress_args(env, out, "one.yaml", "--resume"))
    assert r.exit_code == 0, r.output
    assert "resuming the interrupted run" in r.stdout
    plan = {s["id"]: s["status"] for s in json.loads((out / "report/report.json").read_text())["plan"]}
    assert plan == {"onnx-fp32": "resumed"}
    assert not staging.exists()
    assert runner.invoke(app, ["verify", str(out / "bundle")]).exit_code == 0


def test_full_disk_in_a_non_resumable_command_cleans_up(tmp_path, monkeypatch):
    """calibrate/nightly have no --resume: a failed write removes its staging folder and says so."""
    from toolkit.core.errors import OutputError
    from toolkit.output.staging import staged

    out = tmp_path / "cal"
    with pytest.raises(OutputError, match="No space left on device") as err:
        with staged(out, overwrite=False):
            _no_space("cal/calibration.json")()
    assert "--resume" not in str(err.value)
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- an unusable or missing cache
@pytest.mark.parametrize("kind", ["under-a-file", "is-a-file"])
def test_unusable_cache_the_run_goes_on_without_it(env, tmp_path, monkeypatch, kind):
    blocker = tmp_path / "blocker"
    blocker.write_text("not a folder")
    cache = blocker / "cache" if kind == "under-a-file" else blocker
    monkeypatch.setenv("OPTKIT_CACHE_DIR", str(cache))
    out = tmp_path / "run"
    r = runner.invoke(app, compress_args(env, out, "one.yaml"))
    assert r.exit_code == 0, r.output
    assert "cache not used" in r.stdout and str(cache) in r.stdout
    assert blocker.read_text() == "not a folder"
    plan = {s["id"]: s["status"] for s in json.loads((out / "report/report.json").read_text())["plan"]}
    assert plan == {"onnx-fp32": "built"}


def test_missing_cache_folder_is_created(env, tmp_path, monkeypatch):
    cache = tmp_path / "gone" / "optkit"
    monkeypatch.setenv("OPTKIT_CACHE_DIR", str(cache))
    r = runner.invoke(app, compress_args(env, tmp_path / "run", "one.yaml"))
    assert r.exit_code == 0, r.output
    assert "cache not used" not in r.stdout
    assert list((cache / "passes").glob("*/.optkit-step.json"))


# --------------------------------------------------------------------------- the last line of defence
def _boom(*a, **k):
    raise RuntimeError("boom\nsecond line of a library's message")


# (command line, the library function it calls, patched to fail unexpectedly)
COMMANDS = [
    (["compress"], "toolkit.api.compress"),
    (["verify", "bundle"], "toolkit.api.verify"),
    (["doctor"], "toolkit.pipeline.doctor.doctor"),
    (["devices", "list"], "toolkit.pipeline.devices.device_names"),
    (["devices", "show", "jetson"], "toolkit.pipeline.devices.load_device"),
    (["recipes", "list"], "toolkit.pipeline.recipes.recipe_names"),
    (["recipes", "show", "default"], "toolkit.pipeline.recipes.load_recipe"),
    (["calibrate", "m.onnx", "--data", "d.npz"], "toolkit.pipeline.calibrate.calibrate"),
    (["bench", "m.onnx", "--device", "jetson"], "toolkit.pipeline.bench.bench"),
    (["report", "nightly", "--history", "b.db"], "toolkit.output.nightly.write_nightly_report"),
    (["distill"], "toolkit.pipeline.distill.distill"),
]


@pytest.mark.parametrize("argv,target", COMMANDS, ids=[" ".join(c[0][:2]) for c in COMMANDS])
def test_unexpected_exception_is_one_line_exit_70_and_a_log(tmp_path, monkeypatch, argv, target):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(target, _boom)
    r = runner.invoke(app, argv)
    assert r.exit_code == 70, r.output
    err = lines(r.stderr)
    assert len(err) == 1, r.stderr
    m = INTERNAL.match(err[0])
    assert m and m.group(1) == "RuntimeError" and m.group(2) == "boom second line of a library's message"
    assert "Traceback" not in r.output
    log = Path(m.group(3))
    assert log.is_relative_to(Path(os.environ["OPTKIT_CACHE_DIR"]) / "logs")
    text = log.read_text()
    assert "Traceback (most recent call last)" in text and "RuntimeError: boom" in text


@pytest.mark.parametrize("argv,target", COMMANDS[:4], ids=[" ".join(c[0][:2]) for c in COMMANDS[:4]])
def test_ctrl_c_is_one_line_exit_130(tmp_path, monkeypatch, argv, target):
    def interrupt(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(target, interrupt)
    r = runner.invoke(app, argv)
    assert r.exit_code == 130 and lines(r.stderr) == ["interrupted"], r.output


def test_internal_error_in_the_last_step_logs_into_the_kept_run_and_resumes(env, tmp_path, monkeypatch):
    out = tmp_path / "run"
    staging = tmp_path / ".run.optkit-staging"
    with monkeypatch.context() as m:
        m.setattr("toolkit.output.report.write_report", _boom)
        r = runner.invoke(app, compress_args(env, out, "one.yaml"))
    assert r.exit_code == 70, r.output
    err = lines(r.stderr)
    assert len(err) == 1 and "Traceback" not in r.output
    match = INTERNAL.match(err[0])
    assert match and Path(match.group(3)) == staging / "optkit.log" and "--resume" in err[0]
    assert "RuntimeError: boom" in (staging / "optkit.log").read_text()
    assert not out.exists() and (staging / "candidates/onnx-fp32/.optkit-step.json").exists()
    r = runner.invoke(app, compress_args(env, out, "one.yaml", "--resume"))
    assert r.exit_code == 0, r.output
    assert (out / "optkit.log").exists()  # the run keeps its log of what went wrong the first time


def test_log_falls_back_to_the_temp_folder_when_the_cache_is_unwritable(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    monkeypatch.setenv("OPTKIT_CACHE_DIR", str(blocker / "cache"))
    monkeypatch.setattr("toolkit.pipeline.doctor.doctor", _boom)
    r = runner.invoke(app, ["doctor"])
    assert r.exit_code == 70
    log = Path(INTERNAL.match(lines(r.stderr)[0]).group(3))
    assert log.parent == Path(__import__("tempfile").gettempdir()) and "RuntimeError" in log.read_text()
    log.unlink()


def test_library_api_still_raises(monkeypatch):
    import toolkit

    monkeypatch.setattr("toolkit.pipeline.compress.load_device", _boom)
    with pytest.raises(RuntimeError, match="boom"):
        toolkit.compress(None, device="jetson")


def _leaf_commands(typer_app, prefix=()):
    """(argv prefix, CommandInfo) of every command, nested groups included - also ones added later."""
    for info in typer_app.registered_commands:
        yield (*prefix, info.name or info.callback.__name__.replace("_", "-")), info
    for group in typer_app.registered_groups:
        yield from _leaf_commands(group.typer_instance, (*prefix, group.name))


def _required_args(group, path) -> list[str]:
    """A value ("1": parses as int, str and Path) for every required argument and option of a command."""
    cmd = group
    for name in path:
        cmd = cmd.commands[name]
    args = []
    for param in cmd.params:
        if param.required:
            args += ["1"] if param.param_type_name == "argument" else [param.opts[0], "1"]
    return args


def test_one_wrapper_covers_every_command_and_typer_pretty_exceptions_are_off(monkeypatch):
    import functools

    import typer

    from toolkit.cli.guard import GuardedGroup

    group = typer.main.get_command(app)
    assert isinstance(group, GuardedGroup) and app.pretty_exceptions_enable is False
    commands = list(_leaf_commands(app))
    assert len(commands) >= 10
    for path, info in commands:  # every command, whatever it is, fails the same way: same name and parameters
        monkeypatch.setattr(info, "callback", functools.wraps(info.callback)(lambda *a, **k: _boom()))
    for path, _ in commands:
        r = runner.invoke(app, [*path, *_required_args(group, path)])
        assert r.exit_code == 70 and INTERNAL.match(lines(r.stderr)[0]), (path, r.output)


def test_real_process_shows_no_traceback(tmp_path):
    code = ("import toolkit.pipeline.doctor as d\n"
            "def boom(*a, **k):\n    raise ValueError('bad thing')\n"
            "d.doctor = boom\nfrom toolkit.cli.app import app\napp(['doctor'], prog_name='optkit')\n")
    p = subprocess.run([sys.executable, "-c", code], cwd=str(ROOT), capture_output=True, text=True, timeout=120,
                       env={**os.environ, "OPTKIT_CACHE_DIR": str(tmp_path)})
    assert p.returncode == 70
    assert lines(p.stderr) == [lines(p.stderr)[0]] and INTERNAL.match(lines(p.stderr)[0]), p.stderr
    assert "Traceback" not in p.stderr + p.stdout
    assert "ValueError: bad thing" in next((tmp_path / "logs").glob("internal-*.log")).read_text()


def test_a_reader_that_goes_away_is_not_an_internal_error(tmp_path, monkeypatch):
    """`optkit bench --help | head -3`: the pipe closes before optkit has written; no 'internal error', no traceback,
    exit 1 as click programs do. The same inside a command (a long table into a closed pipe) goes the same way."""
    proc = subprocess.Popen([sys.executable, "-c", "from toolkit.cli import app; app()", "bench", "--help"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, "COLUMNS": "80"})
    proc.stdout.close()  # before the child has imported anything: its first write meets a closed pipe
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 1, err
    assert err == "", err

    def closed_pipe(*a, **k):
        raise BrokenPipeError(errno.EPIPE, "Broken pipe")

    monkeypatch.setattr("toolkit.pipeline.devices.device_names", closed_pipe)
    r = runner.invoke(app, ["devices", "list"])
    assert r.exit_code == 1 and "internal error" not in r.output, r.output
