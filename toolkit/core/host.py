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
    try:
        for line in open("/proc/cpuinfo", encoding="utf-8"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


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


@functools.cache
def library_versions() -> dict[str, str | None]:
    """Installed versions, read from package metadata (never imports the runtimes)."""
    out: dict[str, str | None] = {}
    for name in LIBRARIES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out
