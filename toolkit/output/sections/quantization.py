"""Report section: quantized candidates by engine, and the layer sensitivity + search of mixed precision.

Reads candidate.info written by the mixed_precision pass; renders it, never computes it.
"""
from __future__ import annotations

import html
from pathlib import Path

import numpy as np

from toolkit.output.sections.registry import register_section
from toolkit.output.style import html_table, md_table, pyplot, save

def _plot(rows: list[dict], cid: str, path: Path) -> None:
    plt = pyplot()

    rows = [r for r in rows if r.get("analysed")]
    fig, axes = plt.subplots(1, 2, figsize=(10, 0.4 * len(rows) + 1.8), sharey=True)
    ys = np.arange(len(rows))
    labels = [f"{r['layer']} ({r['op']})" for r in rows]
    axes[0].barh(ys, [r["score"] for r in rows], color="tab:red")
    if all("f1_effect" in r for r in rows):  # exhaustive ranking (2 evaluations per layer)
        axes[0].set_xlabel("KL score: KL(only it int8) + KL removed by keeping it fp32")
        axes[1].barh(ys, [r["f1_effect"] for r in rows], color="tab:blue")
        axes[1].set_xlabel("F1 effect: val F1 drop (only it int8) + F1 recovered (only it fp32)")
    else:  # one-pass ranking (passes/sensitivity.rank): int8 noise each layer injects
        axes[0].set_xlabel("int8 noise/signal power: input activation + weight")
        axes[1].barh(ys, [r.get("activation_sqnr_db") or 0.0 for r in rows], color="tab:blue")
        axes[1].set_xlabel("input activation SQNR, dB (higher = safer)")
    axes[0].set_yticks(ys, labels, fontsize=8)
    axes[0].invert_yaxis()
    fig.suptitle(f"Layer sensitivity ({cid}), validation split")
    save(fig, path)


@register_section("quantization")
def quantization_section(report: dict, folder: Path) -> dict | None:
    cands = report.get("candidates", [])
    engines = [c for c in cands if c.get("engine")]
    mixed = [c for c in cands if "sensitivity" in (c.get("info") or {})]
    if not engines:
        return None
    md, ht, plots = [], [], {}
    eng_rows = [[c["id"], c["engine"], c["precision"], c["backend"], (c.get("info") or {}).get("val_macro_f1", "—"),
                 f"{c['metrics']['macro_f1']:.4f}", f"{c['metrics']['latency_p50_ms']:.4g}"] for c in engines]
    head = ["candidate", "engine", "precision", "backend", "val macro-F1 (pass)", "test macro-F1", "p50 ms"]
    md.append("Quantized candidates by engine (all also on the trade-off plot):\n\n" + md_table(head, eng_rows))
    ht.append("<p>Quantized candidates by engine (all also on the trade-off plot):</p>" + html_table(head, eng_rows))
    for c in mixed:
        info = c["info"]
        name = f"sensitivity_{c['id']}"
        try:
            _plot(info["sensitivity"], c["id"], folder / f"{name}.png")
            plots[name] = f"{name}.png"
        except Exception:  # a plot must never sink the report
            pass
        head = ["rank", "layer", "op", "val F1 only it int8", "KL only it int8", "val F1 all but it int8",
                "KL all but it", "KL score", "F1 effect", "plan"]
        fp32 = set(info["plan"]["fp32"])
        rows = [[r.get("rank", "—"), r["layer"], r["op"], r.get("only_int8_val_f1", "not analysed"),
                 f"{r['only_int8_kl']:.2e}" if "only_int8_kl" in r else "—", r.get("all_but_val_f1", "—"),
                 f"{r['all_but_kl']:.2e}" if "all_but_kl" in r else "—",
                 f"{r['score']:.2e}" if "score" in r else "—", r.get("f1_effect", "—"),
                 "fp32" if r["layer"] in fp32 else "int8"] for r in info["sensitivity"]]
        srows = [[s["step"], ", ".join(s["kept_fp32"]) or "(none: full int8)", s["val_macro_f1"], f"{s['drop']:+.4f}",
                  "yes" if s["within_tolerance"] else "no"] for s in info["search"]]
        shead = ["step", "layers kept fp32", "val macro-F1", "drop vs fp32", "within tolerance"]
        intro = (f"**{c['id']}** ({info['engine_mechanism']}): fp32 val macro-F1 {info['fp32_val_macro_f1']}, tolerance "
                 f"{info['tolerance']}; {info['layers_analysed']} of {info['layers_total']} quantizable layers analysed "
                 f"(cap {info['sensitivity_cap']}). Plan: {len(fp32)} layer(s) fp32 "
                 f"({', '.join(sorted(fp32)) or 'none'}), {len(info['plan']['int8'])} int8 — {info['plan']['why']}.")
        md += [intro, "Sensitivity (validation split, ORT static QDQ; most sensitive first):\n\n" + md_table(head, rows),
               f"![sensitivity]({name}.png)" if name in plots else "",
               "Accuracy-aware search (fastest first, stop at the first within tolerance):\n\n" + md_table(shead, srows)]
        ht += [f"<p>{html.escape(intro).replace('**', '')}</p>", html_table(head, rows), "<p>Search steps:</p>",
               html_table(shead, srows)]
    return {"title": "Quantization engines and mixed precision", "markdown": "\n\n".join(m for m in md if m),
            "html": "\n".join(ht), "plots": plots}
