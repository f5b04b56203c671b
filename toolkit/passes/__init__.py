"""Passes, registered by name (the YAML `pass:` key). Each returns a new Candidate.

Every module in this package is imported by load_all(), so a new pass is one file with a
@register_pass function: no list to edit. Pass modules import their runtimes inside
functions, so importing the registry is cheap.
"""
from __future__ import annotations

import importlib
import pkgutil

from toolkit.passes.base import PASSES, PassContext, PassSpec, register_pass


def load_all() -> dict[str, PassSpec]:
    for info in pkgutil.iter_modules(__path__):
        if info.name != "base":
            importlib.import_module(f"{__name__}.{info.name}")
    return PASSES


__all__ = ["PASSES", "PassContext", "PassSpec", "register_pass", "load_all"]
