"""The Session lifecycle every runtime implements (after Polygraphy's BaseRunner).

    with open_session(candidate, threads=2) as s:
        logits = s.infer({"x": batch})

`infer` takes a dict of named numpy inputs and returns the logits as float32 numpy.
"""
from __future__ import annotations

import abc
from pathlib import Path
from typing import Any, Callable

import numpy as np

from toolkit.core.artifacts import ArtifactFacts
from toolkit.core.errors import UnsupportedError

BACKENDS: dict[str, type["Session"]] = {}


def register_backend(name: str, *, formats: tuple[str, ...], reads: dict[str, str] | None = None
                     ) -> Callable[[type["Session"]], type["Session"]]:
    """Register a runtime. `formats`: artifact formats it executes, the first is what it deploys;
    `reads`: file suffix -> format for the files it can open and inspect itself (bench, intake)."""
    def deco(cls: type["Session"]) -> type["Session"]:
        cls.name = name
        cls.formats = tuple(formats)
        cls.reads = dict(reads or {})
        BACKENDS[name] = cls
        return cls

    return deco


class Session(abc.ABC):
    """One runtime. The class carries what the rest of optkit asks of a backend (formats, inspection,
    precisions here, ways to run an artifact); an instance is one loaded model."""

    name: str = "?"
    formats: tuple[str, ...] = ()
    reads: dict[str, str] = {}

    def __init__(self, candidate, threads: int):
        self.candidate = candidate
        self.threads = int(threads)

    @classmethod
    def check_available(cls) -> str:
        """Raise BackendUnavailable naming what is missing; return a short description otherwise."""
        return cls.name

    @classmethod
    def inspect(cls, path: Path, trust: bool = False) -> ArtifactFacts:
        """What a file of a format this backend reads contains (inputs, stored precision, quantized ops);
        `trust` is --trust-checkpoint, for formats whose loading could run code."""
        raise UnsupportedError(f"{path}: {cls.name} does not read {path.suffix} files")

    @classmethod
    def precisions_here(cls) -> dict[str, str | None]:
        """Compute precisions this backend can run on this host: None when it can, else why not."""
        return {"fp32": None}

    @classmethod
    def applies(cls, fmt: str, device, asked: bool) -> bool:
        """Would this backend run an artifact of `fmt` for this device? (`asked`: the user named it.)
        Pure: never imports the runtime, so an unavailable backend can still be listed as skipped."""
        return fmt in cls.formats

    @classmethod
    def run_modes(cls, fmt: str, fixed: dict[str, Any]) -> list[dict[str, Any]]:
        """The runtime options to time an artifact of `fmt` with, one entry per way of running it here;
        `fixed` are the options the artifact was made for. Called only when the backend is available."""
        return [dict(fixed)]

    def fix_shapes(self, feeds_list: list[dict]) -> None:
        """Prepare to run exactly these input shapes, as a deployment with a fixed batch would (timing calls this
        before its warmup). A no-op unless the runtime compiles faster code for static shapes (OpenVINO)."""

    @classmethod
    def precision_label(cls, stored: str, described: dict[str, Any]) -> str:
        """The precision a measurement ran at, from what the session reported (describe())."""
        return stored

    @abc.abstractmethod
    def load(self) -> None: ...

    @abc.abstractmethod
    def infer(self, feeds: dict[str, np.ndarray]) -> np.ndarray: ...

    def close(self) -> None:
        pass

    def describe(self) -> dict[str, Any]:
        """What actually executed (backend, threads, precision that ran, providers): goes into measured_on."""
        return {"backend": self.name, "threads": self.threads}

    def __enter__(self) -> "Session":
        self.load()
        return self

    def __exit__(self, *exc) -> None:
        self.close()
