"""One look for every page and plot: number formatting, Markdown/HTML tables, the matplotlib setup."""
from __future__ import annotations

import html
from typing import Any


def fmt(v: Any, digits: int = 4) -> str:
    """A number as the reports print it; None is an em dash (not measured), ints and text as they are."""
    if v is None:
        return "—"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def md_table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def html_table(header: list[str], rows: list[list]) -> str:
    e = html.escape
    return ("<table><tr>" + "".join(f"<th>{e(str(h))}</th>" for h in header) + "</tr>"
            + "".join("<tr>" + "".join(f"<td>{e(str(c))}</td>" for c in r) + "</tr>" for r in rows) + "</table>")


def pyplot():
    """matplotlib's pyplot on the file-only Agg backend (reports are written headless, never shown)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save(fig, path, dpi: int = 110) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    pyplot().close(fig)
