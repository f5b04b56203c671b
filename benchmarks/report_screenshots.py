"""Regenerate the example report screenshots: reports/examples/report-1280.png and report-400.png.

    python benchmarks/report_screenshots.py               # runs the built-in demo (compress --device jetson)
    python benchmarks/report_screenshots.py runs/<id>     # or shots of an existing run's report

Needs chromium (apt-get install chromium) and playwright (the dev extra). No network.
"""
from __future__ import annotations

import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "reports" / "examples"


def main(argv: list[str]) -> None:
    import toolkit
    from toolkit.output.browser import screenshot

    with tempfile.TemporaryDirectory() as tmp:
        run = Path(argv[0]) if argv else toolkit.compress(None, device="jetson", out=Path(tmp) / "demo").run_dir
        page = run / "report" / "index.html"
        for width, height in ((1280, 1500), (400, 1800)):
            png = screenshot(page, OUT / f"report-{width}.png", width, height)
            print(f"{png.relative_to(ROOT)}: {png.stat().st_size // 1024} KB")


if __name__ == "__main__":
    main(sys.argv[1:])
