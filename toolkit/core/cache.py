"""Where optkit keeps reusable things (the trained demo, pass outputs): content-addressed."""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any


# configured folder -> (private temporary folder used instead, why the configured one is unusable)
_FALLBACK: dict[str, tuple[Path, str]] = {}


def configured_dir() -> Path:
    return Path(os.environ.get("OPTKIT_CACHE_DIR") or Path.home() / ".cache" / "optkit")


def _unusable(root: Path) -> str | None:
    """Why `root` cannot hold a cache (None when it can): created if missing, then a probe write."""
    import tempfile

    try:
        root.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=root, prefix=".probe-"):
            pass
    except OSError as exc:
        return f"{root} is not a writable folder ({exc.strerror or type(exc).__name__})"
    return None


def cache_dir() -> Path:
    """The cache folder. An unusable one (cannot be created or written) never fails a run: this process
    uses a private temporary folder instead, removed at exit, i.e. it runs without the shared cache;
    `cache_problem()` says why so callers can tell the user."""
    root = configured_dir()
    if str(root) in _FALLBACK:
        return _FALLBACK[str(root)][0]
    why = _unusable(root)
    if why is None:
        return root
    import atexit
    import shutil
    import tempfile

    tmp = Path(tempfile.mkdtemp(prefix="optkit-nocache-"))
    atexit.register(shutil.rmtree, tmp, True)
    _FALLBACK[str(root)] = (tmp, why)
    return tmp


def cache_problem() -> str | None:
    """Why the configured cache is not used by this process, or None when it is."""
    cache_dir()
    entry = _FALLBACK.get(str(configured_dir()))
    return None if entry is None else entry[1]


def key(*parts: Any) -> str:
    """A stable hash of JSON-able parts (paths as strings, dicts with sorted keys)."""
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:20]


def publish(entry: Path, fill) -> None:
    """Publish a cache entry atomically: `fill(folder)` writes it into a private temporary folder, which then
    becomes `entry` in one rename (readers never see half an entry; the first writer wins). An unwritable cache
    never fails a run: the entry is simply not published."""
    import shutil

    tmp = entry.with_name(f"{entry.name}.tmp{os.getpid()}")
    try:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        fill(tmp)
        if entry.exists():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.rename(entry)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
