"""Bounds on every numeric setting, in one place, with the reason for each.

Config files are bounded by pydantic Fields (devices.py, recipes.py) that use these constants; options
that arrive from the CLI or the Python API are checked here, so both give the same one-line ConfigError
before any compute (never a numpy/torch traceback halfway through a run).
"""
from __future__ import annotations

import math

from toolkit.core.errors import ConfigError

# numpy's legacy seeding (RandomState, np.random.seed) and many C libraries take an unsigned 32-bit seed.
SEED_MAX = 2**32 - 1
# The largest CPUs today expose a few hundred hardware threads (2-socket, SMT); 1024 leaves headroom, and
# anything above is a typo. Threads are capped at the host's usable cores anyway.
THREADS_MAX = 1024
# A batch of 4096 is already beyond what an edge device (or a TensorRT profile for one) serves.
BATCH_MAX = 4096
# Batch sizes per profile: each one is a full timing loop per backend x precision.
BATCH_SIZES_MAX = 16
# 100 000 calls at 1 ms is ~2 minutes per pair: enough for stable p99; more is a typo (and hours of bench).
ITERATIONS_MAX = 100_000
WARMUP_MAX = 10_000
# Calibration / validation rows: above this the PTQ calibrators hold GBs of histograms (STACK-NOTES).
CALIBRATION_MAX = 100_000
# Training epochs (distill, QAT): matches the pass option bounds.
EPOCHS_MAX = 1000
# One dimension of a TensorRT optimization-profile shape (a sequence of 1M tokens is no edge model).
SHAPE_DIM_MAX = 1 << 20


def check_int(name: str, value, lo: int, hi: int, fix: str = "") -> int:
    """`value` as an int in [lo, hi], or a one-line ConfigError naming the setting."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{name}={value!r}: must be a whole number between {lo} and {hi}{fix}")
    if not lo <= value <= hi:
        raise ConfigError(f"{name}={value}: must be between {lo} and {hi}{fix}")
    return value


def check_float(name: str, value, lo: float, hi: float, *, lo_open: bool = False) -> float:
    """`value` as a finite float in [lo, hi] (or (lo, hi] with lo_open); NaN and inf are refused."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name}={value!r}: must be a number") from None
    if not math.isfinite(v) or v > hi or v < lo or (lo_open and v == lo):
        low = f"> {lo:g}" if lo_open else f">= {lo:g}"
        raise ConfigError(f"{name}={value}: must be a finite number {low} and <= {hi:g}")
    return v


def check_seed(value, name: str = "seed") -> int:
    return check_int(name, value, 0, SEED_MAX, " (numpy seeds are unsigned 32-bit)")


def check_threads(value, name: str = "--threads") -> int:
    return check_int(name, value, 1, THREADS_MAX)
