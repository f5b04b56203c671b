"""Pass registry and the context every pass receives."""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Callable

from pydantic import BaseModel, ConfigDict

PASSES: dict[str, "PassSpec"] = {}


@dataclasses.dataclass(frozen=True)
class PassReads:
    """What a pass reads beyond its input artifact, options, data and seed: all of it goes into its cache key."""
    device: tuple[str, ...] = ()                                    # dotted DeviceProfile fields, e.g. "arch"
    candidates: Callable[[Any], list[str]] | None = None            # fn(options) -> step ids of other candidates


READS: dict[str, PassReads] = {}


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

    def makes_int8(self, opts) -> bool:
        """Does this step promise int8 (int8, mixed-int8, int8-dynamic)? Options may be None in direct calls."""
        if callable(self.precision) and opts is None:
            return False
        return "int8" in str(self.output_precision(opts) or "")


def register_pass(name: str, *, accepts: tuple[str, ...], backend: str, precision: Any,
                  options: type[BaseModel] = NoOptions, needs_training_data: bool = False,
                  precheck: Callable[[Any], str | None] | None = None, reads_device: tuple[str, ...] = (),
                  reads_candidates: Callable[[Any], list[str]] | None = None):
    """Register `fn(ctx, parent, opts, cid) -> Candidate` under the YAML name `name`.

    reads_device / reads_candidates declare what else the pass reads (pipeline/run.py puts them in its cache key).
    """
    READS[name] = PassReads(tuple(reads_device), reads_candidates)

    def deco(fn):
        import functools

        spec = PassSpec(name, fn, options, accepts, backend, precision, needs_training_data,
                        (fn.__doc__ or "").strip().splitlines()[0] if fn.__doc__ else "", precheck)

        @functools.wraps(fn)
        def checked(ctx, parent, opts, cid):
            made = fn(ctx, parent, opts, cid)
            return check_contents(spec, opts, made) if spec.makes_int8(opts) else made

        spec = dataclasses.replace(spec, fn=checked)
        PASSES[name] = spec
        return checked

    return deco


def check_contents(spec: PassSpec, opts, made):
    """An int8 pass's artifact, read back from the file: quantized ops and int8 weights must be there.

    Honesty rule: the candidate is described by what it contains. A quantizer that matched no pattern
    (PT2E on an unlifted program, a graph the exporter folded) returns an fp32 file; it fails here,
    whichever pass made it, instead of being benchmarked as int8.
    """
    from toolkit.backends import inspect
    from toolkit.core.errors import UnsupportedError

    facts = inspect(made.path, trust=made.trust_checkpoint)
    if facts.quantized_ops == 0 or facts.int8_weight_fraction == 0.0:
        raise UnsupportedError(
            f"{made.path}: {spec.name} made no int8 model ({facts.quantized_ops} quantized ops, "
            f"{facts.int8_weight_fraction:.0%} int8 weights, stored precision {facts.precision}); the quantizer matched "
            "no layer of this architecture: use another engine of the recipe (ort_static_int8, nncf_ptq) for it")
    contents = {"quantized_ops": facts.quantized_ops, "int8_weight_fraction": round(facts.int8_weight_fraction, 4),
                "stored_precision": facts.precision}
    return made.derive(info={**made.info, "contents": contents})


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
    source: str = ""                 # the checkpoint the user gave (named in export errors)
    deadline: float | None = None    # time.time() by which the recipe's search.max_minutes runs out (searches stop early)

    def time_left_s(self) -> float | None:
        import time

        return None if self.deadline is None else self.deadline - time.time()

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
