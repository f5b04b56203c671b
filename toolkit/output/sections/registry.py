"""Report sections, registered by name: fn(report: dict, folder: Path) -> {"title", "markdown", "html", "plots"} or None.

A section renders data the passes recorded in the run result; it never computes or imports a pass.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

SECTIONS: dict[str, Callable[[dict, Path], dict | None]] = {}


def register_section(name: str):
    def deco(fn):
        SECTIONS[name] = fn
        return fn

    return deco
