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
