"""Facts about the machine and the libraries, for every 'measured on' label."""
from __future__ import annotations

import functools
import os
import platform
from importlib import metadata

LIBRARIES = ["optkit", "torch", "torchao", "onnx", "onnxruntime", "openvino", "nncf", "neural-compressor", "numpy",
             "scikit-learn", "tensorrt"]


@functools.cache
def cpu_model() -> str:
    """The CPU's name: x86's "model name"; on aarch64 kernels without one, "Hardware"/"Model" or the CPU part
    number (two different Arm boards must not share a label or a history series), else the architecture."""
    found: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                key, value = key.strip().lower(), value.strip()
                if value and key not in found:
                    found[key] = value
    except OSError:
        pass
    for key in ("model name", "hardware", "model", "cpu model"):
        if key in found and not found[key].isdigit():  # x86's numeric "model" line is not a name
            return found[key]
    if "cpu part" in found:
        return f"{found.get('cpu implementer', '?')}:{found['cpu part']}"
    return platform.processor() or platform.machine() or "unknown"


@functools.cache
def cpu_flags() -> frozenset[str]:
    """ISA features of this CPU as the kernel reports them: `flags` on x86 (avx2, avx512_vnni, amx_int8...),
    `Features` on ARM (asimd = NEON, asimddp = dot product...). Empty when /proc/cpuinfo is unreadable."""
    try:
        for line in open("/proc/cpuinfo", encoding="utf-8"):
            key, _, value = line.partition(":")
            if key.strip() in ("flags", "Features"):
                return frozenset(value.split())
    except OSError:
        pass
    return frozenset()


@functools.cache
def host() -> dict:
    return {"cpu": cpu_model(), "arch": platform.machine(), "cores": os.cpu_count(), "os": platform.platform(terse=True),
            "python": platform.python_version()}


def usable_cores() -> int:
    """Cores this process may run on (affinity/cgroup aware where the OS says), not the machine's total."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def effective_threads(requested: int | None, device_threads: int | None = None) -> int:
    """The one thread policy: what was asked (else the device profile's bench threads, else all usable
    cores), capped at the cores this process may run on (CPU affinity), at least 1.

    A stand-in cannot use cores it does not have, and threads beyond the affinity mask only
    time-slice against each other, which reads as latency the model does not have.
    """
    cores = usable_cores()
    want = requested if requested is not None else (device_threads if device_threads is not None else cores)
    return max(1, min(int(want), cores))


# ISA features that change which kernels a runtime picks (int8 dot products, bf16, wide vectors).
ISA_FEATURES = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_tile", "amx_int8",
                "amx_bf16", "neon", "asimd", "asimddp", "dotprod", "i8mm", "sve", "bf16", "fphp", "asimdhp")


def isa_features() -> list[str]:
    """The performance-relevant subset of cpu_flags() (what a latency label must name), in a fixed order."""
    flags = cpu_flags()
    return [f for f in ISA_FEATURES if f in flags]


def load_average() -> float | None:
    """The 1-minute load average (runnable + waiting threads), None where the OS has none."""
    try:
        return float(os.getloadavg()[0])
    except (AttributeError, OSError):
        return None


def cpu_times() -> tuple[int, int] | None:
    """(steal jiffies, total jiffies) from /proc/stat's aggregate cpu line; None off Linux.

    Steal is time a hypervisor gave this VM's vCPUs to someone else: wall-clock latency grows
    while the process did nothing differently.
    """
    try:
        with open("/proc/stat", encoding="utf-8") as fh:
            fields = fh.readline().split()
    except OSError:
        return None
    if not fields or fields[0] != "cpu" or len(fields) < 9:
        return None
    values = [int(v) for v in fields[1:]]
    return values[7], sum(values[:8])  # user nice system idle iowait irq softirq steal (guest is inside user)


def rss_mb() -> float:
    """Resident memory of this process, MB (10^6 bytes)."""
    import psutil

    return psutil.Process().memory_info().rss / 1e6


def host_label() -> str:
    h = host()
    return f"{h['cpu']} ({h['arch']}, {h['cores']} cores)"


# Some runtimes ship under more than one distribution name (GPU/EP builds).
DIST_ALIASES = {
    "onnxruntime": ("onnxruntime", "onnxruntime-gpu", "onnxruntime-openvino", "onnxruntime-directml"),
    "tensorrt": ("tensorrt", "tensorrt-cu12", "tensorrt-cu13"),
}


@functools.cache
def library_versions() -> dict[str, str | None]:
    """Installed versions, read from package metadata (dist-info files only: never imports the runtimes, so it is
    cheap and safe where a runtime is installed but cannot load), under any of a runtime's distribution names."""
    out: dict[str, str | None] = {}
    for name in LIBRARIES:
        out[name] = None
        for dist in DIST_ALIASES.get(name, (name,)):
            try:
                out[name] = metadata.version(dist)
                break
            except metadata.PackageNotFoundError:
                continue
    return out
