"""Nightly benchmark history in SQLite (regression detection over it: history_trend.py, re-exported here).

Why SQLite: one file CI can cache between nights, readable without optkit, and safe to
append to from one writer. Why not a CSV: we need run-level metadata (git revision, host,
library versions) joined to many result rows, and a schema version to refuse strange files.

The file holds:
  meta     key/value: format marker and schema version
  runs     one row per `record()` call: when, which revision, which host, which libraries
  results  one row per bench measurement (model, backend, precision, batch, ... latencies)

A *series* is what we compare over time: (model, backend, precision, batch, device, host).
The host is part of the key because numbers from different machines are not comparable
(DESIGN.md honesty rules); a new host starts a new series with "not enough history".
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import platform
import sqlite3
import statistics
import subprocess
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

from toolkit.output import history_guard as guard
from toolkit.output.history_trend import (HIGHER_IS_BETTER, MAD_TO_SIGMA, SERIES_FIELDS, assess,  # noqa: F401
                                          detect_regressions, noise_band, series_key_dict)
from toolkit.core.errors import ConfigError, DataError, HistoryError, OptkitError
from toolkit.core.host import library_versions  # noqa: F401 - the one list of versions, re-exported for history users

SCHEMA_VERSION = 1
FORMAT_MARKER = "optkit-history"
# SQLite's header field for "which application owns this file" ("optk" in ASCII).
APPLICATION_ID = 0x6F70746B

ROW_TEXT_FIELDS = ("model", "model_sha256", "backend", "precision", "device", "measured_on")
ROW_INT_FIELDS = ("batch", "threads")
ROW_METRIC_FIELDS = (
    "latency_p50_ms",
    "latency_p95_ms",
    "latency_p99_ms",
    "throughput_per_s",
    "peak_rss_mb",
)
ROW_FIELDS = ROW_TEXT_FIELDS + ROW_INT_FIELDS + ROW_METRIC_FIELDS

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS runs (
    run_id            INTEGER PRIMARY KEY AUTOINCREMENT,
    timestamp         TEXT NOT NULL,
    git_revision      TEXT,
    host_fingerprint  TEXT NOT NULL,
    host_key          TEXT NOT NULL,
    library_versions  TEXT NOT NULL,
    extra             TEXT NOT NULL DEFAULT '{}'
);
CREATE TABLE IF NOT EXISTS results (
    result_id         INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id            INTEGER NOT NULL REFERENCES runs(run_id),
    model             TEXT NOT NULL,
    model_sha256      TEXT NOT NULL,
    backend           TEXT NOT NULL,
    precision         TEXT NOT NULL,
    batch             INTEGER NOT NULL,
    threads           INTEGER NOT NULL,
    latency_p50_ms    REAL,
    latency_p95_ms    REAL,
    latency_p99_ms    REAL,
    throughput_per_s  REAL,
    peak_rss_mb       REAL,
    device            TEXT NOT NULL,
    measured_on       TEXT NOT NULL,
    extra             TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS results_series
    ON results (model, backend, precision, batch, device);
"""


# --------------------------------------------------------------------------- host facts
def host_fingerprint() -> dict[str, Any]:
    """What makes latencies from two runs comparable: CPU, cores, OS, Python.

    CPU, architecture, core count and Python come from toolkit.core.host (the facts every
    'measured on' label uses), so a history row and a bench label never disagree.
    `cores_usable` is the affinity mask (containers and CI runners often get fewer cores
    than the machine has), which is what bench threads are capped at.
    """
    from toolkit.core import host as _host

    facts = _host.host()
    return {
        "cpu_model": _host.cpu_model(),
        "machine": facts["arch"],
        "cores_logical": facts["cores"] or 1,
        "cores_usable": _host.usable_cores(),
        "os": platform.system(),
        "os_release": platform.release(),
        "python": facts["python"],
    }


def host_key(fingerprint: dict[str, Any]) -> str:
    """A short stable id of a fingerprint, used in the series key.

    Only fields that change performance go in: the kernel patch level and Python patch
    version change on every image update and would split series for no reason.
    """
    py = str(fingerprint.get("python", ""))
    stable = {
        "cpu_model": fingerprint.get("cpu_model"),
        "machine": fingerprint.get("machine"),
        "cores_usable": fingerprint.get("cores_usable"),
        "os": fingerprint.get("os"),
        "python": ".".join(py.split(".")[:2]),
    }
    blob = json.dumps(stable, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


def git_revision(cwd: str | Path | None = None) -> str | None:
    """HEAD's commit (with '+dirty' if the tree has changes), or None outside a git checkout."""
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10
        )
        if rev.returncode != 0:
            return None
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=cwd, capture_output=True, text=True, timeout=10,
        )
        return rev.stdout.strip() + ("+dirty" if dirty.returncode == 0 and dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


# --------------------------------------------------------------------------- the file
def _not_history(path: Path, why: str) -> ConfigError:
    return ConfigError(
        f"{path}: not an optkit history database ({why}); pass a new file to --history "
        f"or move this one away"
    )


class _EmptyHistory(ConfigError):
    """A valid but empty SQLite file: nothing to read yet, fine to write."""


def _check_or_init(con: sqlite3.Connection, path: Path, *, create: bool) -> None:
    """Refuse foreign files; create the schema in an empty one when `create` is set."""
    try:
        app_id = con.execute("PRAGMA application_id").fetchone()[0]
        version = con.execute("PRAGMA user_version").fetchone()[0]
        tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    except sqlite3.DatabaseError as exc:
        if guard.is_locked(exc) or "malformed" in str(exc):  # a busy or damaged history, not a foreign file
            raise guard.classify(path, exc) from exc
        raise _not_history(path, f"not SQLite: {exc}") from exc

    if app_id == 0 and not tables:
        if not create:
            raise _EmptyHistory(f"{path}: history database is empty; record a run first (optkit bench --history {path})")
        with con:
            con.executescript(_SCHEMA)
            con.execute(f"PRAGMA application_id = {APPLICATION_ID}")
            con.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            con.execute("INSERT OR REPLACE INTO meta VALUES ('format', ?)", (FORMAT_MARKER,))
            con.execute("INSERT OR REPLACE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
        return
    if app_id != APPLICATION_ID or "meta" not in tables:
        raise _not_history(path, "SQLite file made by another application")
    marker = con.execute("SELECT value FROM meta WHERE key='format'").fetchone()
    if marker is None or marker[0] != FORMAT_MARKER:
        raise _not_history(path, "format marker missing")
    if version > SCHEMA_VERSION:
        raise ConfigError(
            f"{path}: history schema v{version} is newer than this optkit (v{SCHEMA_VERSION}); upgrade optkit"
        )
    missing = {"runs", "results"} - tables
    if missing:
        raise _not_history(path, f"tables missing: {', '.join(sorted(missing))}")


@contextlib.contextmanager
def _connect(db_path: str | Path, *, create: bool) -> Iterator[sqlite3.Connection]:
    """Open and validate the history file. Read-only opens never create a file by accident."""
    path = Path(db_path)
    if path.is_dir():
        raise ConfigError(f"{path}: is a folder; --history needs a file path such as bench.db")
    if not create and not path.exists():
        raise ConfigError(f"{path}: no such history database; record runs with optkit bench --history {path}")
    if create:
        if not path.parent.exists():
            raise ConfigError(f"{path}: folder {path.parent} does not exist; create it first")
        target = str(path)
        uri = False
    else:
        target = path.resolve().as_uri() + "?mode=ro"
        uri = True
    timeout = guard.lock_timeout()
    try:
        con = sqlite3.connect(target, uri=uri, timeout=timeout)
    except sqlite3.Error as exc:
        raise ConfigError(f"{path}: cannot open history database ({exc}); check the path and permissions") from exc
    try:
        _check_or_init(con, path, create=create)
        yield con
    except sqlite3.Error as exc:  # locked past the timeout, corrupt pages, disk full: one line, never a traceback
        raise guard.classify(path, exc) from exc
    finally:
        con.close()


def preflight(db_path: str | Path) -> None:
    """Before bench spends minutes timing: refuse a foreign, corrupt or newer history file now.

    A missing or empty file is fine (record creates it); a lock is fine (record waits for it).
    """
    path = Path(db_path)
    try:
        if not path.exists() or path.stat().st_size == 0:
            return
        with _connect(path, create=False):
            pass
    except _EmptyHistory:
        return
    except HistoryError as exc:
        if "is locked" not in str(exc):
            raise


# --------------------------------------------------------------------------- writing
def _clean_row(row: dict[str, Any], index: int) -> tuple[list[Any], dict[str, Any]]:
    """Validate one bench row; unknown keys are kept in `extra` so nothing measured is lost."""
    if not isinstance(row, dict):
        raise DataError(f"bench row {index}: expected a dict, got {type(row).__name__}")
    missing = [f for f in ROW_TEXT_FIELDS + ROW_INT_FIELDS if row.get(f) in (None, "")]
    if missing:
        raise DataError(f"bench row {index}: missing {', '.join(missing)}; every row needs {', '.join(ROW_FIELDS)}")
    values: list[Any] = []
    for f in ROW_TEXT_FIELDS:
        values.append(str(row[f]))
    for f in ROW_INT_FIELDS:
        try:
            values.append(int(row[f]))
        except (TypeError, ValueError) as exc:
            raise DataError(f"bench row {index}: {f}={row[f]!r} is not an integer") from exc
    for f in ROW_METRIC_FIELDS:
        v = row.get(f)
        if v is None:
            values.append(None)
            continue
        try:
            values.append(float(v))
        except (TypeError, ValueError) as exc:
            raise DataError(f"bench row {index}: {f}={v!r} is not a number") from exc
    extra = {k: v for k, v in row.items() if k not in ROW_FIELDS}
    return values, extra


def record(db_path: str | Path, rows: list[dict[str, Any]], meta: dict[str, Any] | None = None) -> int:
    """Append one run (its bench rows and where/what it ran on) and return its run_id.

    `meta` may carry git_revision, host_fingerprint, library_versions and timestamp (UTC ISO);
    what it lacks is filled in from this process, so a bench command only passes what it
    knows better (e.g. the revision of the checkout it benchmarked). Other keys are kept.
    All rows go in one transaction: a failed record leaves the file as it was.
    """
    meta = dict(meta or {})
    if not rows:
        raise DataError("no bench rows to record; run optkit bench first")
    cleaned = [_clean_row(r, i) for i, r in enumerate(rows)]
    fingerprint = meta.pop("host_fingerprint", None) or host_fingerprint()
    versions = meta.pop("library_versions", None) or library_versions()
    revision = meta.pop("git_revision", None)
    timestamp = meta.pop("timestamp", None) or datetime.now(timezone.utc).isoformat(timespec="seconds")
    full_meta = {**meta, "host_fingerprint": fingerprint, "library_versions": versions, "git_revision": revision,
                 "timestamp": timestamp}
    try:
        return _insert(db_path, cleaned, meta, fingerprint, versions, revision, timestamp)
    except (OptkitError, sqlite3.Error, OSError) as exc:
        # The rows were measured (minutes of timing): a refusing database must not lose them.
        reason = str(exc) if isinstance(exc, OptkitError) else f"{type(exc).__name__}: {exc}"
        side = guard.save_unsaved(db_path, rows, full_meta, reason)
        kept = (f"the {len(rows)} measured rows are saved in {side} (record them later with "
                f"toolkit.output.history_guard.replay_unsaved)" if side is not None
                else f"the {len(rows)} measured rows could not be saved anywhere (every folder is unwritable)")
        cls = type(exc) if isinstance(exc, OptkitError) else HistoryError
        raise cls(f"{reason}; {kept}") from exc


def _insert(db_path, cleaned, meta, fingerprint, versions, revision, timestamp) -> int:
    with _connect(db_path, create=True) as con, con:
        cur = con.execute(
            "INSERT INTO runs (timestamp, git_revision, host_fingerprint, host_key, library_versions, extra)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (
                str(timestamp),
                revision,
                json.dumps(fingerprint, sort_keys=True),
                host_key(fingerprint),
                json.dumps(versions, sort_keys=True),
                json.dumps(meta, sort_keys=True, default=str),
            ),
        )
        run_id = int(cur.lastrowid)
        con.executemany(
            f"INSERT INTO results (run_id, {', '.join(ROW_FIELDS)}, extra)"
            f" VALUES (?, {', '.join('?' for _ in ROW_FIELDS)}, ?)",
            [(run_id, *values, json.dumps(extra, sort_keys=True, default=str)) for values, extra in cleaned],
        )
    return run_id


# --------------------------------------------------------------------------- reading
def runs(db_path: str | Path) -> list[dict[str, Any]]:
    """Every run's metadata, oldest first."""
    with _connect(db_path, create=False) as con:
        cur = con.execute(
            "SELECT run_id, timestamp, git_revision, host_fingerprint, host_key, library_versions, extra"
            " FROM runs ORDER BY run_id"
        )
        out = []
        for run_id, ts, rev, fp, hk, libs, extra in cur:
            out.append({
                "run_id": run_id, "timestamp": ts, "git_revision": rev,
                "host_fingerprint": _json_field(db_path, run_id, "host_fingerprint", fp), "host_key": hk,
                "library_versions": _json_field(db_path, run_id, "library_versions", libs),
                "meta": _json_field(db_path, run_id, "extra", extra),
            })
        return out


def _json_field(db_path, run_id, field: str, text) -> Any:
    try:
        value = json.loads(text)
    except (TypeError, ValueError):
        raise guard.corrupt_row(Path(db_path), "runs", run_id, field, text) from None
    if not isinstance(value, dict):
        raise guard.corrupt_row(Path(db_path), "runs", run_id, field, text)
    return value


def _number(db_path, result_id, field: str, value, kind=float):
    """A stored value as the schema's type; SQLite keeps whatever was written, so a foreign write shows here."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind is int and value != int(value)):
        raise guard.corrupt_row(Path(db_path), "results", result_id, field, value)
    if kind is float and value != value:  # NaN stored by hand: would poison medians
        raise guard.corrupt_row(Path(db_path), "results", result_id, field, value)
    return kind(value)


def check_metric(metric: str) -> None:
    if metric not in ROW_METRIC_FIELDS:
        raise ConfigError(f"unknown metric '{metric}'; choose one of: {', '.join(ROW_METRIC_FIELDS)}")


def series_points(db_path: str | Path, metric: str = "latency_p50_ms") -> dict[tuple, list[dict[str, Any]]]:
    """Per series, one point per run (oldest first): the median of that run's rows.

    A run may bench the same configuration more than once; the median keeps one outlier
    repeat from becoming the night's number.
    """
    check_metric(metric)
    with _connect(db_path, create=False) as con:
        cur = con.execute(
            f"SELECT r.model, r.backend, r.precision, r.batch, r.device, u.host_key,"
            f" r.run_id, u.timestamp, u.git_revision, r.{metric}, r.model_sha256, r.threads, r.measured_on,"
            f" r.result_id"
            f" FROM results r JOIN runs u ON u.run_id = r.run_id"
            f" WHERE r.{metric} IS NOT NULL ORDER BY r.run_id, r.result_id"
        )
        grouped: dict[tuple, dict[int, dict[str, Any]]] = {}
        for model, backend, precision, batch, device, hk, run_id, ts, rev, value, sha, threads, measured_on, rid in cur:
            batch = _number(db_path, rid, "batch", batch, int)
            value = _number(db_path, rid, metric, value)
            key = (model, backend, precision, batch, device, hk)
            point = grouped.setdefault(key, {}).setdefault(run_id, {
                "run_id": run_id, "timestamp": ts, "git_revision": rev, "values": [],
                "model_sha256": sha, "threads": threads, "measured_on": measured_on,
            })
            point["values"].append(float(value))
    out: dict[tuple, list[dict[str, Any]]] = {}
    for key, by_run in grouped.items():
        pts = []
        for run_id in sorted(by_run):
            p = by_run[run_id]
            p["value"] = statistics.median(p.pop("values"))
            pts.append(p)
        out[key] = pts
    return out
