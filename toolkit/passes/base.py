"""Pass registry and the context every pass receives."""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Callable

from pydantic import BaseModel, ConfigDict

PASSES: dict[str, "PassSpec"] = {}


class NoOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")


@dataclasses.dataclass(frozen=True)
class PassSpec:
    name: str
    fn: Callable[..., Any]
    options: type[BaseModel]
    accepts: tuple[str, ...]        # candidate formats it takes as input: "torch", "onnx", "openvino"
    backend: str                    # backend that runs its output (for planning against a device)
    precision: Any                  # output precision family ("int8", "fp16"...), None = same as input, or fn(options)
    needs_training_data: bool = False
    description: str = ""
    precheck: Callable[[Any], str | None] | None = None  # fn(options) -> why it cannot run on this host, or None

    def output_precision(self, opts) -> str | None:
        return self.precision(opts) if callable(self.precision) else self.precision


def register_pass(name: str, *, accepts: tuple[str, ...], backend: str, precision: Any,
                  options: type[BaseModel] = NoOptions, needs_training_data: bool = False,
                  precheck: Callable[[Any], str | None] | None = None):
    """Register `fn(ctx, parent, opts, cid) -> Candidate` under the YAML name `name`."""

    def deco(fn):
        PASSES[name] = PassSpec(name, fn, options, accepts, backend, precision, needs_training_data,
                                (fn.__doc__ or "").strip().splitlines()[0] if fn.__doc__ else "", precheck)
        return fn

    return deco


@dataclasses.dataclass
class PassContext:
    workdir: Path                    # run's candidates/ folder (inside the staging folder)
    data: Any                        # toolkit.intake.data.Dataset
    io: Any                          # toolkit.pipeline.compress.ModelIO
    device: Any                      # toolkit.pipeline.devices.DeviceProfile
    seed: int
    calibration_size: int
    torch_module: Any = None         # the fp32 torch model, when the input was torch
    threads: int = 1
    log: Callable[[str], None] = print
    candidates: dict[str, Any] = dataclasses.field(default_factory=dict)  # finished candidates by id
    tolerance: float = 0.01          # the recipe's search.tolerance: absolute validation macro-F1 drop accepted

    def tolerance_for(self, opts) -> float:
        """A pass's own `tolerance` option when set, else the recipe's search.tolerance (one number, one place)."""
        own = getattr(opts, "tolerance", None)
        return float(own) if own is not None else float(self.tolerance)

    def folder(self, cid: str) -> Path:
        path = self.workdir / cid
        path.mkdir(parents=True, exist_ok=True)
        return path

    def val_macro_f1(self, cand) -> float:
        """Validation macro-F1 of a finished candidate, run through its own backend (for gates and searches)."""
        from toolkit.backends import open_session, run_split
        from toolkit.metrics.classification import classification_metrics

        with open_session(cand, threads=self.threads) as session:
            logits = run_split(session, self.data.val)
        return float(classification_metrics(self.data.val.y, logits.argmax(1), self.data.n_classes)["macro_f1"])

    def calibration_batches(self, batch_size: int = 1) -> list[dict]:
        split = self.data.calibration(self.calibration_size, self.seed)
        return list(split.batches(batch_size))
