"""A real headless browser for report pages: Debian's chromium driven by Playwright (both optional).

Used by the report-page test (renders, chart draws, no console errors, no network request) and by
`python -m toolkit.output.screenshots` (the committed example screenshots). Playwright's own browser
download needs a network this project does not have, so it is pointed at the system chromium.
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
from pathlib import Path
from typing import Iterator

from toolkit.core.errors import BackendUnavailable

# no GPU, no sandbox (root in CI), and nothing that phones home: the page must work offline
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run"]


def chromium_path() -> str | None:
    for name in (os.environ.get("OPTKIT_CHROMIUM"), "chromium", "chromium-browser", "/usr/bin/chromium"):
        if name and (found := shutil.which(name)):
            return found
    return None


def unavailable_reason() -> str | None:
    """Why no browser check can run here, or None."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright package is not installed (pip install -e '.[dev]')"
    if chromium_path() is None:
        return "no chromium executable (apt-get install chromium, or set OPTKIT_CHROMIUM)"
    return None


@dataclasses.dataclass
class PageLoad:
    page: object                  # playwright.sync_api.Page
    console_errors: list[str]
    network_requests: list[str]   # every request that was not file:, data: or about:


@contextlib.contextmanager
def open_page(html: Path, width: int = 1280, height: int = 900) -> Iterator[PageLoad]:
    """Load a local page in headless chromium at `width` CSS pixels; network requests are recorded and refused."""
    if (why := unavailable_reason()) is not None:
        raise BackendUnavailable(f"{html}: cannot open it in a browser: {why}")
    from playwright.sync_api import sync_playwright

    errors: list[str] = []
    remote: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_FLAGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))

            def route(r):
                if r.request.url.split(":", 1)[0] in ("file", "data", "about", "blob"):
                    return r.continue_()
                remote.append(r.request.url)
                return r.abort()

            page.route("**/*", route)
            page.goto(Path(html).resolve().as_uri(), wait_until="load")
            yield PageLoad(page, errors, remote)
        finally:
            browser.close()


def screenshot(html: Path, png: Path, width: int, height: int = 1400) -> Path:
    """The top `height` pixels of `html` at `width` CSS pixels, once the trade-off chart has drawn.

    Not the full page: the top (selection, chart, candidates) is what a screenshot is for, and it stays small.
    """
    with open_page(html, width=width, height=height) as load:
        load.page.wait_for_selector("#tradeoff-chart .scatterlayer .point", timeout=15000)
        png.parent.mkdir(parents=True, exist_ok=True)
        load.page.screenshot(path=str(png), full_page=False)
    return png
