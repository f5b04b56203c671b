"""The Session lifecycle every runtime implements (after Polygraphy's BaseRunner).

    with open_session(candidate, threads=2) as s:
        logits = s.infer({"x": batch})

`infer` takes a dict of named numpy inputs and returns the logits as float32 numpy.
"""
from __future__ import annotations

import abc
from typing import Any, Callable

import numpy as np

BACKENDS: dict[str, type["Session"]] = {}


def register_backend(name: str) -> Callable[[type["Session"]], type["Session"]]:
    def deco(cls: type["Session"]) -> type["Session"]:
        cls.name = name
        BACKENDS[name] = cls
        return cls

    return deco


class Session(abc.ABC):
    name: str = "?"

    def __init__(self, candidate, threads: int):
        self.candidate = candidate
        self.threads = int(threads)

    @classmethod
    def check_available(cls) -> str:
        """Raise BackendUnavailable naming what is missing; return a short description otherwise."""
        return cls.name

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
