"""Runtime sessions, one module per runtime, registered by name. Runtimes are imported lazily."""
from __future__ import annotations

import importlib

from toolkit.core.errors import BackendUnavailable, ConfigError
from toolkit.backends.base import BACKENDS, Session, register_backend

# Module per backend name; importing it registers the Session class.
_MODULES = {
    "torch": "toolkit.backends.torch",
    "onnxruntime": "toolkit.backends.onnxruntime",
    "openvino": "toolkit.backends.openvino",
    "tensorrt": "toolkit.backends.tensorrt",
}


def session_class(backend: str) -> type[Session]:
    if backend not in _MODULES:
        raise ConfigError(f"unknown backend '{backend}'; choose one of: {', '.join(_MODULES)}")
    if backend not in BACKENDS:
        importlib.import_module(_MODULES[backend])
    return BACKENDS[backend]


def open_session(candidate, threads: int) -> Session:
    """A Session for the candidate on its backend (use as a context manager)."""
    return session_class(candidate.backend)(candidate, threads=threads)


def availability(backend: str) -> tuple[bool, str]:
    """(usable here, why not / what runs) without raising."""
    try:
        cls = session_class(backend)
        return True, cls.check_available()
    except BackendUnavailable as exc:
        return False, str(exc)
    except ImportError as exc:  # a runtime that fails to import is unavailable, said plainly
        return False, f"{backend}: import failed ({exc})"


__all__ = ["BACKENDS", "Session", "register_backend", "session_class", "open_session", "availability"]
