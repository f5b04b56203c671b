"""Passes, registered by name (the YAML `pass:` key). Each returns a new Candidate.

Pass modules import their runtimes inside functions, so importing the registry is cheap.
"""
from __future__ import annotations

import importlib

from toolkit.passes.base import PASSES, PassContext, PassSpec, register_pass

_MODULES = ["export", "quantize_ort", "openvino_ir", "quantize_nncf", "quantize_pt2e", "quantize_inc",
            "mixed_precision", "distill", "qat"]


def load_all() -> dict[str, PassSpec]:
    for name in _MODULES:
        try:
            importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"{__name__}.{name}":  # a missing optional pass module is fine; a broken one is not
                raise
    return PASSES


__all__ = ["PASSES", "PassContext", "PassSpec", "register_pass", "load_all"]
