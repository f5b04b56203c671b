"""One look for every page and plot: number formatting, Markdown/HTML tables, the matplotlib setup."""
from __future__ import annotations

import html
from typing import Any


def fmt(v: Any, digits: int = 4, *, significant: bool = False) -> str:
    """A number as the reports print it; None is an em dash (not measured), ints and text as they are.

    `significant`: `digits` significant figures (latencies and ratios spanning orders of magnitude,
    e.g. the nightly tables) instead of `digits` decimals; 10^4 and above print whole.
    """
    if v is None:
        return "—"
    if isinstance(v, float):
        if significant:
            return f"{v:.{digits}g}" if abs(v) < 1e4 else f"{v:.0f}"
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


def jinja_env():
    """The one Jinja2 environment for reports/*.j2: strict (a missing field is an error, not a blank), HTML
    pages (*.html, *.html.j2) autoescaped, Markdown as written, with style.fmt as the `fmt` filter."""
    import jinja2

    from toolkit.core.paths import TEMPLATES_DIR

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATES_DIR)),
                             autoescape=lambda name: bool(name) and name.removesuffix(".j2").endswith((".html", ".htm")),
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True,
                             keep_trailing_newline=True)
    env.filters["fmt"] = fmt
    return env


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
