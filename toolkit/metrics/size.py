"""Artifact size on disk (MB = 10^6 bytes) and parameter-ish facts."""
from __future__ import annotations

from pathlib import Path


def size_mb(files: list[Path]) -> float:
    return round(sum(p.stat().st_size for p in files) / 1e6, 4)
