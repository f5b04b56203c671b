"""Mixed precision where it matters: a trained model that full int8 breaks, and what the search keeps.

    python benchmarks/mixed_precision.py [--threads 1] [--runs 300]

A wide digits CNN (the demo architecture at width 4: 128/256 channels, ~2.3M parameters, real
sklearn digits, trained seeded) is given an activation outlier the way real models get them: one
hidden unit of the first Linear is scaled x2000 and the next Linear's column divided by 2000. In
fp32 the function is unchanged; per-tensor int8 activations on that layer crush every other unit.

The script builds fp32 ONNX, full ORT static int8 and the mixed-precision search (tolerance 0.01
val macro-F1), then times each through optkit's backend at batch 1 and scores it on the test
split. Writes benchmarks/results/mixed_precision.{md,json}.
"""
from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path


ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--runs", type=int, default=300)
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/optkit-bench-mixed"))
    args = ap.parse_args(argv)

    import shutil

    import torch

    from toolkit.core import modelio
    from toolkit.backends import open_session
    from toolkit.intake.demo import digits_cnn, digits_dataset, train_classifier
    from toolkit.pipeline.devices import load_device
    from toolkit.pipeline.evaluate import run_split
    from toolkit.core.host import host_label, library_versions
    from toolkit.metrics.classification import classification_metrics
    from toolkit.metrics.latency import measure_latency
    from toolkit.metrics.size import size_mb
    from toolkit.passes import PassContext, load_all
    from toolkit.passes.export import save_baseline

    shutil.rmtree(args.workdir, ignore_errors=True)
    args.workdir.mkdir(parents=True)
    data = digits_dataset()
    t0 = time.time()
    torch.manual_seed(0)
    model = train_classifier(digits_cnn(width=4.0), data, args.epochs, seed=0)
    train_s = round(time.time() - t0, 1)
    m = copy.deepcopy(model).eval()
    with torch.no_grad():  # the activation outlier: same fp32 function, hostile int8 range
        k = int(torch.argmax(m[8].weight.abs().sum(0)))
        m[6].weight[k] *= 2000.0
        m[6].bias[k] *= 2000.0
        m[8].weight[:, k] /= 2000.0
    io = modelio.from_data(data.val.inputs, data.n_classes)
    ctx = PassContext(workdir=args.workdir, data=data, io=io, device=load_device("x86-avx512"), seed=0,
                      calibration_size=300, torch_module=m, threads=args.threads, log=print, tolerance=0.01)
    passes = load_all()
    base = save_baseline(ctx, m)
    onnx_c = passes["export_onnx"].fn(ctx, base, None, "onnx-fp32")
    spec = passes["ort_static_int8"]
    int8 = spec.fn(ctx, onnx_c, spec.options.model_validate({}), "ort-int8")
    spec = passes["mixed_precision"]
    t0 = time.time()
    mixed = spec.fn(ctx, onnx_c, spec.options.model_validate({}), "mixed-int8")
    search_s = round(time.time() - t0, 1)

    rows = []
    one = {"x": data.test.inputs["x"][:1]}
    for c in (base, onnx_c, int8, mixed):
        with open_session(c, threads=args.threads) as s:
            pred = run_split(s, data.test).argmax(1)
            lat = measure_latency(s, one, warmup=30, iterations=args.runs)
            runtime = s.describe().get("runtime", c.backend)
        f1 = classification_metrics(data.test.y, pred, data.n_classes)["macro_f1"]
        kept = c.info.get("plan", {}).get("fp32") if c is mixed else None
        rows.append({"candidate": c.id, "precision": c.precision, "runtime": runtime, "test_macro_f1": round(f1, 4),
                     "p50_ms": lat["latency_p50_ms"], "p95_ms": lat["latency_p95_ms"], "size_mb": size_mb(c.files()),
                     "layers_kept_fp32": kept})
        print(rows[-1])
    meta = {"host": host_label(), "threads": args.threads, "runs": args.runs, "batch": 1, "train_s": train_s,
            "search_s": search_s, "date": time.strftime("%Y-%m-%d %H:%M"), "versions": library_versions(),
            "search": mixed.info.get("search"), "layers_total": mixed.info.get("layers_total")}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "mixed_precision.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2, default=str))
    lines = ["# Mixed precision on a trained model that full int8 breaks",
             "", f"Measured on this host: {meta['host']}, {args.threads} thread(s), batch 1, {args.runs} timed runs, "
             f"{meta['date']}. Model: demo CNN at width 4 trained {args.epochs} epochs on sklearn digits "
             f"(test n={len(data.test)}), with one hidden unit scaled x2000 (fp32 function unchanged). "
             f"Search took {search_s} s.", "",
             "| candidate | precision | runtime | test macro-F1 | p50 ms | p95 ms | MB | layers kept fp32 |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        kept = "—" if r["layers_kept_fp32"] is None else f"{len(r['layers_kept_fp32'])}/{meta['layers_total']}: {', '.join(r['layers_kept_fp32'])}"
        lines.append(f"| {r['candidate']} | {r['precision']} | {r['runtime']} | {r['test_macro_f1']} | {r['p50_ms']} | "
                     f"{r['p95_ms']} | {r['size_mb']} | {kept} |")
    (args.out / "mixed_precision.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
