"""Report section: training curves of every training pass (distill, QAT) and their ablations.

Reads what the passes recorded in candidate.info (curves, best epoch, the no-KD ablation, the PTQ
candidate a QAT run started from); renders it, never computes it.
"""
from __future__ import annotations

from pathlib import Path

from toolkit.output.sections.registry import register_section
from toolkit.output.style import fmt, pyplot, save

def _training_rows(report: dict) -> list[dict]:
    return [r for r in report.get("candidates", []) if isinstance(r.get("info"), dict) and r["info"].get("curves")]


def plot_curves(rows: list[dict], path: Path) -> None:
    plt = pyplot()

    fig, (ax_l, ax_f) = plt.subplots(1, 2, figsize=(11, 4.2))
    for r in rows:
        c = r["info"]["curves"]
        line = ax_l.plot(c["epoch"], c["train_loss"], marker=".", label=r["id"])[0]
        ax_f.plot(c["epoch"], c["val_macro_f1"], marker=".", color=line.get_color(), label=r["id"])
        ab = r["info"].get("ablation")
        if ab:
            ax_l.plot(ab["curves"]["epoch"], ab["curves"]["train_loss"], ls="--", color=line.get_color(),
                      label=f"{r['id']} without KD")
            ax_f.plot(ab["curves"]["epoch"], ab["curves"]["val_macro_f1"], ls="--", color=line.get_color(),
                      label=f"{r['id']} without KD")
        be = r["info"].get("best_epoch")
        if be:
            ax_f.axvline(be, color=line.get_color(), lw=0.8, alpha=0.5)
    ax_l.set_title("training loss per epoch")
    ax_l.set_xlabel("epoch")
    ax_l.set_yscale("log")
    ax_f.set_title("validation macro-F1 per epoch (vertical line: best epoch, kept)")
    ax_f.set_xlabel("epoch")
    for ax in (ax_l, ax_f):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    save(fig, path)


@register_section("training")
def training_section(report: dict, folder: Path) -> dict | None:
    """Training curves (distill, qat) and ablations: KD vs no KD, PTQ vs QAT."""
    import html as html_mod

    rows = _training_rows(report)
    if not rows:
        return None
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    plot_curves(rows, folder / "training_curves.png")
    by_id = {r["id"]: r for r in report.get("candidates", [])}
    tables: list[tuple[str, list[str], list[list[str]]]] = []

    kd_rows = []
    for r in rows:
        i = r["info"]
        if i.get("training") != "distill":
            continue
        ab = i.get("ablation") or {}
        kd_f1, plain_f1 = i.get("best_val_macro_f1"), ab.get("best_val_macro_f1")
        delta = None if plain_f1 is None else kd_f1 - plain_f1
        kd_rows.append([r["id"], f"{i.get('student_params')} / {i.get('teacher_params')} ({fmt(i.get('param_ratio'), 3)})",
                        fmt(i.get("teacher_val_macro_f1")), fmt(plain_f1), fmt(kd_f1),
                        "—" if delta is None else f"{delta:+.4f}", fmt(r["metrics"].get("macro_f1"))])
    if kd_rows:
        tables.append(("Distillation: the same student trained with and without KD (validation macro-F1, best epoch)",
                       ["student", "params student / teacher", "teacher val F1", "no KD val F1", "KD val F1",
                        "KD − no KD", "student test F1"], kd_rows))

    q_rows = []
    for r in rows:
        i = r["info"]
        if i.get("training") != "qat":
            continue
        ptq = by_id.get(i.get("ptq_candidate") or "")
        for tag, row in (("PTQ", ptq), ("QAT", r)):
            if row is None:
                continue
            m = row["metrics"]
            q_rows.append([tag, row["id"], fmt(m.get("macro_f1")), fmt(m.get("ece")), fmt(m.get("size_mb"), 3),
                           fmt(m.get("latency_p95_ms"), 4)])
    if q_rows:
        tables.append(("PTQ vs QAT (test split; latency measured on this host, batch 1)",
                       ["method", "candidate", "test macro-F1", "ECE", "size MB", "p95 ms"], q_rows))

    md = ["Per-epoch training loss and validation macro-F1 of every training pass (dashed: the no-KD ablation). "
          "The weights of the best validation epoch are kept.", "", "![training curves](training_curves.png)", ""]
    htm = ["<p>Per-epoch training loss and validation macro-F1 of every training pass (dashed: the no-KD ablation). "
           "The weights of the best validation epoch are kept.</p>"]
    for title, head, body in tables:
        md += [f"**{title}**", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        md += ["| " + " | ".join(b) + " |" for b in body]
        md.append("")
        htm.append(f"<p><b>{html_mod.escape(title)}</b></p><table><tr>" +
                   "".join(f"<th>{html_mod.escape(h)}</th>" for h in head) + "</tr>" +
                   "".join("<tr>" + "".join(f"<td>{html_mod.escape(c)}</td>" for c in b) + "</tr>" for b in body) +
                   "</table>")
    return {"title": "Training: curves and ablations", "markdown": "\n".join(md), "html": "\n".join(htm),
            "plots": {"training_curves": "training_curves.png"}}
