"""Runtime backends, one module per runtime, registered by name. Runtimes are imported lazily.

The registry is the one place that knows which runtimes exist: device profiles, the planner,
bench, calibrate, doctor and history iterate it; nothing else names a backend.
"""
from __future__ import annotations

import importlib
from pathlib import Path

from toolkit.backends.base import BACKENDS, Session, register_backend
from toolkit.core.artifacts import ArtifactFacts
from toolkit.core.errors import BackendUnavailable, ConfigError, UnsupportedError

# The registration: backend name -> module (importing it registers the Session class; the
# module imports its runtime only when a session loads, so this stays cheap).
MODULES = {
    "torch": "toolkit.backends.torch",
    "onnxruntime": "toolkit.backends.onnxruntime",
    "openvino": "toolkit.backends.openvino",
    "tensorrt": "toolkit.backends.tensorrt",
    "executorch": "toolkit.backends.executorch",
}


def names() -> list[str]:
    return list(MODULES)


def session_class(backend: str) -> type[Session]:
    if backend not in MODULES:
        raise ConfigError(f"unknown backend '{backend}'; choose one of: {', '.join(MODULES)}")
    if backend not in BACKENDS:
        importlib.import_module(MODULES[backend])
    return BACKENDS[backend]


def all_classes() -> list[type[Session]]:
    return [session_class(n) for n in MODULES]


def open_session(candidate, threads: int) -> Session:
    """A Session for the candidate on its backend (use as a context manager)."""
    return session_class(candidate.backend)(candidate, threads=threads)


EVAL_BATCH = 64


def run_split(session: Session, split, batch: int = EVAL_BATCH):
    """Logits of a whole data split through an open session, in batches (float32, rows in order)."""
    import numpy as np

    return np.concatenate([session.infer(b) for b in split.batches(batch)]).astype(np.float32)


def infer_file(path: Path, feeds: dict, threads: int = 1, backend: str | None = None):
    """Logits of one batch from an artifact file through its backend's Session (a pass's parity check, say):
    every inference goes through a Session, never a runtime called directly."""
    from toolkit.core.candidate import Candidate

    cls, fmt = reader_for(path)
    cand = Candidate(id=Path(path).stem, path=Path(path), format=fmt, precision="as stored",
                     backend=backend or cls.name, lineage=())
    with open_session(cand, threads=threads) as session:
        return session.infer(feeds)


def availability(backend: str) -> tuple[bool, str]:
    """(usable here, why not / what runs) without raising."""
    try:
        cls = session_class(backend)
        return True, cls.check_available()
    except BackendUnavailable as exc:
        return False, str(exc)
    except ImportError as exc:  # a runtime that fails to import is unavailable, said plainly
        return False, f"{backend}: import failed ({exc})"


def deploy_format(backend: str) -> str:
    """The artifact format a backend is given on a device (TensorRT builds its engine from ONNX)."""
    return session_class(backend).formats[0]


def readable_suffixes() -> dict[str, tuple[str, str]]:
    """File suffix -> (backend that reads it, format)."""
    out: dict[str, tuple[str, str]] = {}
    for cls in all_classes():
        for suffix, fmt in cls.reads.items():
            out.setdefault(suffix, (cls.name, fmt))
    return out


def reader_for(path: Path) -> tuple[type[Session], str]:
    found = readable_suffixes().get(Path(path).suffix.lower())
    if found is None:
        raise UnsupportedError(f"{path}: optkit reads {', '.join(sorted(readable_suffixes()))} artifacts; "
                               "pass one of those, or a compress run folder")
    return session_class(found[0]), found[1]


def inspect(path: Path, trust: bool = False) -> ArtifactFacts:
    """What an artifact file contains, read by the backend that owns its format."""
    cls, _ = reader_for(path)
    return cls.inspect(Path(path), trust=trust)


def runners(fmt: str) -> list[str]:
    """Backends that execute artifacts of this format, in registry order."""
    return [cls.name for cls in all_classes() if fmt in cls.formats]


__all__ = ["BACKENDS", "MODULES", "Session", "register_backend", "names", "session_class", "all_classes",
           "open_session", "run_split", "infer_file", "availability", "deploy_format", "readable_suffixes", "reader_for", "inspect", "runners"]
