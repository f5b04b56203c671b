"""Executors: where a sweep's combinations run. One registered extension point, keyed by the --executor name.

    @register("local")
    class LocalExecutor: ...        # in-process, serial (executors/local.py)

An executor has `name`, `startup_s`, `nodes()` (the machines it ran on) and `run(combinations, on_phase, shared)`:
`shared` are the folders every node must see (the sweep folder, the cache); for every
combination it runs tasks.build_combination then tasks.measure_combination (the build's result is the measure's
input) and calls on_phase(combination, "build" | "measure", result) in this process as each finishes.
A runtime (ray) is imported inside its executor, never by `import toolkit` or the local executor.
"""
from __future__ import annotations

from typing import Any, Callable

from toolkit.core.errors import ConfigError

EXECUTORS: dict[str, Callable[..., Any]] = {}
_MODULES = {"local": "toolkit.pipeline.executors.local", "ray": "toolkit.pipeline.executors.ray"}


def register(name: str):
    def deco(cls):
        EXECUTORS[name] = cls
        cls.name = name
        return cls
    return deco


def names() -> list[str]:
    return sorted(_MODULES)


def get_executor(name: str, **options: Any):
    """The executor `name`, constructed (a runtime it needs that is missing raises BackendUnavailable here)."""
    import importlib

    if name not in _MODULES:
        raise ConfigError(f"unknown executor '{name}'; choose one of: {', '.join(names())}")
    importlib.import_module(_MODULES[name])  # registers it; only the chosen executor's module is imported
    return EXECUTORS[name](**options)


__all__ = ["EXECUTORS", "register", "names", "get_executor"]
