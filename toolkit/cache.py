"""Where optkit keeps reusable things (the trained demo, pass outputs): content-addressed."""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any


def cache_dir() -> Path:
    root = Path(os.environ.get("OPTKIT_CACHE_DIR") or Path.home() / ".cache" / "optkit")
    root.mkdir(parents=True, exist_ok=True)
    return root


def key(*parts: Any) -> str:
    """A stable hash of JSON-able parts (paths as strings, dicts with sorted keys)."""
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:20]
