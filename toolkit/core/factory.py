"""`package.module:function` -> the callable: how a user names code they own (a model factory, a student
factory). One resolver for intake (state dict + factory) and passes (distill's students)."""
from __future__ import annotations

import importlib

from toolkit.core.errors import CheckpointError


def resolve_factory(spec: str):
    """The callable named by `spec`; the user names code they own, so importing it is theirs to trust."""
    if ":" not in spec:
        raise CheckpointError(f"model factory '{spec}' must look like package.module:function")
    mod_name, fn_name = spec.split(":", 1)
    try:
        module = importlib.import_module(mod_name)
    except ImportError as exc:
        raise CheckpointError(f"model factory '{spec}': cannot import {mod_name} ({exc}); put it on PYTHONPATH") from exc
    fn = getattr(module, fn_name, None)
    if not callable(fn):
        raise CheckpointError(f"model factory '{spec}': {mod_name} has no function {fn_name}")
    return fn


__all__ = ["resolve_factory"]
