"""Wall time of `optkit compress` on the built-in demo, per device, cold cache and warm cache.

    python benchmarks/compress_demo.py [--devices jetson x86-avx512] [--out benchmarks/results]

Writes benchmarks/results/compress_demo.{md,json}. The target from issue 2: `compress --device jetson`
on the demo within 60 s wall on 2 cores (cold: the demo model trains first).
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

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from toolkit.core.host import host, library_versions  # noqa: E402


def run(device: str, cache: Path, out: Path) -> dict:
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "toolkit.cli.app", "compress", "--device", device, "--out", str(out), "--json"],
                          env={**os.environ, "OPTKIT_CACHE_DIR": str(cache)}, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        return {"device": device, "ok": False, "error": proc.stderr.strip().splitlines()[-1:], "wall_s": round(wall, 1)}
    report = json.loads(proc.stdout)
    return {"device": device, "ok": True, "wall_s": round(wall, 1), "candidates": len(report["candidates"]),
            "selected": report["selected"], "timings": report["timings"]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--devices", nargs="+", default=["jetson", "x86-avx512"])
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(tmp) / "cache"
        for device in args.devices:
            for phase in ("cold", "warm"):
                if phase == "cold":
                    cache = Path(tmp) / f"cache-{device}"  # a fresh cache: demo training and every pass included
                row = run(device, cache, Path(tmp) / f"{device}-{phase}")
                row["cache"] = phase
                rows.append(row)
                print(json.dumps(row))
    args.out.mkdir(parents=True, exist_ok=True)
    meta = {"host": host(), "versions": library_versions(), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    (args.out / "compress_demo.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    lines = [f"# optkit compress on the built-in demo — measured on {meta['host']['cpu']} ({meta['host']['cores']} cores), {meta['date']}",
             "", "| device | cache | wall s | candidates | selected | passes s | evaluate s | report s |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        t = r.get("timings", {})
        lines.append(f"| {r['device']} | {r['cache']} | {r['wall_s']} | {r.get('candidates', '—')} | {r.get('selected', r.get('error'))} | "
                     f"{t.get('passes_s', '—')} | {t.get('evaluate_s', '—')} | {t.get('report_s', '—')} |")
    (args.out / "compress_demo.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
