"""Device profiles (devices/NAME.yaml): what a target can run, its budgets, and how to bench it."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from toolkit.core import bounds
from toolkit.core.yaml_io import load_yaml_mapping, pydantic_message
from toolkit.core.errors import ConfigError

from toolkit.core.paths import DEVICES_DIR

# A backend name from the registry (toolkit.backends); checked against it when the profile loads.
Backend = str
Precision = Literal["fp32", "fp16", "bf16", "int8"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Accelerator(_Strict):
    name: str
    kind: Literal["cpu", "gpu", "npu", "dla"]
    # Public specs: dense peak throughput (TOPS for int8, TFLOPS for fp16/fp32), bandwidth, memory.
    peak_int8_tops: float | None = Field(default=None, gt=0)
    peak_fp16_tflops: float | None = Field(default=None, gt=0)
    peak_fp32_tflops: float | None = Field(default=None, gt=0)
    memory_bandwidth_gbs: float | None = Field(default=None, gt=0)
    memory_gb: float | None = Field(default=None, gt=0)
    source: str = Field(description="where the specs come from (URL or document)")


class Budgets(_Strict):
    latency_p95_ms: float | None = Field(default=None, gt=0)
    size_mb: float | None = Field(default=None, gt=0)
    peak_memory_mb: float | None = Field(default=None, gt=0)
    max_macro_f1_drop: float = Field(default=0.01, ge=0, le=1)
    max_ece: float | None = Field(default=None, ge=0, le=1)


class Gates(_Strict):
    """Calibration and robustness gates (evaluated on every candidate, failures shown with reasons)."""

    max_ece_recalibrated: float | None = Field(default=None, ge=0, le=1)
    max_calibration_drift: float | None = Field(default=None, ge=0, le=1)  # |ECE_recal - ECE_recal(fp32)|
    max_worst_slice_drop: float | None = Field(default=None, ge=0, le=1)   # macro-F1, worst slice vs fp32
    require_ci_support: bool = True  # the F1-drop budget must hold at the bootstrap CI's lower end


class Bench(_Strict):
    # Bounds and why: toolkit/bounds.py. strict: `threads: true` or `iterations: 2.5` is a typo, not 1 or 2.
    threads: int = Field(default=2, ge=1, le=bounds.THREADS_MAX, strict=True)
    batch_sizes: list[Annotated[int, Field(ge=1, le=bounds.BATCH_MAX, strict=True)]] = Field(
        default_factory=lambda: [1, 8], min_length=1, max_length=bounds.BATCH_SIZES_MAX)
    warmup: int = Field(default=20, ge=0, le=bounds.WARMUP_MAX, strict=True)
    iterations: int = Field(default=200, ge=1, le=bounds.ITERATIONS_MAX, strict=True)


class StandIn(_Strict):
    backend: Backend
    note: str


class Selection(_Strict):
    # Latencies within this fraction of the fastest count as a tie, broken by size:
    # sub-millisecond host timings move by tens of percent between runs.
    latency_tie_fraction: float = Field(default=0.15, ge=0, le=1)


class DeviceProfile(_Strict):
    name: str
    aliases: list[str] = Field(default_factory=list)
    description: str
    arch: Literal["x86_64", "aarch64"]
    accelerators: list[Accelerator]
    backends: list[Backend] = Field(min_length=1, description="in preference order")
    precisions: list[Precision] = Field(min_length=1)
    budgets: Budgets = Budgets()
    gates: Gates = Gates()
    bench: Bench = Bench()
    stand_in: StandIn
    default_recipe: str = "default"
    selection: Selection = Selection()
    # Substrings of the CPU model name for which this host *is* the device class (e.g. "EPYC").
    # Elsewhere every host measurement is a stand-in's, and selection ranks by the target estimate.
    host_cpu_matches: list[str] = Field(default_factory=list)

    def host_is_device(self) -> bool:
        import platform

        from toolkit.core.host import cpu_model

        return platform.machine() == self.arch and any(m.lower() in cpu_model().lower() for m in self.host_cpu_matches)

    @property
    def target_only_backends(self) -> list[str]:
        """Backends the target uses that a host stand-in cannot execute (built on the device)."""
        return [b for b in self.backends if b == "tensorrt"]


def device_names() -> list[str]:
    return sorted(p.stem for p in DEVICES_DIR.glob("*.yaml"))


def _resolve(name: str) -> Path:
    path = Path(name)
    if path.suffix in (".yaml", ".yml") and path.exists():
        return path
    direct = DEVICES_DIR / f"{name}.yaml"
    if direct.exists():
        return direct
    for candidate in DEVICES_DIR.glob("*.yaml"):
        data = load_yaml_mapping(candidate, "device profile")
        if name in (data.get("aliases") or []):
            return candidate
    raise ConfigError(f"unknown device '{name}'; choose one of: {', '.join(device_names())} (optkit devices list)")


def load_device(name: str) -> DeviceProfile:
    """Load and validate a profile by name, alias, or path to a YAML file."""
    path = _resolve(name)
    data = load_yaml_mapping(path, "device profile")
    try:
        prof = DeviceProfile.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(pydantic_message(path, exc)) from exc
    from toolkit.backends import names

    unknown = [b for b in [*prof.backends, prof.stand_in.backend] if b not in names()]
    if unknown:
        raise ConfigError(f"{path}: unknown backend(s) {', '.join(unknown)}; known backends: {', '.join(names())}")
    return prof
