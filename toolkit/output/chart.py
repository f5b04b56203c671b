"""The report page's interactive trade-off chart: Plotly, with plotly.js inlined so the page works offline.

One point per candidate: x = the run's speed key (the one selection used), y = size on disk. Hover gives
id, macro-F1, ΔF1, measured p95, the speed value and size; the selection and the Pareto front are their
own marked traces (legend), so nothing rests on colour alone and no text labels overlap. The static
PNG for report.md is report.plot_tradeoff.
"""
from __future__ import annotations

STATUS = (  # (key, legend name, marker) - drawn in this order, selection on top
    ("other", "meets budgets, not chosen", dict(symbol="circle", size=10, color="#4C78A8")),
    ("fails", "fails a budget or gate", dict(symbol="x", size=10, color="#9a9a9a")),
    ("front", "Pareto front", dict(symbol="circle", size=14, color="rgba(0,0,0,0)",
                                   line=dict(color="#d62728", width=2.5))),
    ("selected", "selected", dict(symbol="star", size=20, color="#f2b701", line=dict(color="black", width=1))),
)


def status_of(row: dict, selected: str | None) -> list[str]:
    """The traces a candidate appears in: a front member is drawn twice (its base marker and the ring)."""
    tags = ["fails" if not row.get("eligible", True) else "other"]
    if row.get("on_front"):
        tags.append("front")
    if row["id"] == selected:
        tags.append("selected")
    return tags


def _hover(row: dict, speed_key: str, speed_label: str) -> str:
    m = row["metrics"]
    d = m.get("macro_f1_delta")
    delta = "baseline" if not d else f"{d['delta']:+.4f} [{d['low']:+.4f}, {d['high']:+.4f}]"
    lines = [f"<b>{row['id']}</b> ({row['precision']}, {row['backend']})", f"macro-F1 {m['macro_f1']:.4f}",
             f"ΔF1 vs fp32 {delta}", f"p95 {m['latency_p95_ms']:.4g} ms (measured on this host)",
             f"size {m['size_mb']:.3g} MB"]
    if speed_key != "latency_p95_ms" and m.get(speed_key) is not None:
        lines.insert(4, f"{speed_label} {m[speed_key]:.3g} ms")
    return "<br>".join(lines)


def tradeoff_html(rows: list[dict], selected: str | None, speed_key: str, speed_label: str) -> str:
    """A <div> with the chart and plotly.js inlined (no <script src>, no network request)."""
    import plotly.graph_objects as go
    import plotly.io as pio

    shown = [r for r in rows if r["metrics"].get(speed_key) is not None]
    fig = go.Figure()
    for key, name, marker in STATUS:
        pts = [r for r in shown if key in status_of(r, selected)]
        if not pts:
            continue
        fig.add_trace(go.Scatter(
            x=[r["metrics"][speed_key] for r in pts], y=[r["metrics"]["size_mb"] for r in pts], mode="markers",
            name=name, marker=marker, customdata=[r["id"] for r in pts],
            hovertext=[_hover(r, speed_key, speed_label) for r in pts],
            # the ring only frames the point under it: hover belongs to the base marker
            hoverinfo="skip" if key == "front" else "text", hoverlabel=dict(align="left")))
    sizes = [r["metrics"]["size_mb"] for r in shown] or [1.0]
    speeds = [r["metrics"][speed_key] for r in shown] or [1.0]
    # log axes only when the values span a decade; tick labels as plain numbers, never 2×10⁻¹
    axis = dict(exponentformat="none", tickformat="~g", gridcolor="#e5e5e5", zeroline=False)
    log_x = max(speeds) / max(min(speeds), 1e-12) > 10
    log_y = max(sizes) / max(min(sizes), 1e-12) > 10
    fig.update_layout(
        template="plotly_white", autosize=True, height=420, margin=dict(l=60, r=10, t=10, b=50),
        # the axis says what the number is in a few words (it must fit 400 px); the page states the full label
        xaxis=dict(title=dict(text=f"{speed_label.split(' (')[0]}, ms"), type="log" if log_x else "linear", **axis),
        yaxis=dict(title=dict(text="size on disk, MB"), type="log" if log_y else "linear", **axis),
        legend=dict(orientation="h", yanchor="bottom", y=1.0, x=0, font=dict(size=11)),
        hovermode="closest")
    return pio.to_html(fig, include_plotlyjs=True, full_html=False, div_id="tradeoff-chart",
                       config={"displaylogo": False, "responsive": True,
                               "modeBarButtonsToRemove": ["sendDataToCloud", "lasso2d", "select2d"]})
