"""The report page, as a reader gets it: self-contained, offline, and checked in a real headless browser."""
from __future__ import annotations

import re

import pytest

from toolkit.output.browser import open_page, unavailable_reason

NO_BROWSER = unavailable_reason()


def _outside_scripts(html: str) -> str:
    return re.sub(r"<script\b.*?</script>", "", html, flags=re.S | re.I)


def test_page_is_self_contained(demo_run):
    html = demo_run.report_path.read_text()
    markup = _outside_scripts(html)
    # nothing the page loads comes from the network: no remote script, style, image or frame
    assert not re.search(r"""\b(src|href)\s*=\s*["']?(https?:)?//""", markup, re.I), "remote resource"
    assert not re.search(r"<script[^>]+\bsrc=", html, re.I) and "<link" not in markup
    assert "Plotly.newPlot" in html  # plotly.js itself is inlined
    # provenance once per section, not per row: the host's CPU is named once in the candidates section
    cpu = demo_run.report.host["cpu"]
    assert markup.count(cpu) <= 2, markup.count(cpu)
    # the selected row comes first, the losers' reasons are behind <details>
    rows = re.findall(r"<tr class=\"(sel)?\"><td>([^<]+?)( ●)?</td>", markup)
    assert rows[0][1] == demo_run.report.selected and rows[0][0] == "sel"
    assert markup.count("<details>") >= len(demo_run.candidates) - 1


@pytest.mark.skipif(NO_BROWSER is not None, reason=f"no headless browser: {NO_BROWSER}")
@pytest.mark.parametrize("width", [1280, 400])
def test_page_renders_in_a_real_browser(demo_run, width):
    report = demo_run.report
    key = report.selection.speed_key
    plotted = [c for c in report.candidates if getattr(c.metrics, key, None) is not None]
    with open_page(demo_run.report_path, width=width) as load:
        page = load.page
        page.wait_for_selector("#tradeoff-chart .scatterlayer .point", timeout=20000)
        assert page.title().startswith("optkit")
        assert page.locator("#selected").inner_text().count(report.selected) >= 1
        # the chart drew: an <svg> with one mark per plotted candidate in the base traces, plus the ring(s) and star
        marks = page.locator("#tradeoff-chart svg .scatterlayer .point").count()
        front = sum(1 for c in plotted if c.on_front)
        assert marks == len(plotted) + front + 1, marks
        # hovering the selected star shows its id and numbers
        star = page.locator("#tradeoff-chart .scatterlayer .trace").last.locator(".point").first
        star.hover(force=True)
        page.wait_for_selector("#tradeoff-chart .hovertext", timeout=5000)
        tip = page.locator("#tradeoff-chart .hovertext").first.text_content()
        sel = report.candidate(report.selected)
        here = {c.id for c in plotted if (getattr(c.metrics, key), c.metrics.size_mb)
                == (getattr(sel.metrics, key), sel.metrics.size_mb)}  # candidates drawn at the star's place
        assert any(f"{cid} (" in tip for cid in here) and "macro-F1" in tip and "MB" in tip, tip
        # the first table row is the selection; a loser's reason opens on demand
        first = page.locator("#candidates tbody tr").first
        assert report.selected in first.inner_text()
        details = page.locator("#candidates details").first
        assert not details.evaluate("d => d.open")
        details.locator("summary").click()
        assert details.evaluate("d => d.open")
        # readable at this width: the page itself does not scroll sideways (wide tables scroll in their box)
        assert page.evaluate("document.documentElement.scrollWidth") <= width + 1
        assert load.console_errors == [], load.console_errors
        assert load.network_requests == [], load.network_requests
