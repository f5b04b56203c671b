"""Every quantization engine on two realistic model sizes: p50 latency at batch 1, per engine and precision.

    python benchmarks/engines.py                 # both models (several minutes on 2 cores)
    python benchmarks/engines.py --models cnn    # only the ResNet-18-size CNN
    python benchmarks/engines.py --threads 1 --runs 100

Models (random weights, written with torch.nn — torchvision is not needed):
- resnet18: CIFAR-style ResNet-18 (11.2M params), input 1x3x32x32, 10 classes.
- bert6: 6-layer BERT-size encoder (hidden 384, 6 heads, FFN 1536, vocab 8000, ~15M params),
  input_ids + attention_mask at sequence length 128, 3 classes.
Labels are the fp32 model's own argmax on random inputs, so "agree" is top-1 agreement with fp32.

It calls the library passes directly (a PassContext over an in-memory dataset), then measures each
candidate through optkit's backend Sessions (toolkit.metrics.latency.measure_latency). Results go to
benchmarks/results/engines.md and .json with the host, threads and runs.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import traceback
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def resnet18(num_classes: int = 10):
    import torch.nn as nn

    class Block(nn.Module):
        def __init__(self, cin, cout, stride):
            super().__init__()
            self.c1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.b1 = nn.BatchNorm2d(cout)
            self.c2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.b2 = nn.BatchNorm2d(cout)
            self.short = (nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
                          if stride != 1 or cin != cout else nn.Identity())
            self.relu = nn.ReLU()

        def forward(self, x):
            y = self.relu(self.b1(self.c1(x)))
            return self.relu(self.b2(self.c2(y)) + self.short(x))

    class ResNet18(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(3, 64, 3, 1, 1, bias=False), nn.BatchNorm2d(64), nn.ReLU())
            layers, cin = [], 64
            for cout, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
                layers += [Block(cin, cout, stride), Block(cout, cout, 1)]
                cin = cout
            self.layers = nn.Sequential(*layers)
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(512, num_classes)

        def forward(self, x):
            return self.fc(self.pool(self.layers(self.stem(x))).flatten(1))

    return ResNet18()


def bert6(vocab: int = 8000, dim: int = 384, heads: int = 6, layers: int = 6, classes: int = 3):
    import torch
    import torch.nn as nn

    class Layer(nn.Module):
        def __init__(self):
            super().__init__()
            self.qkv, self.o = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
            self.ff1, self.ff2 = nn.Linear(dim, 4 * dim), nn.Linear(4 * dim, dim)
            self.n1, self.n2 = nn.LayerNorm(dim), nn.LayerNorm(dim)

        def forward(self, h, bias):
            b, l, _ = h.shape
            q, k, v = self.qkv(h).view(b, l, 3, heads, dim // heads).permute(2, 0, 3, 1, 4)
            att = torch.softmax(q @ k.transpose(-1, -2) / (dim // heads) ** 0.5 + bias, -1)
            h = self.n1(h + self.o((att @ v).transpose(1, 2).reshape(b, l, dim)))
            return self.n2(h + self.ff2(torch.nn.functional.gelu(self.ff1(h))))

    class Encoder(nn.Module):
        def __init__(self):
            super().__init__()
            self.tok, self.pos = nn.Embedding(vocab, dim), nn.Embedding(512, dim)
            self.layers = nn.ModuleList([Layer() for _ in range(layers)])
            self.head = nn.Linear(dim, classes)

        def forward(self, input_ids, attention_mask):
            pos = torch.arange(input_ids.shape[1], device=input_ids.device)
            h = self.tok(input_ids) + self.pos(pos)[None]
            bias = (1.0 - attention_mask[:, None, None, :].to(h.dtype)) * -1e4
            for layer in self.layers:
                h = layer(h, bias)
            return self.head(h[:, 0])

    return Encoder()


def make_data(name: str, module, n: int = 96, seed: int = 0):
    import torch

    from toolkit.intake.data import Dataset, Split

    rng = np.random.default_rng(seed)
    if name == "resnet18":
        inputs = {"x": rng.standard_normal((n, 3, 32, 32)).astype(np.float32)}
    else:
        ids = rng.integers(1, 8000, (n, 128)).astype(np.int64)
        lengths = rng.integers(64, 129, n)
        inputs = {"input_ids": ids, "attention_mask": (np.arange(128)[None] < lengths[:, None]).astype(np.int64)}
    with torch.inference_mode():
        logits = torch.cat([module(*(torch.from_numpy(v[i:i + 16]) for v in inputs.values())) for i in range(0, n, 16)])
    y = logits.argmax(1).numpy().astype(np.int64)
    split = Split(inputs, y)
    k = int(logits.shape[1])
    return Dataset(name=f"random-{name}", labels=[str(i) for i in range(k)], train=None, val=split, test=split,
                   sha256=f"bench-{name}-{seed}", preprocessing="random inputs")


# (candidate id, pass, from, options)
STEPS = [
    ("onnx-fp32", "export_onnx", "baseline", {}),
    ("ort-int8-static", "ort_static_int8", "onnx-fp32", {"calibration": "minmax", "activations": "uint8"}),
    ("ort-int8-dynamic", "ort_dynamic_int8", "onnx-fp32", {}),
    ("ov-fp32", "openvino_ir", "onnx-fp32", {}),
    ("ov-bf16", "openvino_ir", "onnx-fp32", {"inference_precision": "bf16"}),
    ("nncf-int8-ov", "nncf_ptq", "onnx-fp32", {}),
    ("nncf-int8-onnx", "nncf_ptq_onnx", "onnx-fp32", {}),
    ("pt2e-int8", "pt2e_ptq", "baseline", {}),
    ("inc-int8", "inc_ptq", "baseline", {"tuning": False}),
    # random weights + fp32-argmax labels make macro-F1 an agreement score dominated by near-tied logits:
    # 0.05 tolerance and an 8-layer sensitivity cap keep the search meaningful and the run short
    ("mixed-int8", "mixed_precision", "onnx-fp32", {"tolerance": 0.05, "max_layers": 8}),
]


def bench_model(name: str, threads: int, runs: int, workdir: Path, log) -> list[dict]:
    import torch

    from toolkit.core import modelio
    from toolkit.backends import open_session
    from toolkit.pipeline.devices import load_device
    from toolkit.metrics.latency import measure_latency
    from toolkit.metrics.size import size_mb
    from toolkit.passes import PassContext, load_all
    from toolkit.passes.export import save_baseline

    torch.manual_seed(0)
    module = (resnet18() if name == "resnet18" else bert6()).eval()
    data = make_data(name, module)
    io = modelio.from_data(data.val.inputs, data.n_classes)
    ctx = PassContext(workdir=workdir / name, data=data, io=io, device=load_device("x86-avx512"), seed=0,
                      calibration_size=32, torch_module=module, threads=threads, log=log)
    ctx.workdir.mkdir(parents=True, exist_ok=True)
    passes = load_all()
    cands = {"baseline": save_baseline(ctx, module)}
    build_s = {"baseline": 0.0}
    errors = {}
    for cid, pname, src, opts in STEPS:
        if src not in cands:
            errors[cid] = f"its input {src} failed"
            continue
        t = time.time()
        try:
            spec = passes[pname]
            cands[cid] = spec.fn(ctx, cands[src], spec.options.model_validate(opts), cid)
            build_s[cid] = round(time.time() - t, 1)
            log(f"[{name}] built {cid} in {build_s[cid]} s")
        except Exception as exc:  # record and go on: the table says why a row is missing
            errors[cid] = f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]}"
            log(f"[{name}] {cid} failed: {errors[cid]}")
    rows = []
    one = {k: v[:1] for k, v in data.test.inputs.items()}
    base_pred = None
    for cid, c in cands.items():
        cid_out = "torch-fp32" if cid == "baseline" else cid
        try:
            with open_session(c, threads=threads) as s:
                logits = np.concatenate([s.infer(b) for b in data.test.batches(16)])
                lat = measure_latency(s, one, warmup=max(5, runs // 10), iterations=runs)
                desc = s.describe()
        except Exception as exc:
            errors[cid_out] = f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]}"
            continue
        pred = logits.argmax(1)
        if base_pred is None:
            base_pred = pred
        rows.append({"model": name, "candidate": cid_out, "engine": c.engine or "-", "precision": c.precision,
                     "backend": desc.get("runtime", c.backend), "p50_ms": lat["latency_p50_ms"],
                     "p95_ms": lat["latency_p95_ms"], "runs": lat["runs"], "size_mb": round(size_mb(c.files()), 2),
                     "agree_fp32": round(float((pred == base_pred).mean()), 4), "build_s": build_s.get(cid),
                     "note": (f"{len(c.info['plan']['fp32'])}/{c.info['layers_total']} layers fp32, "
                              f"{c.info['layers_analysed']} analysed" if "plan" in c.info else "")})
        log(f"[{name}] {cid_out}: p50 {lat['latency_p50_ms']} ms")
    for cid, why in errors.items():
        rows.append({"model": name, "candidate": cid, "error": why})
    return rows


def write(rows: list[dict], meta: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "engines.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    lines = ["# Engine benchmark: p50 latency at batch 1", "",
             f"Measured on this host: {meta['host']}, {meta['threads']} thread(s), batch 1, {meta['runs']} timed runs "
             f"after warmup, {meta['date']}. Random weights; 'agree' = top-1 agreement with torch fp32 on "
             f"{meta['n_samples']} random inputs. Versions: {meta['versions']}.", ""]
    for model in dict.fromkeys(r["model"] for r in rows):
        lines += [f"## {model}", "", "| candidate | engine | precision | runtime | p50 ms | p95 ms | MB | agree | build s | note |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for r in rows:
            if r["model"] == model and "error" not in r:
                lines.append(f"| {r['candidate']} | {r['engine']} | {r['precision']} | {r['backend']} | {r['p50_ms']:.3f} | "
                             f"{r['p95_ms']:.3f} | {r['size_mb']} | {r['agree_fp32']} | {r['build_s']} | {r['note']} |")
        errs = [r for r in rows if r["model"] == model and "error" in r]
        if errs:
            lines += ["", "Not measured:"] + [f"- {r['candidate']}: {r['error']}" for r in errs]
        lines.append("")
    (out / "engines.md").write_text("\n".join(lines))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="resnet18,bert6")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--runs", type=int, default=100)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    ap.add_argument("--workdir", default="/tmp/optkit-bench-engines")
    ap.add_argument("--merge", action="store_true", help="keep rows of other models from an existing engines.json")
    args = ap.parse_args(argv)
    import torch

    from toolkit.core.host import host_label, library_versions

    torch.set_num_threads(args.threads)
    versions = library_versions()
    meta = {"host": host_label(), "threads": args.threads, "runs": args.runs, "n_samples": 96,
            "date": time.strftime("%Y-%m-%d %H:%M"), "python": platform.python_version(), "versions": versions,
            "cpu_count": os.cpu_count()}
    rows: list[dict] = []
    models = [{"cnn": "resnet18", "bert": "bert6"}.get(n, n) for n in args.models.split(",")]
    old = Path(args.out) / "engines.json"
    if args.merge and old.exists():
        prev = json.loads(old.read_text())
        rows = [r for r in prev["rows"] if r["model"] not in models]
        meta["merged_from"] = prev["meta"].get("date")
    for name in models:
        try:
            rows += bench_model(name, args.threads, args.runs, Path(args.workdir), lambda m: print(m, flush=True))
        except Exception:
            traceback.print_exc()
            rows.append({"model": name, "candidate": "*", "error": traceback.format_exc().splitlines()[-1]})
        write(rows, meta, Path(args.out))
    print((Path(args.out) / "engines.md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
