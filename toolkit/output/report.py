"""Trade-off report: report.json, report.md, a self-contained index.html, and plots."""
from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np

from toolkit.core.paths import TEMPLATES_DIR as TEMPLATES
from toolkit.output.style import pyplot

def render_sections(report: dict, folder: Path) -> list[dict]:
    from toolkit.output.sections import SECTIONS

    out = []
    for name, fn in SECTIONS.items():
        sec = fn(report, folder)
        if sec:
            out.append({"name": name, **sec})
    return out


def _env():
    import jinja2

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATES)), autoescape=jinja2.select_autoescape(["html"]),
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters["f"] = lambda v, n=4: "—" if v is None else (f"{v:.{n}f}" if isinstance(v, (int, float)) else str(v))
    return env


def plot_tradeoff(rows: list[dict], selected: str | None, path: Path, speed_key: str = "latency_p95_ms",
                  speed_label: str = "p95 latency, ms (measured on this host, batch 1)") -> None:
    """Size vs the run's speed key (the one selection used); marker = status (as on the interactive chart).

    No colourbar: macro-F1 differences between candidates are often in the 4th decimal, and a colourbar
    then reads the same value at every tick; F1 is in the table and the chart's hover instead.
    """
    from matplotlib.ticker import FuncFormatter

    from toolkit.output.chart import status_of

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 5.2))
    missing = [r["id"] for r in rows if r["metrics"].get(speed_key) is None]  # e.g. no estimate for a torch file
    rows = [r for r in rows if r["metrics"].get(speed_key) is not None]
    styles = {"other": dict(marker="o", s=60, c="#4C78A8", label="meets budgets, not chosen"),
              "fails": dict(marker="x", s=60, c="#9a9a9a", label="fails a budget or gate"),
              "front": dict(marker="o", s=230, facecolors="none", edgecolors="#d62728", linewidths=1.5,
                            label="Pareto front"),
              "selected": dict(marker="*", s=380, c="#f2b701", edgecolors="black", label="selected")}
    for key, style in styles.items():
        pts = [r for r in rows if key in status_of(r, selected)]
        if pts:
            ax.scatter([r["metrics"][speed_key] for r in pts], [r["metrics"]["size_mb"] for r in pts],
                       zorder={"front": 2, "selected": 4}.get(key, 3), **style)
    _label_points(ax, rows, speed_key)  # points at the same place get one stacked label, not overprinted ones
    ax.set_xlabel(speed_label + (f" — not shown, no value: {', '.join(missing)}" if missing else ""),
                  fontsize=8 if missing else None)
    ax.set_ylabel("size on disk, MB")
    xs = [r["metrics"][speed_key] for r in rows] or [1.0]
    ys = [r["metrics"]["size_mb"] for r in rows] or [1.0]
    # log only when values span a decade (torch eager vs int8 ORT can be 10-100x); plain tick labels either way
    if max(xs) / max(min(xs), 1e-12) > 10:
        ax.set_xscale("log")
    if max(ys) / max(min(ys), 1e-12) > 10:
        ax.set_yscale("log")
    plain = FuncFormatter(lambda v, _: f"{v:.3g}")
    for a in (ax.xaxis, ax.yaxis):
        a.set_major_formatter(plain)
        a.set_minor_formatter(FuncFormatter(lambda v, _: ""))
    ax.margins(0.12)
    ax.set_title("Size–speed trade-off")
    ax.legend(loc="best", fontsize=8, framealpha=0.9)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")  # tight: labels near the edge are kept, not clipped
    plt.close(fig)


def _label_points(ax, rows: list[dict], speed_key: str) -> None:
    """Each point's id; ids of points within a few pixels of each other are joined into one label."""
    groups: list[list[dict]] = []
    ax.figure.canvas.draw()  # transforms are final only after a draw (log scales, margins)
    trans = ax.transData.transform
    for r in sorted(rows, key=lambda r: (r["metrics"]["size_mb"], r["metrics"][speed_key])):
        p = trans((r["metrics"][speed_key], r["metrics"]["size_mb"]))
        for g in groups:
            q = trans((g[0]["metrics"][speed_key], g[0]["metrics"]["size_mb"]))
            if abs(p[0] - q[0]) < 40 and abs(p[1] - q[1]) < 12:
                g.append(r)
                break
        else:
            groups.append([r])
    placed: list[tuple[float, float, float, float]] = []  # label boxes in pixels, to keep labels apart
    for g in groups:
        text = "\n".join(r["id"] for r in g)
        x, y = trans((g[0]["metrics"][speed_key], g[0]["metrics"]["size_mb"]))
        w, h = 6.0 * max(len(r["id"]) for r in g), 12.0 * len(g)  # ~8 pt text at 110 dpi
        dy = 4.0
        while any(x < bx + bw and bx < x + w and y + dy < by + bh and by < y + dy + h for bx, by, bw, bh in placed):
            dy += 12.0
        placed.append((x, y + dy, w, h))
        ax.annotate(text, (g[0]["metrics"][speed_key], g[0]["metrics"]["size_mb"]), textcoords="offset pixels",
                    xytext=(8, dy), fontsize=8, va="bottom", annotation_clip=False,
                    arrowprops=dict(arrowstyle="-", color="#999", lw=0.6) if dy > 16 else None)


def plot_f1_deltas(rows: list[dict], tolerance: float, path: Path) -> None:
    """Paired-bootstrap CI of each candidate's macro-F1 delta vs fp32, with the tolerated drop."""
    plt = pyplot()

    rows = [r for r in rows if "macro_f1_delta" in r["metrics"]]
    if not rows:
        return
    fig, ax = plt.subplots(figsize=(8, 0.45 * len(rows) + 1.5))
    for i, r in enumerate(rows):
        d = r["metrics"]["macro_f1_delta"]
        ax.errorbar([d["delta"]], [i], xerr=[[d["delta"] - d["low"]], [d["high"] - d["delta"]]], fmt="o", capsize=4)
    ax.axvline(0, color="grey", lw=1)
    ax.axvline(-tolerance, color="tab:red", ls="--", lw=1, label=f"tolerated drop ({tolerance})")
    ax.set_yticks(range(len(rows)), [r["id"] for r in rows])
    ax.set_xlabel("macro-F1 delta vs fp32 (95% paired bootstrap CI, test split)")
    ax.legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_plots(folder: Path, report: dict, dataset, outputs: dict) -> dict[str, str]:
    from toolkit.output import plots_calibration as pc
    from toolkit.metrics.calibration import softmax
    from toolkit.metrics.thresholds import threshold_curves

    rows = report["candidates"]
    sel = report.get("selected")
    base = report["baseline"]
    by_id = {r["id"]: r for r in rows}
    plots: dict[str, str] = {}
    speed = report.get("selection") or {}
    plot_tradeoff(rows, sel, folder / "tradeoff.png", speed.get("speed_key", "latency_p95_ms"),
                  f"{speed.get('speed_label', 'p95 latency')}, ms ({speed.get('speed_kind', 'target')}, batch 1)")
    plots["tradeoff"] = "tradeoff.png"
    plot_f1_deltas(rows, report["device"]["budgets"]["max_macro_f1_drop"], folder / "f1_delta_ci.png")
    if (folder / "f1_delta_ci.png").exists():
        plots["f1_delta_ci"] = "f1_delta_ci.png"
    focus = sel or base
    if focus in by_id:
        pc.plot_confusion(np.asarray(by_id[focus]["metrics"]["confusion_matrix"]), dataset.labels,
                          folder / "confusion.png", f"Confusion matrix — {focus} (test split)")
        plots["confusion"] = "confusion.png"
    pairs = []
    for cid, tag in ((base, "fp32 baseline"), (sel, "selected")):
        if cid in by_id and (tag == "fp32 baseline" or cid != base):
            rel = by_id[cid]["metrics"]["reliability"]
            pairs += [(f"{tag} ({cid}) before", rel["before"]), (f"{tag} after T={by_id[cid]['metrics']['temperature']:.2f}", rel["after"])]
    if pairs:
        pc.plot_reliability(pairs, folder / "reliability.png")
        plots["reliability"] = "reliability.png"
    if focus in outputs:
        probs = softmax(outputs[focus].test, by_id[focus]["metrics"]["temperature"])
        y = dataset.test.y
        # the class with the worst test F1 is the one whose threshold matters most
        worst = int(np.argmin([c["f1"] for c in by_id[focus]["metrics"]["per_class"]]))
        curves = threshold_curves(probs[:, worst], (y == worst).astype(int))
        pc.plot_threshold_curves(curves, folder / "thresholds.png",
                                 f"{focus}: class '{dataset.labels[worst]}' one-vs-rest (weakest class), test split")
        plots["thresholds"] = "thresholds.png"
    return plots


def write_report(folder: Path, report: dict, dataset, outputs: dict) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    plots = write_plots(folder, report, dataset, outputs)
    sections = render_sections(report, folder)
    for sec in sections:
        plots.update(sec.get("plots", {}))
    report["plots"] = {k: f"report/{v}" for k, v in plots.items()}
    (folder / "report.json").write_text(json.dumps(report, indent=2, default=str))
    env = _env()
    ctx = {"r": report, "plots": plots, "sections": sections}
    (folder / "report.md").write_text(env.get_template("report.md.j2").render(**ctx))
    embedded = {k: "data:image/png;base64," + base64.b64encode((folder / v).read_bytes()).decode() for k, v in plots.items()}
    from toolkit.output.chart import tradeoff_html

    speed = report.get("selection") or {}
    ctx["chart"] = tradeoff_html(report["candidates"], report.get("selected"), speed.get("speed_key", "latency_p95_ms"),
                                 speed.get("speed_label", "p95 latency"))
    (folder / "index.html").write_text(env.get_template("report.html.j2").render(embedded=embedded, **ctx))
