"""The one shape policy for dynamic dimensions other than the batch (a sequence length, an image side).

Whoever times, estimates or builds for a model with a dynamic non-batch dim (bench's synthesized
inputs, the roofline estimate, the TensorRT optimization profile) asks this module which value
to use, and writes the policy's `describe()` into what it reports.

* With data: the padded width of the data's arrays is the value that runs (the data's token
  arrays are padded to it, so evaluate times exactly that). For text, the real lengths are the
  attention_mask row sums; their p50 and p95 are kept so a TensorRT profile can be tuned for the
  typical request (opt = p50) while still accepting the widest one (max = padded width).
* Without data (a bare artifact given to bench): FALLBACK_DIM, 128, for every dynamic non-batch
  dim. 128 tokens is the default maximum length of common BERT-family tokenizer pipelines for
  classification and fits BERT's 512 position embeddings; every report that used it says so.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Mapping

import numpy as np

FALLBACK_DIM = 128
SEQUENCE = "sequence"
MASK_NAMES = ("attention_mask", "mask")


@dataclasses.dataclass(frozen=True)
class DimPolicy:
    """Values for one dynamic dim: `value` is what runs (timing, estimates); p50/p95 of real lengths when known."""

    value: int
    p50: int | None = None
    p95: int | None = None
    source: str = f"fallback {FALLBACK_DIM} (no data)"

    def profile(self) -> tuple[int, int, int]:
        """(min, opt, max) for an optimization profile: any length up to the widest seen, tuned for the typical."""
        if self.p50 is None:
            return self.value, self.value, self.value  # nothing known: one static length, said in `source`
        return 1, min(max(1, self.p50), self.value), self.value


@dataclasses.dataclass(frozen=True)
class ShapePolicy:
    dims: dict[str, DimPolicy]
    from_data: bool

    def value(self, dim: str | None = None) -> int:
        """The value to run a dynamic dim at (by name; an unnamed or unknown dim gets the sequence's value)."""
        found = self.dims.get(dim or SEQUENCE) or self.dims.get(SEQUENCE)
        return found.value if found else FALLBACK_DIM

    def get(self, dim: str | None = None) -> DimPolicy:
        return self.dims.get(dim or SEQUENCE) or self.dims.get(SEQUENCE) or DimPolicy(FALLBACK_DIM)

    def values(self) -> dict[str, int]:
        return {k: d.value for k, d in self.dims.items()}

    def describe(self) -> str:
        if not self.dims:
            return "no dynamic dims besides the batch"
        return "; ".join(f"{k} {d.value} ({d.source})" for k, d in self.dims.items())

    def to_dict(self) -> dict:
        return {k: {"value": d.value, "p50": d.p50, "p95": d.p95, "source": d.source} for k, d in self.dims.items()}


def fallback() -> ShapePolicy:
    """No data: every dynamic non-batch dim runs at FALLBACK_DIM (module docstring says why 128)."""
    return ShapePolicy({SEQUENCE: DimPolicy(FALLBACK_DIM)}, from_data=False)


def _percentile(lengths: np.ndarray, q: float) -> int:
    return int(math.ceil(float(np.percentile(lengths, q))))


def from_arrays(inputs: Mapping[str, np.ndarray]) -> ShapePolicy:
    """The policy read from a split's named inputs: sequence = padded width of the integer 2-D (token)
    arrays (core/modelio marks exactly those dynamic), p50/p95 from the attention mask's row sums when there
    is one. No token arrays: no dynamic dim besides the batch."""
    tokens = {k: v for k, v in inputs.items() if v.ndim == 2 and v.dtype.kind in "iub"}
    if not tokens:
        return ShapePolicy({}, from_data=True)  # e.g. images: every dim but the batch is fixed by the data
    width = max(int(v.shape[1]) for v in tokens.values())
    mask = next((tokens[n] for n in MASK_NAMES if n in tokens), None)
    if mask is None or mask.shape[0] == 0:
        return ShapePolicy({SEQUENCE: DimPolicy(width, source=f"padded width of the data's token arrays "
                                                             f"({', '.join(tokens)})")}, from_data=True)
    lengths = np.asarray(mask, dtype=np.int64).sum(axis=1)
    p50, p95 = _percentile(lengths, 50), _percentile(lengths, 95)
    src = (f"padded width of the data's token arrays; real lengths from attention_mask: p50 {p50}, p95 {p95}, "
           f"max {int(lengths.max())} over {lengths.size} rows")
    return ShapePolicy({SEQUENCE: DimPolicy(width, p50, p95, src)}, from_data=True)


def concrete(shape, batch: int, policy: ShapePolicy) -> tuple[int, ...]:
    """A shape with the batch (dim 0, or a dim named 'batch') set to `batch` and every other dynamic dim
    (None, a negative int or a name) set to the policy's value for it."""
    out = []
    for i, d in enumerate(shape):
        if d == "batch" or (i == 0 and (d is None or (isinstance(d, int) and d < 0))):
            out.append(int(batch))
        elif isinstance(d, str):
            out.append(policy.value(d))
        elif d is None or d < 0:
            out.append(policy.value(None))
        else:
            out.append(int(d))
    return tuple(out)


__all__ = ["FALLBACK_DIM", "DimPolicy", "ShapePolicy", "fallback", "from_arrays", "concrete"]
