"""Nightly report: files, embedded plots, regressions surfaced, atomic replace."""
from __future__ import annotations

import base64
import subprocess
import sys
from pathlib import Path

import pytest

from toolkit.output import nightly
from toolkit.core.errors import ConfigError, OutputError

from tests.test_history import make_history

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def slow_db(tmp_path):
    db = tmp_path / "bench.db"
    make_history(db, [6.5, 6.7, 6.4, 13.0])                           # regression
    make_history(db, [2.0, 2.1, 1.9, 2.0], batch=8)                   # ok
    make_history(db, [3.0], backend="openvino", precision="bf16")     # not enough history
    return db


def test_report_files_exist_and_html_embeds_the_plots(slow_db, tmp_path):
    out = tmp_path / "nightly"
    res = nightly.write_nightly_report(slow_db, out)
    assert Path(res["html"]) == out / "index.html" and Path(res["md"]) == out / "nightly.md"
    for key in ("html", "md", "json"):
        assert Path(res[key]).is_file()
    assert len(res["plots"]) == 3
    html = Path(res["html"]).read_text()
    assert html.count("data:image/png;base64,") == 3
    for plot in res["plots"]:
        data = Path(plot).read_bytes()
        assert data.startswith(PNG_MAGIC)
        assert base64.b64encode(data).decode() in html       # the very same image, embedded
    assert "<script" not in html and "http" not in html.split("<body>")[1]  # self-contained
    md = Path(res["md"]).read_text()
    assert "regression" in md and "plots/" in md


def test_regressions_and_insufficient_are_returned(slow_db, tmp_path):
    res = nightly.write_nightly_report(slow_db, tmp_path / "nightly")
    assert [f["series"]["batch"] for f in res["regressions"]] == [1]
    assert res["regressions"][0]["ratio"] == pytest.approx(2.0, rel=0.01)
    assert [f["series"]["backend"] for f in res["insufficient"]] == ["openvino"]
    assert len(res["ok"]) == 1
    html = Path(res["html"]).read_text()
    assert "1 regression(s)" in html and "not enough history" in html


def test_clean_history_has_no_regressions(tmp_path):
    db = tmp_path / "bench.db"
    make_history(db, [6.5, 6.7, 6.4])
    res = nightly.write_nightly_report(db, tmp_path / "nightly")
    assert res["regressions"] == [] and res["insufficient"] == []


def test_nothing_half_written(slow_db, tmp_path, monkeypatch):
    out = tmp_path / "nightly"
    first = nightly.write_nightly_report(slow_db, out)
    before = Path(first["html"]).read_text()

    def boom(ctx):
        raise RuntimeError("template exploded")

    monkeypatch.setattr(nightly, "_render_html", boom)
    with pytest.raises(RuntimeError):
        nightly.write_nightly_report(slow_db, out)
    assert Path(first["html"]).read_text() == before                 # last good report intact
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bench.db", "nightly"]  # no staging left


def test_rewrite_replaces_previous_report(slow_db, tmp_path):
    out = tmp_path / "nightly"
    nightly.write_nightly_report(slow_db, out)
    (out / "plots" / "stale.png").write_bytes(b"old")
    nightly.write_nightly_report(slow_db, out)
    assert not (out / "plots" / "stale.png").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bench.db", "nightly"]


def test_refuses_a_foreign_non_empty_folder(slow_db, tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "thesis.tex").write_text("precious")
    with pytest.raises(OutputError, match="not empty"):
        nightly.write_nightly_report(slow_db, out)
    assert (out / "thesis.tex").read_text() == "precious"


def test_missing_history_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="no such history"):
        nightly.write_nightly_report(tmp_path / "none.db", tmp_path / "nightly")
    assert not (tmp_path / "nightly").exists()


def test_import_is_lean():
    code = ("import sys, toolkit.output.nightly, toolkit.output.history;"
            "bad = [m for m in ('matplotlib','jinja2','onnxruntime','openvino','torch') if m in sys.modules];"
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parent.parent, check=True)
