"""Wall time of one sweep (>= 20 candidates), local executor vs Ray on this host, and what limits the speed-up.

    pip install -e '.[ray]'
    python benchmarks/sweep.py            # 2 models x 3 recipes on x86-avx512 (its own bench settings): 21 candidates
    python benchmarks/sweep.py --quick    # a short bench profile (warmup 2, 20 iterations): a smoke run, same shape

Each executor runs the same command users run (`optkit sweep sweep.yaml --executor local|ray --json`) in a child
process with a fresh, empty OPTKIT_CACHE_DIR, so neither reads what the other built; Ray starts a local instance
with every core of this host. The two summaries must agree on every candidate's accuracy metrics and artifact
hashes (checked here). Wall time is the child's, start to exit (Ray's start-up included, and said apart).
Models: the demo digits CNN (safetensors + factory) and a small ONNX MLP; recipes: static int8 (minmax,
percentile), dynamic int8 + static S8S8, OpenVINO IR + NNCF int8, each after the ONNX export.

Writes benchmarks/results/sweep.{json,md}.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

EXPORT = {"id": "onnx-fp32", "pass": "export_onnx"}
RECIPES = {
    "static-int8": [EXPORT,
                    {"id": "ort-int8-minmax", "pass": "ort_static_int8", "from": "onnx-fp32",
                     "options": {"calibration": "minmax", "per_channel": True, "activations": "uint8"}},
                    {"id": "ort-int8-percentile", "pass": "ort_static_int8", "from": "onnx-fp32",
                     "options": {"calibration": "percentile", "per_channel": True, "activations": "uint8"}}],
    "dynamic-s8s8": [EXPORT, {"id": "ort-int8-dynamic", "pass": "ort_dynamic_int8", "from": "onnx-fp32"},
                     {"id": "ort-int8-s8s8", "pass": "ort_static_int8", "from": "onnx-fp32",
                      "options": {"calibration": "minmax", "per_channel": True, "activations": "int8"}}],
    "openvino": [EXPORT, {"id": "ov-fp32", "pass": "openvino_ir", "from": "onnx-fp32"},
                 {"id": "nncf-int8", "pass": "nncf_ptq", "from": "onnx-fp32"}],
}


def make_inputs(work: Path, quick: bool) -> Path:
    from safetensors.torch import save_file

    from tests.test_sweep import tiny_onnx, write_digits_npz
    from toolkit.intake import checkpoints as intake
    from toolkit.intake.demo import digits_dataset

    digits = digits_dataset()
    write_digits_npz(work / "digits.npz", digits)
    demo = intake.load(None)  # the trained demo CNN (trained once into the default cache)
    save_file({k: v.contiguous() for k, v in demo.module.state_dict().items()}, str(work / "cnn.safetensors"))
    tiny_onnx(work / "mlp.onnx", digits)
    for name, steps in RECIPES.items():
        (work / f"{name}.yaml").write_text(yaml.safe_dump({"name": name, "calibration_size": 128, "steps": steps}))
    device = "x86-avx512"
    if quick:
        prof = yaml.safe_load((ROOT / "devices" / "x86-avx512.yaml").read_text())
        prof.update(name="x86-quick", aliases=[])
        prof["bench"].update(warmup=2, iterations=20, batch_sizes=[1, 4])
        (work / "x86-quick.yaml").write_text(yaml.safe_dump(prof))
        device = "x86-quick.yaml"
    spec = {"models": [{"name": "cnn", "checkpoint": "cnn.safetensors", "model_factory": "toolkit.intake.demo:digits_cnn",
                        "data": "digits.npz"},
                       {"name": "mlp", "checkpoint": "mlp.onnx", "data": "digits.npz"}],
            "recipes": [f"{n}.yaml" for n in RECIPES], "devices": [device]}
    (work / "sweep.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    return work / "sweep.yaml"


def run(sweep: Path, executor: str, work: Path) -> dict:
    env = {**os.environ, "OPTKIT_CACHE_DIR": str(work / f"cache-{executor}"), "RAY_USAGE_STATS_ENABLED": "0"}
    load0 = os.getloadavg()[0]
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, "-m", "toolkit.cli", "sweep", str(sweep), "--executor", executor, "--out",
                        str(work / f"out-{executor}"), "--json"], capture_output=True, text=True, env=env, cwd=work)
    wall = time.perf_counter() - t0
    try:
        summary = json.loads(p.stdout)
    except ValueError:
        raise SystemExit(f"{executor}: the sweep printed no JSON (exit {p.returncode}): {p.stderr[-2000:]}")
    if p.returncode != 0:
        raise SystemExit(f"{executor}: the sweep failed (exit {p.returncode}): {summary.get('failures')}")
    rows = summary["combinations"]
    return {"executor": executor, "wall_s": round(wall, 1), "sweep_wall_s": summary["wall_s"],
            "process_startup_s": round(wall - summary["wall_s"], 1),
            "executor_startup_s": summary["executor_startup_s"], "load_average_before": round(load0, 2),
            "load_average_after": round(os.getloadavg()[0], 2), "nodes": summary["nodes"],
            "candidates": sum(len(r["artifacts"]) for r in rows), "combinations": len(rows),
            "build_s_sum": round(sum(r["build_s"] or 0 for r in rows), 1),
            "measure_s_sum": round(sum(r["measure_s"] or 0 for r in rows), 1),
            "per_combination": [{k: r[k] for k in ("id", "selected", "macro_f1", "latency_p50_ms", "node", "build_node",
                                                   "build_s", "measure_s")} for r in rows],
            "_rows": rows}


def _files_that_differ(work: Path, combo: str, cid: str) -> str:
    """Which files of a candidate differ between the two runs (and which are byte-identical)."""
    from toolkit.core.artifacts import file_sha256

    a, b = (work / f"out-{e}" / "runs" / combo / "candidates" / cid for e in ("local", "ray"))
    names = sorted({p.name for p in (*a.glob("*"), *b.glob("*")) if not p.name.startswith(".")})
    same = [n for n in names if (a / n).is_file() and (b / n).is_file() and file_sha256(a / n) == file_sha256(b / n)]
    return f"{', '.join(n for n in names if n not in same) or '-'} differ, {', '.join(same) or 'nothing'} identical"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="short bench profile (smoke run)")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = ap.parse_args()
    from toolkit.core.host import host, host_label, usable_cores

    with tempfile.TemporaryDirectory(prefix="optkit-sweep-bench-") as tmp:
        work = Path(tmp)
        sweep = make_inputs(work, args.quick)
        results = [run(sweep, "local", work), run(sweep, "ray", work)]
        loc, ray = results
        by = [{r["id"]: r for r in res.pop("_rows")} for res in results]
        same_metrics = all(by[0][k]["metrics"] == by[1][k]["metrics"] for k in by[0])
        differ = [f"{k}/{cid}: {_files_that_differ(work, k, cid)}" for k in by[0]
                  for cid in sorted(set(by[0][k]["artifacts"]) | set(by[1][k]["artifacts"]))
                  if by[0][k]["artifacts"].get(cid) != by[1][k]["artifacts"].get(cid)]
        same_bytes = not differ
    speedup = round(loc["wall_s"] / ray["wall_s"], 2)
    cores = usable_cores()
    slower = round(ray["build_s_sum"] / loc["build_s_sum"], 2) if loc["build_s_sum"] else None
    limit = (f"On {cores} cores the build phase runs at most {cores} build tasks side by side (1 CPU each), and the "
             "passes inside them use several threads of their own (calibration and export run the model through "
             f"multi-threaded runtimes), so side by side they share the same cores: the build tasks took x{slower} "
             f"their local time in sum ({ray['build_s_sum']} s vs {loc['build_s_sum']} s; a fresh Ray worker also "
             "imports torch and the runtimes once). Each measure task takes the whole node (num_cpus = the node's "
             "CPUs), so nothing runs beside a timing: the timing phase is serial per node, as in the local executor "
             f"({ray['measure_s_sum']} s of measure tasks on Ray, {loc['measure_s_sum']} s locally). Ray's own "
             f"start-up (ray.init of a local instance) took {ray['executor_startup_s']} s. More nodes add build "
             "slots and one timing slot each; one 2-core host has neither to spare.")
    result = {"benchmark": "sweep", "quick": args.quick, "host": host(), "measured_on": host_label(),
              "usable_cores": cores, "generated": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
              "command": "python benchmarks/sweep.py" + (" --quick" if args.quick else ""),
              "sweep": {"models": ["cnn (demo digits CNN, safetensors)", "mlp (ONNX)"], "recipes": list(RECIPES),
                        "devices": ["x86-quick" if args.quick else "x86-avx512"]},
              "local": loc, "ray": ray, "speedup_local_over_ray": speedup,
              "same_accuracy_metrics": same_metrics, "same_artifact_hashes": same_bytes,
              "artifacts_that_differ": differ, "what_limits_it": limit}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "sweep.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    md = [f"# Sweep: local executor vs Ray on {host_label()} ({cores} usable cores)", "",
          f"`{result['command']}` · {loc['combinations']} combinations, {loc['candidates']} candidates "
          f"(2 models x {len(RECIPES)} recipes x 1 device) · measured on this host, {result['generated']}", "",
          "| executor | wall s | process start s | executor start s | build s (sum of tasks) | measure s (sum of tasks) | load avg before/after |",
          "|---|---|---|---|---|---|---|"]
    for r in results:
        md.append(f"| {r['executor']} | {r['wall_s']} | {r['process_startup_s']} | {r['executor_startup_s']} | "
                  f"{r['build_s_sum']} | {r['measure_s_sum']} | "
                  f"{r['load_average_before']} / {r['load_average_after']} |")
    md += ["", f"Speed-up (local wall / Ray wall): **x{speedup}**. Same accuracy metrics: {same_metrics}; same artifact "
           f"hashes: {same_bytes}" + (f" (differ: {', '.join(differ)})" if differ else "") + ".", "",
           *(["OpenVINO IR differs in its .xml only: OpenVINO names generated layers from a process-wide counter "
              "(e.g. Concat_32802 in the local process, which converted other graphs first, vs Concat_371 in a fresh "
              "Ray worker); the weights (.bin) and the accuracy are identical. The pass cache is keyed by inputs, "
              "so this does not affect reuse.", ""] if differ and all("model.xml differ, model.bin identical" in d
                                                                     for d in differ) else []),
           *([f"CONTENDED host: the 1-minute load average was {max(loc['load_average_after'], ray['load_average_after'])} "
              f"on {cores} cores (other work ran beside this benchmark), so these wall times and latencies are "
              "noisy; re-run on a quiet host.", ""]
             if max(r[k] for r in results for k in ("load_average_before", "load_average_after")) > cores + 0.5 else []),
           "What limits it: " + limit, "",
           "| combination | selected | macro-F1 | p50 ms (batch 1) | timed on node |", "|---|---|---|---|---|"]
    for c in ray["per_combination"]:
        md.append(f"| {c['id']} | {c['selected']} | {c['macro_f1']:.4f} | {c['latency_p50_ms']:.4g} | {c['node']} |")
    (args.out / "sweep.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
