"""The nightly benchmark report: trend plots, regressions flagged, written atomically.

    result = write_nightly_report("bench.db", "reports/nightly")
    if result["regressions"]: ...   # the CLI exits 1

Why a staging folder: CI publishes out_dir as an artifact; a crash half-way must leave
either last night's report or tonight's, never a mix. We write everything next to out_dir
and rename it into place at the end.
"""
from __future__ import annotations

import base64
import json
import re
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from toolkit.output import history
from toolkit.core.errors import ConfigError, OutputError
from toolkit.output.staging import staged
from toolkit.output.style import fmt, jinja_env, md_table

from toolkit.core.paths import TEMPLATES_DIR
TEMPLATE_NAME = "nightly.html.j2"
# A file we leave in every report folder, so a later run knows it may replace the folder.
MARKER = ".optkit-nightly"


def _slug(key: tuple) -> str:
    """A file name for a series: readable prefix plus a hash, so two series never collide."""
    import hashlib

    text = "-".join(str(k) for k in key[:5])
    text = re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_")[:80]
    digest = hashlib.sha256(json.dumps([str(k) for k in key]).encode()).hexdigest()[:8]
    return f"{text}-{digest}"


def _label(series: dict[str, Any]) -> str:
    return (
        f"{series['model']} · {series['backend']} {series['precision']} · batch {series['batch']}"
        f" · {series['device']} · host {series['host_key']}"
    )


def _rolling(values: list[float], window: int, min_relative: float, mad_k: float) -> list[tuple[float, float] | None]:
    """For each point, the (median, band) the detector would have used for it, or None."""
    out: list[tuple[float, float] | None] = []
    for i in range(len(values)):
        prev = values[max(0, i - window):i]
        out.append(history.noise_band(prev, min_relative=min_relative, mad_k=mad_k) if len(prev) >= 2 else None)
    return out


def _plot(points: list[dict[str, Any]], finding: dict[str, Any], path: Path, *, window: int,
          min_relative: float, mad_k: float, metric: str) -> None:
    """Trend of one series with its noise band shaded and points over the band marked.

    Uses matplotlib's object API (Figure + Agg canvas), not pyplot: no global backend
    switch, no figure registry to leak in a long-running process.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    values = [p["value"] for p in points]
    xs = list(range(len(values)))
    bands = _rolling(values, window, min_relative, mad_k)
    higher_better = metric in history.HIGHER_IS_BETTER

    fig = Figure(figsize=(7.0, 3.0), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    bx = [x for x, b in zip(xs, bands) if b is not None]
    if bx:
        meds = [b[0] for b in bands if b is not None]
        halfs = [b[1] for b in bands if b is not None]
        ax.fill_between(bx, [m - h for m, h in zip(meds, halfs)], [m + h for m, h in zip(meds, halfs)],
                        color="tab:blue", alpha=0.15, step="mid", label="noise band (median ± band)")
        ax.step(bx, meds, where="mid", color="tab:blue", lw=1, ls="--", label=f"median of previous {window}")
    ax.plot(xs, values, marker="o", ms=3, color="black", lw=1, label=metric)
    bad_x, bad_y = [], []
    for x, v, b in zip(xs, values, bands):
        if b is None:
            continue
        if (v < b[0] - b[1]) if higher_better else (v > b[0] + b[1]):
            bad_x.append(x)
            bad_y.append(v)
    if bad_x:
        ax.scatter(bad_x, bad_y, color="red", marker="x", s=60, zorder=5, label="over the band")
    if finding["status"] == "regression":
        ax.annotate(f"regression ×{finding['ratio']:.2f}" if finding["ratio"] else "regression",
                    (xs[-1], values[-1]), textcoords="offset points", xytext=(-8, -4), ha="right", va="top",
                    color="red", fontsize=8)
    step = max(1, len(xs) // 15)  # keep run-id labels readable on long histories
    ax.set_xticks(xs[::step])
    ax.set_xticklabels([str(p["run_id"]) for p in points][::step], fontsize=7)
    ax.set_xlabel("run id")
    ax.set_ylabel(metric)
    status = "" if finding["status"] == "ok" else f"  [{finding['status']}]"
    ax.set_title(_label(finding["series"]) + status, fontsize=8,
                 color="red" if finding["status"] == "regression" else "black")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    fig.savefig(path, format="png")


def _fmt(v: Any) -> str:
    """Nightly numbers span orders of magnitude (ms, ratios, throughput): 3 significant figures (style.fmt)."""
    return fmt(v, 3, significant=True)


def _markdown(ctx: dict[str, Any]) -> str:
    lines = [
        "# optkit nightly benchmark report",
        "",
        f"Generated {ctx['generated']} from `{ctx['db_path']}` — metric `{ctx['metric']}`; "
        f"rule: latest > median(previous {ctx['window']}) + max({ctx['mad_k']}×1.4826×MAD, "
        f"{ctx['min_relative']:.0%}×median).",
        "",
        f"**{len(ctx['regressions'])} regression(s)**, {len(ctx['ok'])} ok, "
        f"{len(ctx['insufficient'])} without enough history. All numbers were measured on the host named "
        "in each row, not estimated.",
        "",
    ]
    if ctx["series"]:
        rows = []
        for s in ctx["series"]:
            f = s["finding"]
            k = f["series"]
            rows.append([f["status"], k["model"], k["backend"], k["precision"], k["batch"], k["device"],
                         _fmt(f["latest"]), _fmt(f["baseline_median"]), _fmt(f["band"]), _fmt(f["ratio"]),
                         f"{f['measured_on']} ({f['threads']} threads)"])
        lines += ["## Series", "", md_table(["status", "model", "backend", "precision", "batch", "device", "latest",
                                             "baseline", "band", "ratio", "measured on"], rows)]
        lines += ["", "## Trends", ""]
        for s in ctx["series"]:
            lines += [f"### {s['label']}", "", f"![{s['label']}](plots/{s['plot_name']})", ""]
    else:
        lines += ["No benchmark results recorded yet.", ""]
    return "\n".join(lines) + "\n"


def _render_html(ctx: dict[str, Any]) -> str:
    import jinja2

    env = jinja_env()
    env.filters["fmt"] = _fmt
    try:
        template = env.get_template(TEMPLATE_NAME)
    except jinja2.TemplateNotFound as exc:
        raise ConfigError(f"{TEMPLATES_DIR / TEMPLATE_NAME}: report template missing; reinstall optkit") from exc
    return template.render(**ctx)


def _check_out_dir(out: Path) -> None:
    """Only replace a folder we made; never delete someone's files to write a report."""
    if out.is_symlink():
        raise OutputError(f"{out}: is a symbolic link; pass a real folder for the report")
    if out.exists():
        if not out.is_dir():
            raise OutputError(f"{out}: exists and is not a folder; pass another path")
        if any(out.iterdir()) and not (out / MARKER).exists():
            raise OutputError(f"{out}: folder is not empty and is not an optkit nightly report; pass an empty or new folder")


def write_nightly_report(
    db_path: str | Path,
    out_dir: str | Path,
    *,
    window: int = 5,
    metric: str = "latency_p50_ms",
    min_relative: float = 0.10,
    mad_k: float = 3.0,
    max_points: int = 60,
) -> dict[str, Any]:
    """Assess every series in the history and write index.html, nightly.md, nightly.json, plots/.

    Returns {regressions, insufficient, ok, html, md, json, plots} with paths as strings
    pointing into the final out_dir. `max_points` bounds each trend plot to recent runs.
    """
    out = Path(out_dir)
    # Inputs first, then the output folder: a bad --history creates nothing on disk.
    findings = history.assess(db_path, window=window, metric=metric, min_relative=min_relative, mad_k=mad_k)
    points = history.series_points(db_path, metric)
    run_list = history.runs(db_path)
    _check_out_dir(out)

    # outputs.staged: staging folder next to out, one writer (lock), one rename at the end.
    with staged(out, overwrite=True) as staging:
        (staging / "plots").mkdir()
        series_ctx = []
        for f in findings:
            key = tuple(f["series"][k] for k in history.SERIES_FIELDS)
            pts = points[key][-max_points:]
            name = _slug(key) + ".png"
            _plot(pts, f, staging / "plots" / name, window=window, min_relative=min_relative,
                  mad_k=mad_k, metric=metric)
            png = (staging / "plots" / name).read_bytes()
            series_ctx.append({
                "finding": f,
                "label": _label(f["series"]),
                "plot_name": name,
                "plot_b64": base64.b64encode(png).decode("ascii"),
                "n_points": len(pts),
            })
        # Regressions first, then series that cannot be judged yet, then the rest.
        order = {"regression": 0, "not enough history": 1, "ok": 2}
        series_ctx.sort(key=lambda s: (order.get(s["finding"]["status"], 3), s["label"]))
        regressions = [f for f in findings if f["status"] == "regression"]
        insufficient = [f for f in findings if f["status"] == "not enough history"]
        ok = [f for f in findings if f["status"] == "ok"]
        latest_run = run_list[-1] if run_list else None
        ctx = {
            "generated": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "db_path": str(db_path),
            "metric": metric,
            "window": window,
            "min_relative": min_relative,
            "mad_k": mad_k,
            "n_runs": len(run_list),
            "latest_run": latest_run,
            "series": series_ctx,
            "regressions": regressions,
            "insufficient": insufficient,
            "ok": ok,
        }
        (staging / "index.html").write_text(_render_html(ctx), encoding="utf-8")
        (staging / "nightly.md").write_text(_markdown(ctx), encoding="utf-8")
        summary = {k: ctx[k] for k in ("generated", "db_path", "metric", "window", "min_relative", "mad_k", "n_runs")}
        summary.update(regressions=regressions, insufficient=insufficient, ok=ok)
        (staging / "nightly.json").write_text(json.dumps(summary, indent=2, default=str), encoding="utf-8")
        (staging / MARKER).write_text("written by optkit report nightly; safe to replace\n", encoding="utf-8")

    return {
        "regressions": regressions,
        "insufficient": insufficient,
        "ok": ok,
        "html": str(out / "index.html"),
        "md": str(out / "nightly.md"),
        "json": str(out / "nightly.json"),
        "plots": [str(out / "plots" / s["plot_name"]) for s in series_ctx],
    }
