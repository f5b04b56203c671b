"""History: recording runs, refusing foreign files, and the regression rule."""
from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from toolkit.output import history
from toolkit.core.errors import ConfigError, DataError

HOST = {
    "cpu_model": "AMD EPYC 9R14 96-Core Processor",
    "machine": "x86_64",
    "cores_logical": 2,
    "cores_usable": 2,
    "os": "Linux",
    "os_release": "6.8.0-1019-aws",
    "python": "3.11.7",
}
LIBS = {"torch": "2.13.0", "onnx": "1.23.2", "onnxruntime": "1.32.0", "openvino": "2026.4.1",
        "nncf": "3.4.0", "numpy": "2.4.6", "tensorrt": None}


def bench_rows(p50: float, *, backend: str = "onnxruntime", precision: str = "int8",
               batch: int = 1, model: str = "resnet18-int8-qdq") -> list[dict]:
    """Rows shaped like `optkit bench` output, with latency percentiles derived from p50."""
    return [{
        "model": model,
        "model_sha256": "3f5a" + "0" * 60,
        "backend": backend,
        "precision": precision,
        "batch": batch,
        "threads": 2,
        "latency_p50_ms": p50,
        "latency_p95_ms": p50 * 1.15,
        "latency_p99_ms": p50 * 1.3,
        "throughput_per_s": batch * 1000.0 / p50,
        "peak_rss_mb": 41.5,
        "device": "x86-avx512",
        "measured_on": "AMD EPYC 9R14 (2 cores), onnxruntime 1.32.0",
    }]


def make_history(db: Path, p50s: list[float], host: dict | None = None, **row_kw) -> list[int]:
    ids = []
    for night, p50 in enumerate(p50s):
        meta = {
            "git_revision": f"{night:07x}abc",
            "host_fingerprint": host or HOST,
            "library_versions": LIBS,
            "timestamp": f"2026-03-{night + 1:02d}T02:00:00+00:00",
        }
        ids.append(history.record(db, bench_rows(p50, **row_kw), meta))
    return ids


def test_record_creates_schema_and_returns_increasing_ids(tmp_path):
    db = tmp_path / "bench.db"
    ids = make_history(db, [6.5, 6.4])
    assert ids == sorted(ids) and len(set(ids)) == 2
    con = sqlite3.connect(db)
    assert con.execute("PRAGMA user_version").fetchone()[0] == history.SCHEMA_VERSION
    assert dict(con.execute("SELECT key, value FROM meta"))["schema_version"] == str(history.SCHEMA_VERSION)
    assert con.execute("SELECT COUNT(*) FROM results").fetchone()[0] == 2
    con.close()
    runs = history.runs(db)
    assert runs[0]["git_revision"] == "0000000abc"
    assert runs[0]["host_fingerprint"]["cpu_model"] == HOST["cpu_model"]
    assert runs[0]["library_versions"]["onnxruntime"] == "1.32.0"


def test_record_fills_in_host_and_versions(tmp_path):
    db = tmp_path / "bench.db"
    history.record(db, bench_rows(1.0), {})
    run = history.runs(db)[0]
    assert set(run["host_fingerprint"]) >= {"cpu_model", "cores_logical", "os", "python"}
    assert "numpy" in run["library_versions"]
    assert run["timestamp"].endswith("+00:00")


def test_four_runs_last_two_times_slower_is_flagged(tmp_path):
    db = tmp_path / "bench.db"
    make_history(db, [6.5, 6.7, 6.4, 13.0])
    found = history.detect_regressions(db)
    assert len(found) == 1
    f = found[0]
    assert f["status"] == "regression"
    assert f["series"]["model"] == "resnet18-int8-qdq" and f["series"]["batch"] == 1
    assert f["baseline_median"] == pytest.approx(6.5)
    assert f["ratio"] == pytest.approx(2.0)
    assert f["latest"] > f["threshold"] == pytest.approx(f["baseline_median"] + f["band"])


def test_same_history_without_the_slow_run_is_clean(tmp_path):
    db = tmp_path / "bench.db"
    make_history(db, [6.5, 6.7, 6.4])
    assert history.detect_regressions(db) == []
    (finding,) = history.assess(db)
    assert finding["status"] == "ok"


def test_noisy_but_not_slower_is_not_flagged(tmp_path):
    db = tmp_path / "bench.db"
    # Sub-millisecond timings moving by tens of percent (STACK-NOTES): wide MAD, no trend.
    make_history(db, [0.20, 0.27, 0.15, 0.24, 0.17, 0.26])
    assert history.detect_regressions(db) == []


def test_relative_floor_flags_a_small_step_in_a_quiet_series(tmp_path):
    db = tmp_path / "bench.db"
    make_history(db, [10.0, 10.0, 10.0, 10.0, 11.5])  # MAD is 0: only the 10% floor applies
    (f,) = history.detect_regressions(db)
    assert f["band"] == pytest.approx(1.0)
    db2 = tmp_path / "quiet.db"
    make_history(db2, [10.0, 10.0, 10.0, 10.0, 10.9])
    assert history.detect_regressions(db2) == []


def test_window_limits_the_baseline(tmp_path):
    db = tmp_path / "bench.db"
    # Old slow nights outside the window must not widen the band of tonight's comparison.
    make_history(db, [30.0, 30.0, 30.0, 10.0, 10.0, 10.0, 10.0, 10.0, 13.0])
    (f,) = history.detect_regressions(db, window=5)
    assert f["n_previous"] == 5 and f["baseline_median"] == pytest.approx(10.0)


def test_one_or_two_runs_is_not_enough_history(tmp_path):
    db = tmp_path / "bench.db"
    make_history(db, [6.5, 40.0])
    assert history.detect_regressions(db) == []
    (f,) = history.assess(db)
    assert f["status"] == "not enough history" and f["n_previous"] == 1
    assert f["baseline_median"] is None


def test_series_are_split_by_host_and_config(tmp_path):
    db = tmp_path / "bench.db"
    make_history(db, [6.5, 6.6, 6.4])
    other_host = dict(HOST, cpu_model="Intel Xeon Platinum 8488C", cores_usable=4)
    make_history(db, [13.0], host=other_host)          # slower machine: a new series, not a regression
    make_history(db, [2.0, 2.1, 2.0], batch=8)         # another batch size: its own series
    findings = history.assess(db)
    statuses = sorted(f["status"] for f in findings)
    assert statuses == ["not enough history", "ok", "ok"]
    assert history.detect_regressions(db) == []


def test_host_key_ignores_patch_levels():
    a = history.host_key(HOST)
    assert history.host_key(dict(HOST, os_release="6.8.0-2000-aws", python="3.11.9")) == a
    assert history.host_key(dict(HOST, cores_usable=8)) != a


def test_throughput_regression_is_a_drop(tmp_path):
    db = tmp_path / "bench.db"
    make_history(db, [1.0, 1.0, 1.0, 2.0])
    (f,) = history.detect_regressions(db, metric="throughput_per_s")
    assert f["latest"] == pytest.approx(500.0) and f["ratio"] == pytest.approx(0.5)


def test_unknown_metric_is_a_config_error(tmp_path):
    db = tmp_path / "bench.db"
    make_history(db, [1.0])
    with pytest.raises(ConfigError, match="latency_p50_ms"):
        history.detect_regressions(db, metric="latency_ms")


def test_non_optkit_sqlite_file_is_refused(tmp_path):
    db = tmp_path / "other.db"
    con = sqlite3.connect(db)
    con.execute("CREATE TABLE users (id INTEGER, name TEXT)")
    con.commit()
    con.close()
    with pytest.raises(ConfigError, match="not an optkit history database") as err:
        history.record(db, bench_rows(1.0), {})
    assert str(db) in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(ConfigError, match="not an optkit history database"):
        history.detect_regressions(db)
    con = sqlite3.connect(db)  # untouched
    assert [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")] == ["users"]
    con.close()


def test_non_sqlite_file_is_refused(tmp_path):
    db = tmp_path / "bench.db"
    db.write_text("model,latency\nresnet,6.5\n")
    with pytest.raises(ConfigError, match="not an optkit history database"):
        history.record(db, bench_rows(1.0), {})
    with pytest.raises(ConfigError, match="not an optkit history database"):
        history.assess(db)


def test_newer_schema_is_refused(tmp_path):
    db = tmp_path / "bench.db"
    make_history(db, [1.0])
    con = sqlite3.connect(db)
    con.execute(f"PRAGMA user_version = {history.SCHEMA_VERSION + 1}")
    con.close()
    with pytest.raises(ConfigError, match="upgrade optkit"):
        history.assess(db)


def test_reading_a_missing_file_does_not_create_it(tmp_path):
    db = tmp_path / "nope.db"
    with pytest.raises(ConfigError, match="no such history"):
        history.detect_regressions(db)
    assert not db.exists()


def test_bad_rows_are_refused_and_nothing_is_written(tmp_path):
    db = tmp_path / "bench.db"
    make_history(db, [1.0])
    bad = bench_rows(1.0)
    del bad[0]["backend"]
    with pytest.raises(DataError, match="backend"):
        history.record(db, bench_rows(1.0) + bad, {})
    with pytest.raises(DataError, match="batch"):
        history.record(db, [dict(bench_rows(1.0)[0], batch="eight")], {})
    with pytest.raises(DataError):
        history.record(db, [], {})
    assert len(history.runs(db)) == 1


def test_extra_row_keys_are_kept(tmp_path):
    db = tmp_path / "bench.db"
    history.record(db, [dict(bench_rows(1.0)[0], n_runs=200)], {"recipe": "default"})
    con = sqlite3.connect(db)
    assert '"n_runs": 200' in con.execute("SELECT extra FROM results").fetchone()[0]
    con.close()
    assert history.runs(db)[0]["meta"] == {"recipe": "default"}


def test_library_versions_reads_metadata_without_importing_runtimes():
    code = (
        "import sys; from toolkit.output import history; v = history.library_versions();"
        "assert set(v) >= {'torch','onnx','onnxruntime','openvino','nncf','numpy'}, v;"
        "assert all(x is None or isinstance(x, str) for x in v.values());"
        "bad = [m for m in ('torch','onnxruntime','openvino','nncf','tensorrt','matplotlib') if m in sys.modules];"
        "assert not bad, bad"
    )
    root = Path(__file__).resolve().parent.parent
    subprocess.run([sys.executable, "-c", code], cwd=root, check=True)


def test_missing_library_is_none(monkeypatch):
    from toolkit.core import host

    monkeypatch.setattr(host, "LIBRARIES", ("numpy", "surely-not-installed-optkit-pkg"))
    host.library_versions.cache_clear()
    try:
        v = history.library_versions()  # the one list (core/host), re-exported by history
    finally:
        host.library_versions.cache_clear()
    assert v["surely-not-installed-optkit-pkg"] is None and v["numpy"]


def test_host_fingerprint_shape():
    fp = history.host_fingerprint()
    assert fp["cores_logical"] >= fp["cores_usable"] >= 1
    assert fp["cpu_model"] and fp["python"].count(".") == 2
    assert not fp["cpu_model"].isdigit(), "picked x86's numeric 'model' line instead of 'model name'"
