"""Faults of the bench history database (history.py): locks, corruption, and never losing measured rows.

- A locked database (another process holds a write lock) is waited for, up to OPTKIT_HISTORY_TIMEOUT_S
  seconds (default 30: a concurrent `optkit bench` commits in well under a second, a nightly report reads
  in a few), then reported as *locked* - not as a foreign file to be moved away.
- A corrupt file (garbage pages, rows with wrong types) is a one-line HistoryError naming the file.
- Rows `bench` measured are never lost: when the database refuses them, they go to a side file next to it,
  `<db>.unsaved-<UTC time>.jsonl` (or the temp folder when that folder is unwritable too), and the error
  says where. `replay_unsaved(db, side_file)` records them later.
"""
from __future__ import annotations

import json
import os
import sqlite3
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from toolkit.core.errors import HistoryError

DEFAULT_TIMEOUT_S = 30.0
MAX_TIMEOUT_S = 3600.0  # an hour: longer than any nightly job should ever hold the file
SIDE_HEADER = "optkit_unsaved_run"


def lock_timeout() -> float:
    """Seconds to wait for another writer's lock (OPTKIT_HISTORY_TIMEOUT_S, bounded to 0..3600)."""
    raw = os.environ.get("OPTKIT_HISTORY_TIMEOUT_S")
    if not raw:
        return DEFAULT_TIMEOUT_S
    try:
        value = float(raw)
    except ValueError:
        raise HistoryError(f"OPTKIT_HISTORY_TIMEOUT_S={raw!r}: not a number of seconds; use e.g. 30") from None
    if not 0 <= value <= MAX_TIMEOUT_S:  # also refuses nan and inf
        raise HistoryError(f"OPTKIT_HISTORY_TIMEOUT_S={raw}: must be between 0 and {MAX_TIMEOUT_S:g} seconds")
    return value


def is_locked(exc: BaseException) -> bool:
    text = str(exc).lower()
    return isinstance(exc, sqlite3.OperationalError) and ("locked" in text or "busy" in text)


def classify(path: Path, exc: sqlite3.Error) -> HistoryError:
    """One line for what SQLite said, naming the file and what to do."""
    text = " ".join(str(exc).split())
    if is_locked(exc):
        return HistoryError(f"{path}: history database is locked by another process (waited {lock_timeout():g} s); "
                            "retry when it is done, or raise OPTKIT_HISTORY_TIMEOUT_S")
    if "malformed" in text or "not a database" in text or isinstance(exc, sqlite3.DatabaseError) and "corrupt" in text:
        return HistoryError(f"{path}: history database is corrupt ({text}); restore it from a backup, or salvage it "
                            f"with `sqlite3 {path} .recover`, or pass a new file to --history")
    return HistoryError(f"{path}: history database failed ({text}); check free space and permissions of {path.parent}")


def corrupt_row(path: Path, table: str, row_id: Any, field: str, value: Any) -> HistoryError:
    shown = repr(value)
    shown = shown if len(shown) <= 60 else shown[:59] + "…"
    return HistoryError(f"{path}: history database is corrupt: {table} row {row_id} has {field}={shown}, which no "
                        "optkit wrote; delete that row (sqlite3) or restore the file from a backup")


def _side_path(folder: Path, db_name: str) -> Path:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
    return folder / f"{db_name}.unsaved-{stamp}.jsonl"


def save_unsaved(db_path: str | Path, rows: list[dict[str, Any]], meta: dict[str, Any], reason: str) -> Path | None:
    """Write the refused rows (one JSON object a line, after a header line) next to the db; None if nowhere works.

    Written to a temporary name and renamed, so a half-written side file never appears.
    """
    db = Path(db_path)
    header = {SIDE_HEADER: {"history": str(db), "reason": reason, "meta": meta}}
    text = "".join(json.dumps(obj, sort_keys=True, default=str) + "\n" for obj in [header, *rows])
    for folder in (db.parent, Path(tempfile.gettempdir())):
        target = _side_path(folder, db.name)
        tmp = target.with_name(target.name + ".tmp")
        try:
            tmp.write_text(text, encoding="utf-8")
            tmp.replace(target)
            return target
        except OSError:
            tmp.unlink(missing_ok=True)
    return None


def load_unsaved(side_file: str | Path) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """(rows, meta) from a side file written by save_unsaved."""
    path = Path(side_file)
    try:
        lines = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        meta = lines[0][SIDE_HEADER]["meta"]
    except (OSError, ValueError, KeyError, IndexError, TypeError) as exc:
        raise HistoryError(f"{path}: not an optkit unsaved-rows file ({type(exc).__name__}); pass the "
                           "<db>.unsaved-<time>.jsonl file bench named") from None
    return lines[1:], meta


def replay_unsaved(db_path: str | Path, side_file: str | Path) -> int:
    """Record a side file's rows into the history (same host, versions and time as measured); deletes the file."""
    from toolkit.output import history

    rows, meta = load_unsaved(side_file)
    run_id = history.record(db_path, rows, meta)
    Path(side_file).unlink(missing_ok=True)
    return run_id
