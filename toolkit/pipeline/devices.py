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
    # On a stand-in host, judge the latency budget on the target's roofline estimate instead of leaving it
    # "not checked here". The estimate is a lower bound: over budget it is a certain failure, under it a hope.
    budgets_on_estimate: bool = False


class HostMatch(_Strict):
    """What makes a host *be* this device: capabilities read from /proc/cpuinfo, never the CPU's brand."""

    isa: list[str] = Field(min_length=1, description="CPU flags the host must have (x86 `flags`, ARM `Features`)")
    without: list[str] = Field(default_factory=list, description="flags the host must not have (faster kernels than the device's)")
    min_cores: int = Field(ge=1, le=bounds.THREADS_MAX, strict=True, description="usable cores the host must have")


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
    # When this host *is* the device (its numbers are of kind "target"); None: no host is (GPU/NPU targets).
    # Elsewhere every host measurement is a stand-in's, and selection ranks by the target estimate.
    host_match: HostMatch | None = None

    def host_mismatch(self) -> str | None:
        """Why this host is not the device (None when it is): arch, ISA features, cores."""
        import platform

        from toolkit.core.host import cpu_flags, usable_cores

        if self.host_match is None:
            return f"no host stands for {self.name} by CPU features alone (its accelerator runs the model)"
        if platform.machine() != self.arch:
            return f"this host is {platform.machine()}, {self.name} is {self.arch}"
        flags = cpu_flags()
        missing = [f for f in self.host_match.isa if f not in flags]
        if missing:
            return f"this CPU lacks {', '.join(missing)}"
        extra = [f for f in self.host_match.without if f in flags]
        if extra:
            return f"this CPU has {', '.join(extra)}, which {self.name} does not (its kernels would be faster here)"
        cores = usable_cores()
        if cores < self.host_match.min_cores:
            return f"this host has {cores} usable cores, {self.name} needs {self.host_match.min_cores}"
        return None

    def host_is_device(self) -> bool:
        return self.host_mismatch() is None

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
