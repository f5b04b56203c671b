"""The typed run result is report.json's schema, and the published JSON Schema is the current one."""
from __future__ import annotations

import json
from pathlib import Path

from toolkit.core.result import RunReport, json_schema

ROOT = Path(__file__).resolve().parents[1]


def test_published_schema_is_current():
    assert (ROOT / "schemas" / "report.schema.json").read_text() == json_schema(), \
        "regenerate: python -m toolkit.core.result > schemas/report.schema.json"


def test_a_real_report_validates_and_reads_typed(demo_run):
    raw = json.loads((demo_run.run_dir / "report" / "report.json").read_text())
    typed = RunReport.model_validate(raw)
    assert typed.selected == demo_run.selected.id
    assert typed.candidate(typed.baseline).precision == "fp32"
    raw["candidates"][0]["metrics"]["surprise"] = 1  # unknown keys are errors, not silently carried
    try:
        RunReport.model_validate(raw)
    except ValueError as exc:
        assert "surprise" in str(exc)
    else:
        raise AssertionError("an unknown metric key validated")
