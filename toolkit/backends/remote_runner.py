"""optkit's on-device runner: copied to a device over SSH and run there with the device's own Python.

Self-contained on purpose: it imports nothing from toolkit (the device has no optkit), only the
standard library, numpy and the runtime that executes the artifact. Two commands:

    python remote_runner.py probe [BACKEND,...] -> {"fingerprint": ..., "runtimes": ...}
    python remote_runner.py run JOB.json   -> {"fingerprint": ..., "results": [...]}

Both write exactly one JSON document to stdout; everything the runtimes print goes to stderr.
A task the runtime rejects comes back with an "error"; a missing numpy is {"fatal": ...} and exit 3.

Timing protocol (the same shape as the host's): per artifact, warmup per batch size, then
`rounds` rounds that each run every batch size's calls in turn, so a burst of load on the device
lands in one round of every batch size; p50/p95/p99 over all calls plus each round's median.
Memory: resident-set growth of this process while loading the artifact and running it
(/proc/self/statm), artifacts loaded one at a time and closed before the next.
"""
from __future__ import annotations

import gc
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from importlib import metadata

RUNNER_VERSION = 1
RUNTIME_PACKAGES = ("numpy", "onnxruntime", "onnxruntime-gpu", "openvino", "tensorrt", "executorch", "torch")
# The ISA features that decide which kernels run (read from the flags, never the CPU brand).
ISA_FLAGS = ("sse4_2", "avx", "avx2", "fma", "f16c", "avx_vnni", "avx512f", "avx512bw", "avx512vl", "avx512_vnni",
             "avx512_bf16", "avx512_fp16", "amx_tile", "amx_int8", "amx_bf16", "neon", "asimd", "asimdhp", "asimddp",
             "fphp", "i8mm", "bf16", "sve", "sve2")


# --------------------------------------------------------------------------- fingerprint
def _read(path: str) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()
    except OSError:
        return ""


def _cpuinfo() -> dict:
    model, flags = "", set()
    for line in _read("/proc/cpuinfo").splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key in ("model name", "hardware", "cpu model") and not model:
            model = value.strip()
        elif key in ("flags", "features"):
            flags.update(value.split())
    return {"cpu": model or platform.processor() or platform.machine(),
            "isa": [f for f in ISA_FLAGS if f in flags]}


def _accelerators() -> list[dict]:
    found = []
    smi = shutil.which("nvidia-smi")
    if smi:
        try:
            out = subprocess.run([smi, "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
                                 capture_output=True, text=True, timeout=10).stdout
            for line in out.strip().splitlines():
                name, driver, mem = (p.strip() for p in (line.split(",") + ["", ""])[:3])
                found.append({"kind": "gpu", "name": name, "driver": driver, "memory": mem, "source": "nvidia-smi"})
        except (OSError, subprocess.SubprocessError):
            pass
    tegra = _read("/etc/nv_tegra_release").strip().splitlines()
    if tegra:  # Jetson: the GPU is integrated and nvidia-smi may say little
        found.append({"kind": "gpu", "name": "NVIDIA Tegra", "release": tegra[0][:120], "source": "/etc/nv_tegra_release"})
    return found


def _versions() -> dict:
    out = {}
    for name in RUNTIME_PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out


def fingerprint() -> dict:
    """What this device is: CPU model and ISA flags, cores, memory, board, accelerators, runtime versions."""
    cpu = _cpuinfo()
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = os.cpu_count() or 1
    mem_kb = next((int(line.split()[1]) for line in _read("/proc/meminfo").splitlines()
                   if line.startswith("MemTotal:")), 0)
    fp = {"hostname": platform.node(), "cpu": cpu["cpu"], "arch": platform.machine(), "isa": cpu["isa"],
          "cores": os.cpu_count() or 1, "usable_cores": usable, "memory_mb": round(mem_kb / 1e3),
          "board": _read("/proc/device-tree/model").strip("\x00\n ") or None, "accelerators": _accelerators(),
          "os": platform.platform(terse=True), "python": platform.python_version(), "runtimes": _versions()}
    stable = {k: fp[k] for k in ("cpu", "arch", "isa", "cores", "board", "accelerators", "runtimes")}
    fp["id"] = hashlib.sha256(json.dumps(stable, sort_keys=True).encode()).hexdigest()[:12]
    return fp


# --------------------------------------------------------------------------- runtimes
def _try(fn):
    try:
        return True, fn()
    except Exception as exc:  # noqa: BLE001 - any import failure means "not usable here", said as such
        return False, f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]}"


def _ort_providers():
    import onnxruntime as ort

    return ort.get_available_providers()


def _openvino_version():
    import openvino as ov

    return ov.get_version().split("-")[0]


def _executorch_version():
    from executorch.runtime import Runtime  # noqa: F401

    return metadata.version("executorch")


def _installed(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


CHECKS = {"onnxruntime": _ort_providers, "openvino": _openvino_version, "executorch": _executorch_version}


def runtimes(wanted: list[str]) -> dict:
    """backend name -> {"ok", "detail"}: what can run on this device. The backends a job needs are imported
    (installed is not importable); the others are only looked up, so a probe does not import torch for nothing."""
    out = {}
    for name in ("onnxruntime", "tensorrt", "openvino", "executorch"):
        check = "onnxruntime" if name == "tensorrt" else name
        if name not in wanted:
            version = _installed(check)
            out[name] = {"ok": None, "detail": f"{check} {version} installed (not imported)" if version
                         else f"{check} is not installed"}
            continue
        ok, detail = _try(CHECKS[check])
        if name == "tensorrt":
            ok = ok and "TensorrtExecutionProvider" in detail
            detail = ("onnxruntime's TensorrtExecutionProvider" if ok else
                      "no onnxruntime with TensorrtExecutionProvider (onnxruntime-gpu + TensorRT, e.g. JetPack's)")
        elif ok:
            detail = f"providers {', '.join(detail)}" if name == "onnxruntime" else f"{name} {detail}"
        out[name] = {"ok": ok, "detail": detail}
    return out


class _Ort:
    def __init__(self, path, threads, options, np, precision):
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
        opts.log_severity_level = 3
        providers = options.get("providers") or ["CPUExecutionProvider"]
        if options.get("tensorrt"):  # TensorRT through ORT's execution provider: it builds and caches the engine here
            cache = os.path.join(os.path.dirname(path), "trt-cache")
            providers = [("TensorrtExecutionProvider", {
                "trt_fp16_enable": precision in ("fp16", "int8"), "trt_int8_enable": precision == "int8",
                "trt_engine_cache_enable": True, "trt_engine_cache_path": cache}), "CUDAExecutionProvider"]
        self.sess = ort.InferenceSession(path, opts, providers=providers)
        used = self.sess.get_providers()
        if options.get("tensorrt") and "TensorrtExecutionProvider" not in used:  # listed is not loadable
            raise RuntimeError(f"TensorrtExecutionProvider did not load (session runs on {', '.join(used)})")
        self.names = [i.name for i in self.sess.get_inputs()]
        self.outputs = [options["output"]] if options.get("output") else None
        self.described = {"runtime": f"onnxruntime {ort.__version__}", "providers": used}
        if options.get("tensorrt"):
            self.described.update(runtime=f"tensorrt (onnxruntime {ort.__version__} TensorRT EP)", precision=precision)
        self.np = np

    def infer(self, feeds):
        return self.np.asarray(self.sess.run(self.outputs, {k: feeds[k] for k in self.names})[0], dtype=self.np.float32)


class _OpenVino:
    """As toolkit.backends.openvino's Session: ONNX converted (not read), a static copy per timed shape."""

    def __init__(self, path, threads, options, np, precision):
        import openvino as ov

        hint = options.get("inference_precision", "f32")  # the CPU default is not fp32: always set, read back
        self.core, self.static, self.np = ov.Core(), {}, np
        self.config = {"INFERENCE_PRECISION_HINT": hint, "INFERENCE_NUM_THREADS": threads,
                       "PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": 1}
        self.model = ov.convert_model(path) if path.endswith(".onnx") else self.core.read_model(path)
        self.names = [set(p.get_names()) for p in self.model.inputs]
        self.compiled = self.core.compile_model(self.model, "CPU", self.config)
        self.request = self.compiled.create_infer_request()
        ran = self.compiled.get_property("INFERENCE_PRECISION_HINT")
        self.described = {"runtime": f"openvino {ov.get_version().split('-')[0]} CPU",
                          "inference_precision": ran.to_string() if hasattr(ran, "to_string") else str(ran)}

    def _arrays(self, feeds):
        return [feeds[next(n for n in feeds if n in names)] for names in self.names]

    def fix_shapes(self, feeds_list):
        if not any(p.get_partial_shape().is_dynamic for p in self.model.inputs):
            return
        for feeds in feeds_list:
            key = tuple(a.shape for a in self._arrays(feeds))
            if key not in self.static:
                model = self.model.clone()
                model.reshape({p.get_any_name(): list(shape) for p, shape in zip(model.inputs, key)})
                compiled = self.core.compile_model(model, "CPU", self.config)
                self.static[key] = (compiled, compiled.create_infer_request())
        self.described["runtime"] += ", compiled for each timed input shape (static)"

    def infer(self, feeds):
        arrays = self._arrays(feeds)
        compiled, request = self.static.get(tuple(a.shape for a in arrays)) or (self.compiled, self.request)
        return self.np.asarray(request.infer(dict(zip(compiled.inputs, arrays)))[compiled.outputs[0]],
                               dtype=self.np.float32)


class _ExecuTorch:
    def __init__(self, path, threads, options, np, precision):
        import torch
        from executorch.extension.pybindings.portable_lib import _unsafe_reset_threadpool
        from executorch.runtime import Runtime

        _unsafe_reset_threadpool(int(threads))
        self.method = Runtime.get().load_program(path).load_method("forward")
        self.names, self.torch, self.np = list(options.get("input_names") or []), torch, np
        self.max_batch = options.get("max_batch")
        self.described = {"runtime": f"executorch {metadata.version('executorch')} XNNPACK"}

    def infer(self, feeds):
        names = self.names or list(feeds)
        n = len(feeds[names[0]])
        if self.max_batch and n > self.max_batch:  # memory is planned up to the program's max batch: run in chunks
            step = int(self.max_batch)
            return self.np.concatenate([self.infer({k: v[i:i + step] for k, v in feeds.items()})
                                        for i in range(0, n, step)])
        out = self.method.execute([self.torch.from_numpy(self.np.ascontiguousarray(feeds[k])) for k in names])
        return self.np.asarray(out[0].numpy(), dtype=self.np.float32)


SESSIONS = {"onnxruntime": _Ort, "tensorrt": _Ort, "openvino": _OpenVino, "executorch": _ExecuTorch}


# --------------------------------------------------------------------------- timing
def _rss_mb() -> float:
    try:
        pages = int(_read("/proc/self/statm").split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 1e6
    except (IndexError, ValueError, OSError):
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3  # peak, KB on Linux


def loads() -> dict:
    """Load average and (steal, total) CPU jiffies now: the shape toolkit.pipeline.measure.contention reads."""
    try:
        load = float(_read("/proc/loadavg").split()[0])
    except (IndexError, ValueError):
        load = None
    try:
        values = [int(v) for v in _read("/proc/stat").splitlines()[0].split()[1:]]
        cpu_times = [values[7], sum(values[:8])]  # user nice system idle iowait irq softirq steal
    except (IndexError, ValueError):
        cpu_times = None
    return {"load": load, "cpu_times": cpu_times}


def _tile(np, feeds, batch):
    return {k: np.ascontiguousarray(np.concatenate([v] * -(-batch // len(v)))[:batch]) for k, v in feeds.items()}


def _outputs(np, session, fixture, step):
    n = len(next(iter(fixture.values())))
    chunks = []
    for i in range(0, n, step):
        part = {k: v[i:i + step] for k, v in fixture.items()}
        got = len(next(iter(part.values())))
        chunks.append(session.infer(_tile(np, part, step) if got < step else part)[:got])
    return np.concatenate(chunks)


def _time(np, session, feeds_by_batch, warmup, calls, rounds):
    if hasattr(session, "fix_shapes"):  # the timed shapes, compiled as a fixed-batch deployment would
        session.fix_shapes(list(feeds_by_batch.values()))
    for b, feeds in feeds_by_batch.items():
        for _ in range(warmup[b]):
            session.infer(feeds)
    times = {b: np.empty((rounds, calls[b])) for b in feeds_by_batch}
    gc.collect()  # as timeit: no collector pauses inside the timed loop
    gc.disable()
    try:
        for r in range(rounds):
            for b, feeds in feeds_by_batch.items():
                row = times[b][r]
                for i in range(calls[b]):
                    start = time.perf_counter()
                    session.infer(feeds)
                    row[i] = time.perf_counter() - start
    finally:
        gc.enable()
    out = []
    for b, t in times.items():
        ms = t * 1e3
        medians = [float(np.median(r)) for r in ms]
        mid = float(np.median(medians))
        out.append({"batch": b, "latency_p50_ms": round(float(np.percentile(ms, 50)), 4),
                    "latency_p95_ms": round(float(np.percentile(ms, 95)), 4),
                    "latency_p99_ms": round(float(np.percentile(ms, 99)), 4),
                    "latency_mean_ms": round(float(ms.mean()), 4), "runs": int(ms.size), "warmup": warmup[b],
                    "rounds": rounds, "round_p50_ms": [round(m, 4) for m in medians],
                    "round_spread": round((max(medians) - min(medians)) / mid, 4) if mid > 0 else 0.0})
    return out


def run_task(np, task: dict, job: dict, folder: str) -> dict:
    threads = max(1, min(int(job["threads"]), fingerprint_cores()))
    with np.load(os.path.join(folder, task["fixture"]), allow_pickle=False) as z:
        fixture = {k: np.ascontiguousarray(z[k]) for k in z.files}
    one = {k: v[:1] for k, v in fixture.items()}
    static = task.get("static_batch")
    batches = [int(static)] if static else sorted(set(int(b) for b in job["batch_sizes"]))
    warmup = {b: job["warmup"] if b == 1 else max(3, job["warmup"] // 4) for b in batches}
    per_batch = {b: job["iterations"] if b == 1 else max(20, job["iterations"] // 10) for b in batches}
    rounds = max(1, min(int(job["rounds"]), min(per_batch.values())))
    calls = {b: max(1, -(-n // rounds)) for b, n in per_batch.items()}
    rss0 = _rss_mb()
    session = SESSIONS[task["backend"]](os.path.join(folder, task["file"]), threads, task.get("options") or {}, np,
                                        task.get("precision", ""))
    rss_loaded = _rss_mb()
    outputs = _outputs(np, session, fixture, int(static) if static else min(16, len(next(iter(fixture.values())))))
    before = loads()
    timing = _time(np, session, {b: _tile(np, one, b) for b in batches}, warmup, calls, rounds)
    after = loads()
    rss_after = _rss_mb()
    described = session.described
    del session
    gc.collect()
    return {"id": task["id"], "backend": task["backend"], "threads": threads, "described": described,
            "rss_growth_mb": round(max(0.0, max(rss_loaded, rss_after) - rss0), 2), "timing": timing,
            "loads_before": before, "loads_after": after,
            "outputs": outputs.astype(np.float32).tolist(), "error": None}


def fingerprint_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def run_job(np, job_path: str) -> dict:
    folder = os.path.dirname(os.path.abspath(job_path))
    with open(job_path, encoding="utf-8") as f:
        job = json.load(f)
    results = []
    for task in job["tasks"]:  # serial: one artifact at a time on this device
        try:
            results.append(run_task(np, task, job, folder))
        except Exception as exc:  # noqa: BLE001 - one artifact the runtime rejects must not lose the others
            first = (str(exc).strip().splitlines() or [""])[0][:300]
            results.append({"id": task["id"], "backend": task["backend"], "error": f"{type(exc).__name__}: {first}"})
    return {"runner_version": RUNNER_VERSION, "fingerprint": fingerprint(), "results": results}


def main(argv: list[str]) -> int:
    real_stdout = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)  # runtimes that print (to Python's or C's stdout) must not break the JSON
    sys.stdout = sys.stderr
    try:
        import numpy as np
    except ImportError as exc:
        real_stdout.write(json.dumps({"fatal": f"numpy is not importable with {sys.executable} ({exc}); "
                                      "install it on the device (pip install numpy)"}))
        return 3
    if argv[:1] == ["probe"] and len(argv) <= 2:
        wanted = argv[1].split(",") if len(argv) == 2 else list(SESSIONS)
        doc = {"runner_version": RUNNER_VERSION, "python": sys.executable, "numpy": np.__version__,
               "fingerprint": fingerprint(), "runtimes": runtimes(wanted)}
    elif argv[:1] == ["run"] and len(argv) == 2:
        doc = run_job(np, argv[1])
    else:
        real_stdout.write(json.dumps({"fatal": "usage: remote_runner.py probe [BACKEND,...] | run JOB.json"}))
        return 2
    real_stdout.write(json.dumps(doc))
    real_stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
