"""History database faults (issue 10, item 6): locks are waited for and called locked, corruption is one
line, and rows bench measured are never lost (a side file next to the database when it refuses them)."""
from __future__ import annotations

import json
import platform
import sqlite3
import threading
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from toolkit.output import history
from toolkit.output import history_guard
from toolkit.cli.app import app
from toolkit.core.errors import ConfigError, HistoryError

from tests.test_history import HOST, LIBS, bench_rows, make_history

runner = CliRunner()
META = {"host_fingerprint": HOST, "library_versions": LIBS, "git_revision": "abc", "timestamp": "2026-03-09T02:00:00+00:00"}


def n_runs(db: Path) -> int:
    con = sqlite3.connect(db)
    try:
        return con.execute("SELECT count(*) FROM runs").fetchone()[0]
    finally:
        con.close()


def side_files(db: Path) -> list[Path]:
    return sorted(db.parent.glob(f"{db.name}.unsaved-*.jsonl"))


def assert_saved(db: Path, err: Exception, rows: list[dict]) -> Path:
    """The error names one side file next to the db, holding exactly the refused rows."""
    files = side_files(db)
    assert len(files) == 1 and str(files[0]) in str(err) and "\n" not in str(err)
    saved, meta = history_guard.load_unsaved(files[0])
    assert saved == json.loads(json.dumps(rows))
    assert meta["host_fingerprint"] == HOST and meta["git_revision"] == "abc"
    return files[0]


@pytest.fixture
def locked_db(tmp_path, monkeypatch):
    """A history with 3 runs, and a way to hold a lock on it from another connection."""
    db = tmp_path / "bench.db"
    make_history(db, [1.0, 1.0, 1.0])
    monkeypatch.setenv("OPTKIT_HISTORY_TIMEOUT_S", "0.5")
    holders = []

    def hold(mode: str) -> sqlite3.Connection:
        con = sqlite3.connect(db, isolation_level=None, check_same_thread=False)  # released from a timer thread
        con.execute(f"BEGIN {mode}")
        holders.append(con)
        return con

    yield db, hold
    for con in holders:
        con.close()


@pytest.mark.parametrize("mode", ["IMMEDIATE", "EXCLUSIVE"])
def test_locked_database_is_waited_for_then_called_locked_and_rows_are_kept(locked_db, mode):
    db, hold = locked_db
    holder = hold(mode)
    rows = bench_rows(2.0)
    t0 = time.monotonic()
    with pytest.raises(HistoryError) as err:
        history.record(db, rows, dict(META))
    assert time.monotonic() - t0 >= 0.4  # it waited for the timeout
    msg = str(err.value)
    assert "is locked by another process" in msg and "not an optkit history" not in msg and "move" not in msg
    assert_saved(db, err.value, rows)
    holder.rollback()
    assert n_runs(db) == 3  # nothing half-recorded


def test_saved_rows_replay_into_the_database(locked_db):
    db, hold = locked_db
    con = hold("EXCLUSIVE")
    rows = bench_rows(2.0) + bench_rows(3.0, batch=8)
    with pytest.raises(HistoryError):
        history.record(db, rows, dict(META))
    side = side_files(db)[0]
    con.rollback()
    run_id = history_guard.replay_unsaved(db, side)
    assert run_id == 4 and n_runs(db) == 4 and not side.exists()
    latest = {k: pts[-1]["value"] for k, pts in history.series_points(db).items() if pts[-1]["run_id"] == 4}
    assert sorted(latest.values()) == [2.0, 3.0]
    assert history.runs(db)[-1]["git_revision"] == "abc"


def test_a_lock_released_within_the_timeout_is_waited_for(locked_db, monkeypatch):
    db, hold = locked_db
    monkeypatch.setenv("OPTKIT_HISTORY_TIMEOUT_S", "20")
    con = hold("EXCLUSIVE")
    threading.Timer(0.3, con.rollback).start()
    assert history.record(db, bench_rows(2.0), dict(META)) == 4
    assert not side_files(db)


def test_reading_a_locked_database_says_locked(locked_db):
    db, hold = locked_db
    hold("EXCLUSIVE")
    with pytest.raises(HistoryError, match="is locked by another process"):
        history.assess(db)
    r = runner.invoke(app, ["report", "nightly", "--history", str(db), "--out", str(db.parent / "night")])
    assert r.exit_code == 2 and "is locked" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not (db.parent / "night").exists()


def _corrupt_pages(db: Path) -> None:
    """Garbage over every page but the first (the schema): the b-trees of runs and results are gone."""
    data = bytearray(db.read_bytes())
    page = int.from_bytes(data[16:18], "big")
    for i in range(page, len(data)):
        data[i] = (i * 151 + 7) % 256
    db.write_bytes(bytes(data))


def test_garbage_pages_are_a_one_line_corrupt_error_and_rows_are_kept(tmp_path):
    db = tmp_path / "bench.db"
    make_history(db, [1.0] * 6)
    _corrupt_pages(db)
    for read in (history.assess, history.runs, history.series_points):
        with pytest.raises(HistoryError, match="history database is corrupt") as err:
            read(db)
        assert "\n" not in str(err.value) and str(db) in str(err.value) and ".recover" in str(err.value)
    rows = bench_rows(2.0)
    with pytest.raises(HistoryError, match="corrupt") as err:
        history.record(db, rows, dict(META))
    assert_saved(db, err.value, rows)
    r = runner.invoke(app, ["report", "nightly", "--history", str(db), "--out", str(tmp_path / "night")])
    assert r.exit_code == 2 and "corrupt" in r.stderr and "Traceback" not in r.output


WRONG_ROWS = [
    ("text-latency", "UPDATE results SET latency_p50_ms = 'fast' WHERE result_id = 2", "latency_p50_ms='fast'"),
    ("blob-latency", "UPDATE results SET latency_p50_ms = x'00ff' WHERE result_id = 2", "latency_p50_ms=b'"),
    ("text-batch", "UPDATE results SET batch = 'eight' WHERE result_id = 2", "batch='eight'"),
    ("fraction-batch", "UPDATE results SET batch = 1.5 WHERE result_id = 2", "batch=1.5"),
    ("bad-json-host", "UPDATE runs SET host_fingerprint = '{not json' WHERE run_id = 2", "host_fingerprint='{not json'"),
    ("json-not-object", "UPDATE runs SET library_versions = '[1, 2]' WHERE run_id = 2", "library_versions='[1, 2]'"),
]


@pytest.mark.parametrize("case,sql,words", WRONG_ROWS, ids=[c[0] for c in WRONG_ROWS])
def test_a_row_with_wrong_types_is_a_one_line_error_naming_it(tmp_path, case, sql, words):
    db = tmp_path / "bench.db"
    make_history(db, [1.0, 1.0, 1.0])
    con = sqlite3.connect(db)
    con.execute(sql)
    con.commit()
    con.close()
    read = history.runs if "runs" in sql else history.assess
    with pytest.raises(HistoryError) as err:
        read(db)
    msg = str(err.value)
    assert "history database is corrupt" in msg and "row 2" in msg and words in msg and "\n" not in msg


def test_a_foreign_file_is_refused_before_bench_times_anything(tmp_path, monkeypatch):
    db = tmp_path / "bench.db"
    db.write_text("model,latency\n")
    timed = []
    monkeypatch.setattr("toolkit.pipeline.bench._collect", lambda paths: timed.append(paths) or [])
    r = runner.invoke(app, ["bench", str(tmp_path / "m.onnx"), "--device", "jetson", "--history", str(db)])
    assert r.exit_code == 2 and "not an optkit history database" in r.stderr
    assert timed == [] and not side_files(db)


def test_bad_lock_timeout_setting_is_one_line(tmp_path, monkeypatch):
    for value in ("soon", "-1", "nan", "1e9"):
        monkeypatch.setenv("OPTKIT_HISTORY_TIMEOUT_S", value)
        with pytest.raises(HistoryError, match="OPTKIT_HISTORY_TIMEOUT_S"):
            history_guard.lock_timeout()


# --------------------------------------------------------------------------- a real bench, a refusing database
PROFILE = """\
name: faults-cpu
description: tiny bench for the history fault tests
arch: {arch}
accelerators:
  - {{name: test cpu, kind: cpu, source: test}}
backends: [onnxruntime]
precisions: [fp32]
bench: {{threads: 1, batch_sizes: [1, 4], warmup: 1, iterations: 5}}
stand_in: {{backend: onnxruntime, note: test}}
"""


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    import torch

    w = tmp_path_factory.mktemp("tiny")
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 4)).eval()
    torch.onnx.export(model, (torch.randn(2, 8),), str(w / "tiny.onnx"), input_names=["x"], output_names=["logits"],
                      dynamic_axes={"x": {0: "batch"}, "logits": {0: "batch"}}, dynamo=False)
    (w / "faults.yaml").write_text(PROFILE.format(arch=platform.machine()))
    return w


def test_bench_rows_refused_by_a_locked_database_go_to_a_side_file(tiny, tmp_path, monkeypatch):
    db = tmp_path / "bench.db"
    make_history(db, [1.0])
    monkeypatch.setenv("OPTKIT_HISTORY_TIMEOUT_S", "0.3")
    measured = []
    real_record = history.record

    def spy(path, rows, meta=None):
        measured.extend(json.loads(json.dumps(rows, default=str)))
        return real_record(path, rows, meta)

    monkeypatch.setattr(history, "record", spy)
    con = sqlite3.connect(db, isolation_level=None)
    con.execute("BEGIN EXCLUSIVE")
    try:
        r = runner.invoke(app, ["bench", str(tiny / "tiny.onnx"), "--device", str(tiny / "faults.yaml"),
                                "-b", "onnxruntime", "--history", str(db)])
    finally:
        con.close()
    assert r.exit_code == 2, r.output
    err = [line for line in r.stderr.splitlines() if line.strip() and not line.lstrip().startswith("timing")]
    assert len(err) == 1 and "is locked" in err[0] and "measured rows are saved in" in err[0]
    assert len(measured) == 2  # batch 1 and 4
    files = side_files(db)
    assert len(files) == 1 and str(files[0]) in err[0]
    saved, meta = history_guard.load_unsaved(files[0])
    assert saved == measured and meta["command"] == "optkit bench"
    assert n_runs(db) == 1  # the database is as it was


def test_unwritable_side_file_folder_falls_back_to_the_temp_folder(tmp_path, monkeypatch):
    import tempfile

    calls = []
    real = history_guard._side_path

    def first_unwritable(folder, name):
        calls.append(folder)
        return (tmp_path / "missing" / "x.jsonl") if len(calls) == 1 else real(folder, name)

    monkeypatch.setattr(history_guard, "_side_path", first_unwritable)
    db = tmp_path / "bench.db"
    db.write_text("not sqlite")
    with pytest.raises(ConfigError) as err:
        history.record(db, bench_rows(1.0), dict(META))
    side = Path(str(err.value).split("saved in ")[1].split(" (")[0])
    assert side.parent == Path(tempfile.gettempdir())
    assert history_guard.load_unsaved(side)[0] == bench_rows(1.0)
    side.unlink()
