"""The CLI through Typer's CliRunner: exit codes, one-line errors, --json for machines."""
from __future__ import annotations

import json

from typer.testing import CliRunner

from toolkit.cli.app import app

runner = CliRunner()


def test_devices_list_and_show():
    r = runner.invoke(app, ["devices", "list"])
    assert r.exit_code == 0 and "jetson-orin-nano" in r.stdout
    r = runner.invoke(app, ["devices", "show", "jetson"])  # alias
    assert r.exit_code == 0 and "tensorrt" in r.stdout and "stands in" in r.stdout
    r = runner.invoke(app, ["devices", "show", "jetson-orin-nano", "--json"])
    assert json.loads(r.stdout)["name"] == "jetson-orin-nano"


def test_unknown_device_is_a_one_line_error():
    r = runner.invoke(app, ["devices", "show", "jetsn"])
    assert r.exit_code == 2
    assert "unknown device 'jetsn'" in r.stderr and "jetson-orin-nano" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_recipes_list_and_show():
    r = runner.invoke(app, ["recipes", "list"])
    assert r.exit_code == 0 and "default" in r.stdout
    r = runner.invoke(app, ["recipes", "show", "default", "--json"])
    steps = json.loads(r.stdout)["steps"]
    assert steps[0]["pass"] == "export_onnx"


def test_doctor_json_says_what_runs_here():
    r = runner.invoke(app, ["doctor", "--json"])
    d = json.loads(r.stdout)
    backends = {b["backend"]: b for b in d["backends"]}
    assert backends["onnxruntime"]["ok"] and backends["torch"]["ok"]
    assert not backends["tensorrt"]["ok"] and backends["tensorrt"]["detail"]


def test_compress_json_and_verify(tmp_path):
    out = tmp_path / "run"
    r = runner.invoke(app, ["compress", "--device", "jetson", "--out", str(out), "--json"])
    assert r.exit_code == 0, r.stderr
    report = json.loads(r.stdout)
    assert report["selected"] and len(report["candidates"]) >= 5
    r = runner.invoke(app, ["verify", str(out / "bundle")])
    assert r.exit_code == 0 and "ok" in r.stdout
    # a second run into the same non-empty folder is refused, and leaves it untouched
    before = sorted(p.relative_to(out) for p in out.rglob("*"))
    r = runner.invoke(app, ["compress", "--device", "jetson", "--out", str(out)])
    assert r.exit_code == 2 and "not empty" in r.stderr and "--overwrite" in r.stderr
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == before


def test_compress_recipe_typo_fails_before_compute(tmp_path):
    bad = tmp_path / "r.yaml"
    bad.write_text("name: x\nstepz: []\n")
    r = runner.invoke(app, ["compress", "--recipe", str(bad), "--out", str(tmp_path / "o")])
    assert r.exit_code == 2 and "stepz: unknown key" in r.stderr
    assert not (tmp_path / "o").exists()


def test_verify_missing_bundle(tmp_path):
    r = runner.invoke(app, ["verify", str(tmp_path)])
    assert r.exit_code == 3 and "no manifest.json" in r.stderr
