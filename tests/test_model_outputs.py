"""Model outputs and the checkpoint-vs-data check (issue 10, item 4), all before any slow step.

Tiny models built from real torch layers: dict, tuple, softmax and NaN-row heads; ONNX files with
several outputs, int32 inputs, wrong ranks, a custom-op domain, and external data (the pair
torch.onnx.export(..., dynamo=True) writes by default) through compress, every pass and the bundle.
"""
from __future__ import annotations

import re

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
import torch.nn as nn
from onnx import TensorProto, helper, numpy_helper
from typer.testing import CliRunner

from toolkit.intake import checkpoints as intake
from toolkit.intake import model_check
from toolkit.cli.app import app
from toolkit.intake.data import load_npz
from toolkit.core.errors import CheckpointError, DataError, OptkitError
from toolkit.pipeline.compress import _check_model_fits

runner = CliRunner()
N, F, K = 120, 8, 3


def _data(tmp: Path, name: str = "d.npz", **extra) -> Path:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(N, F)).astype(np.float32)
    y = ((x[:, 0] > 0).astype(np.int64) + (x[:, 1] > 0)).astype(np.int64)
    np.savez(tmp / name, x=x, y=y, **extra)
    return tmp / name


class Head(nn.Module):
    """A trained-enough MLP whose forward returns `kind` of output."""

    def __init__(self, kind: str):
        super().__init__()
        self.kind = kind
        self.body = nn.Sequential(nn.Linear(F, 32), nn.ReLU(), nn.Linear(32, K))

    def forward(self, x):
        z = self.body(x)
        if self.kind == "dict":
            return {"hidden": z.relu(), "logits": z}
        if self.kind == "dict-scores":
            return {"hidden": z.relu(), "scores": z}
        if self.kind == "tuple":
            return z, z.relu()
        if self.kind == "probs":
            return torch.softmax(z, dim=1)
        if self.kind == "nan-rows":  # sqrt of a negative: NaN exactly where x0 > 2.5
            return z + 0 * torch.sqrt(2.5 - x[:, :1])
        return z


def _trained(kind: str) -> Head:
    torch.manual_seed(0)
    m = Head(kind)
    x = torch.from_numpy(np.random.default_rng(0).normal(size=(N, F)).astype(np.float32))
    y = ((x[:, 0] > 0).long() + (x[:, 1] > 0).long())
    opt = torch.optim.Adam(m.body.parameters(), 1e-2)
    for _ in range(150):
        opt.zero_grad()
        nn.functional.cross_entropy(m.body(x), y).backward()
        opt.step()
    return m.eval()


def _save_pt2(tmp: Path, kind: str) -> Path:
    m = _trained(kind)
    prog = torch.export.export(m, (torch.zeros(2, F),), dynamic_shapes=({0: torch.export.Dim("batch", max=4096)},))
    path = tmp / f"{kind}.pt2"
    torch.export.save(prog, str(path))
    return path


def _fit(kind: str, tmp: Path, output: str | None = None, data: Path | None = None):
    loaded = intake.LoadedModel(source=f"{kind}-model", kind="torch", sha256="0" * 64, module=_trained(kind))
    return _check_model_fits(loaded, load_npz(data or _data(tmp)), output)


def _cli(*args) -> tuple[int, str]:
    r = runner.invoke(app, [str(a) for a in args])
    if r.exception is not None and not isinstance(r.exception, SystemExit):
        raise r.exception
    return r.exit_code, r.output


def _assert_clean_failure(code: int, out: str, out_dir: Path, *fragments: str, early: bool = True) -> None:
    """Non-zero exit, the error on one line naming the fix, nothing in --out; an early failure prints only that line."""
    assert code != 0, out
    # optkit's own timestamped progress lines ("  0.0s start · ...") are not output of the failure
    lines = [ln for ln in out.strip().splitlines() if ln.strip() and not re.match(r"^\s*\d+\.\ds ", ln)]
    assert lines and lines[-1].startswith("error:"), out
    if early:
        assert len(lines) == 1, out
    for frag in fragments:
        assert frag in lines[-1], out
    assert not out_dir.exists(), "nothing is written for a bad input"


# ----------------------------------------------------------------------------- torch outputs
def test_dict_output_uses_its_logits_key(tmp_path):
    loaded, dataset, _ = _fit("dict", tmp_path)
    z = loaded.module(torch.zeros(4, F))
    assert torch.is_tensor(z) and z.shape == (4, K)
    assert any("output 'logits'" in n for n in loaded.notes)


def test_dict_without_logits_lists_its_outputs_and_output_picks_one(tmp_path):
    with pytest.raises(model_check.ModelOutputError, match=r"outputs \['hidden', 'scores'\].*--output NAME"):
        _fit("dict-scores", tmp_path)
    loaded, _, _ = _fit("dict-scores", tmp_path, output="scores")
    assert loaded.module(torch.zeros(2, F)).shape == (2, K)
    with pytest.raises(model_check.ModelOutputError, match="none is named 'nope'"):
        _fit("dict-scores", tmp_path, output="nope")


def test_tuple_output_needs_a_position(tmp_path):
    with pytest.raises(model_check.ModelOutputError, match=r"tuple of 2 with outputs \['0', '1'\]"):
        _fit("tuple", tmp_path)
    loaded, _, _ = _fit("tuple", tmp_path, output="0")
    assert loaded.module(torch.zeros(2, F)).shape == (2, K)


def test_single_tensor_refuses_a_named_output(tmp_path):
    with pytest.raises(model_check.ModelOutputError, match="single tensor"):
        _fit("plain", tmp_path, output="scores")


def test_probabilities_are_detected_and_become_log_probabilities(tmp_path):
    loaded, _, _ = _fit("probs", tmp_path)
    assert loaded.probabilities and any("probabilities" in n for n in loaded.notes)
    x = torch.randn(5, F)
    with torch.inference_mode():
        logp = loaded.module(x)
        p = loaded.module.inner(x)
    assert torch.allclose(torch.softmax(logp, 1), p, atol=1e-6)  # exact for argmax and temperature scaling
    plain, _, _ = _fit("plain", tmp_path)
    assert not plain.probabilities


def test_nan_rows_in_the_probe_are_counted(tmp_path):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(N, F)).astype(np.float32)
    x[:, 0] = np.clip(x[:, 0], -2, 2)
    x[[0, 2, 4], 0] = 3.0  # 3 rows the model turns into NaN
    y = (x[:, 1] > 0).astype(np.int64) + (x[:, 2] > 0)
    split = np.array(["val"] * 60 + ["test"] * 60)
    np.savez(tmp_path / "nan.npz", x=x, y=y, split=split)
    with pytest.raises(model_check.ModelOutputError, match="NaN/Inf on 3 of 60 validation"):
        _fit("nan-rows", tmp_path, data=tmp_path / "nan.npz")


def test_nan_rows_on_the_test_split_fail_compress_with_nothing_written(tmp_path):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(N, F)).astype(np.float32)
    x[:, 0] = np.clip(x[:, 0], -2, 2)
    x[[70, 80], 0] = 3.0  # only test rows: the probe passes, the baseline's evaluation counts them
    y = (x[:, 1] > 0).astype(np.int64) + (x[:, 2] > 0)
    np.savez(tmp_path / "nan.npz", x=x, y=y, split=np.array(["val"] * 60 + ["test"] * 60))
    recipe = tmp_path / "r.yaml"
    recipe.write_text("name: r\nsteps:\n  - {id: onnx-fp32, pass: export_onnx}\n")
    out = tmp_path / "out"
    code, text = _cli("compress", _save_pt2(tmp_path, "nan-rows"), "--data", tmp_path / "nan.npz", "--recipe", recipe,
                      "--device", "x86-avx512", "--out", out)
    _assert_clean_failure(code, text, out, "NaN/Inf on 2 of 60 test rows", early=False)


def test_output_option_through_the_cli_and_bad_choices_fail_before_compute(tmp_path):
    data = _data(tmp_path)
    pt2 = _save_pt2(tmp_path, "dict-scores")
    out = tmp_path / "out"
    code, text = _cli("compress", pt2, "--data", data, "--device", "x86-avx512", "--out", out)
    _assert_clean_failure(code, text, out, "['hidden', 'scores']", "--output")
    code, text = _cli("calibrate", pt2, "--data", data, "--out", out, "--output", "scores", "--json")
    assert code == 0, text
    assert json.loads(text)["quality"]["macro_f1"] > 0.5


# ----------------------------------------------------------------------------- ONNX inputs and outputs
def _onnx(tmp: Path, name: str, *, in_type=TensorProto.FLOAT, in_shape=("batch", F), outputs=("logits",),
          domain: str = "", softmax: bool = False) -> Path:
    w = numpy_helper.from_array(np.random.default_rng(0).normal(size=(F, K)).astype(np.float32), "w")
    nodes, x = [], "x"
    if in_type != TensorProto.FLOAT:
        nodes.append(helper.make_node("Cast", ["x"], ["xf"], to=TensorProto.FLOAT))
        x = "xf"
    if len(in_shape) == 3:
        nodes.append(helper.make_node("Flatten", [x], ["xflat"]))
        x = "xflat"
    nodes.append(helper.make_node("MatMul", [x, "w"], ["z"]))
    last = "z"
    if domain:
        nodes.append(helper.make_node("Fancy", ["z"], ["zc"], domain=domain))
        last = "zc"
    if softmax:
        nodes.append(helper.make_node("Softmax", [last], ["p"], axis=1))
        last = "p"
    nodes.append(helper.make_node("Identity", [last], [outputs[0]]))
    for extra in outputs[1:]:
        nodes.append(helper.make_node("Relu", ["z"], [extra]))
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", in_type, list(in_shape))],
                              [helper.make_tensor_value_info(o, TensorProto.FLOAT, ["batch", K]) for o in outputs], [w])
    opsets = [helper.make_opsetid("", 18)] + ([helper.make_opsetid(domain, 1)] if domain else [])
    path = tmp / name
    onnx.save(helper.make_model(graph, opset_imports=opsets), str(path))
    return path


def test_custom_op_domain_is_named(tmp_path):
    with pytest.raises(CheckpointError, match="custom operators from domain 'com.acme'"):
        intake.load(_onnx(tmp_path, "c.onnx", domain="com.acme"))


def test_int32_ids_are_cast_when_exact_and_refused_otherwise(tmp_path):
    path = _onnx(tmp_path, "ids.onnx", in_type=TensorProto.INT32)
    ids = np.random.default_rng(0).integers(0, 9, (N, F))
    y = (ids[:, 0] > 4).astype(np.int64) + (ids[:, 1] > 4)
    np.savez(tmp_path / "ids.npz", x=ids, y=y)
    loaded, dataset, mio = _check_model_fits(intake.load(path), load_npz(tmp_path / "ids.npz"))
    assert dataset.val.inputs["x"].dtype == np.int32 and mio.inputs[0].dtype == "int32"
    assert any("cast to the model's int32" in n for n in dataset.notes)
    ids[0, 0] = 2**40
    np.savez(tmp_path / "big.npz", x=ids, y=y)
    with pytest.raises(DataError, match="not every value converts exactly; store 'x' as int32"):
        _check_model_fits(intake.load(path), load_npz(tmp_path / "big.npz"))


def test_float_data_for_an_int_input_and_rank_mismatch_are_data_errors(tmp_path):
    with pytest.raises(DataError, match="is float32 but the model ids.onnx takes int32"):
        _check_model_fits(intake.load(_onnx(tmp_path, "ids.onnx", in_type=TensorProto.INT32)), load_npz(_data(tmp_path)))
    with pytest.raises(DataError, match="has rank 2 .* expects rank 3"):
        _check_model_fits(intake.load(_onnx(tmp_path, "r3.onnx", in_shape=("batch", 2, 4))), load_npz(_data(tmp_path)))
    with pytest.raises(DataError, match="fixed batch of 1"):
        _check_model_fits(intake.load(_onnx(tmp_path, "b1.onnx", in_shape=(1, F))), load_npz(_data(tmp_path)))


def test_onnx_outputs_by_name_and_probabilities(tmp_path):
    data = load_npz(_data(tmp_path))
    multi = _onnx(tmp_path, "m.onnx", outputs=("scores", "hidden"))
    with pytest.raises(model_check.ModelOutputError, match=r"outputs \['scores', 'hidden'\]"):
        _check_model_fits(intake.load(multi), data)
    loaded, _, _ = _check_model_fits(intake.load(multi), data, output="scores")
    assert loaded.onnx_output == "scores"
    model_check.write_onnx_baseline(loaded, tmp_path / "base.onnx")
    assert [o.name for o in onnx.load(str(tmp_path / "base.onnx")).graph.output] == ["scores"]

    probs = _onnx(tmp_path, "p.onnx", softmax=True)
    loaded, _, _ = _check_model_fits(intake.load(probs), data)
    assert loaded.probabilities
    model_check.write_onnx_baseline(loaded, tmp_path / "logp.onnx")
    import onnxruntime as ort

    feeds = {"x": data.val.inputs["x"][:5]}
    p = ort.InferenceSession(str(probs), providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    logp = ort.InferenceSession(str(tmp_path / "logp.onnx"), providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    np.testing.assert_allclose(logp, np.log(np.clip(p, 1e-12, None)), rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------- ONNX external data, end to end
@pytest.fixture(scope="module")
def external_onnx(tmp_path_factory) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("ext")
    m = _trained("plain").body
    with contextlib.redirect_stdout(io.StringIO()):
        torch.onnx.export(m, (torch.zeros(2, F),), str(tmp / "model.onnx"), dynamo=True, input_names=["x"],
                          dynamic_shapes=({0: torch.export.Dim("batch")},))  # the default: external data
    assert (tmp / "model.onnx.data").is_file()
    return tmp / "model.onnx", _data(tmp)


def test_external_data_through_the_default_recipe(tmp_path, external_onnx):
    model, data = external_onnx
    out = tmp_path / "run"
    code, text = _cli("compress", model, "--data", data, "--device", "x86-avx512", "--out", out, "--json")
    assert code == 0, text[-2000:]
    report = json.loads((out / "report" / "report.json").read_text())
    statuses = {p["id"]: p["status"] for p in report["plan"]}
    assert not [i for i, s in statuses.items() if s == "failed"], report["plan"]
    assert {"ort-int8-minmax", "ort-int8-dynamic", "ov-fp32", "nncf-int8", "nncf-onnx-int8"} <= {
        i for i, s in statuses.items() if s in ("built", "cached")}
    assert not report["evaluation_failures"]
    assert sorted(p.name for p in (out / "candidates" / "onnx-fp32").iterdir()) == ["model.onnx", "model.onnx.data"]
    # where this host is the device, the close candidates were timed again side by side (pipeline/retime.py)
    target = [c for c in report["candidates"] if c["measured_on"]["kind"] == "target"]
    retimed = [c for c in report["candidates"] if c["measured_on"].get("schedule", "").startswith("round-robin")]
    if len(target) >= 2:  # ORT fp32 and its int8 variants are always within 3x of each other on this MLP
        assert len(retimed) >= 2, [(c["id"], c["measured_on"]["label"]) for c in target]
    assert not [c for c in retimed if c["measured_on"]["kind"] != "target"]
    for c in retimed:
        on = c["measured_on"]
        assert on["timed_alone"]["latency_p50_ms"] > 0 and "round-robin" in on["label"] and on["rounds"] == 8


def test_external_data_fp16_and_the_bundle_carries_every_file(tmp_path, external_onnx):
    import toolkit

    model, data = external_onnx
    recipe = tmp_path / "r.yaml"
    recipe.write_text("name: r\nsteps:\n  - {id: onnx-fp16, pass: onnx_fp16}\n  - {id: ov-bf16, pass: openvino_ir, "
                      "options: {inference_precision: bf16}}\n")
    r = toolkit.compress(model, data=data, device="jetson-orin-nano", recipe=recipe, out=tmp_path / "j")
    assert {p.id: p.status for p in r.report.plan}["onnx-fp16"] == "built"
    # on a host whose profile has no fp16, only the fp32 baseline is left: the bundle must carry the pair
    r = toolkit.compress(model, data=data, device="x86-avx512", recipe=recipe, out=tmp_path / "x")
    if r.report.selected != "onnx-fp32":
        pytest.skip(f"selected {r.report.selected}; the fp32 pair is not the bundle's model here")
    manifest = json.loads((tmp_path / "x" / "bundle" / "manifest.json").read_text())
    assert manifest["model"]["files"] == ["model/model.onnx", "model/model.onnx.data"]
    assert "model/model.onnx.data" in manifest["sha256"]
    assert toolkit.verify(tmp_path / "x" / "bundle")["ok"]


def test_missing_external_data_is_a_checkpoint_error(tmp_path, external_onnx):
    model, _ = external_onnx
    lone = tmp_path / "lone.onnx"
    lone.write_bytes(model.read_bytes())  # its model.onnx.data is not next to it
    with pytest.raises(CheckpointError, match="external data file model.onnx.data is missing"):
        intake.load(lone)


# ----------------------------------------------------------------------------- order: data before checkpoint
def test_missing_data_is_reported_before_the_checkpoint_is_opened(tmp_path):
    out = tmp_path / "out"
    broken = tmp_path / "broken.pt2"
    broken.write_bytes(b"not an archive")  # opening it would fail: the data's problem must be said first
    code, text = _cli("compress", broken, "--out", out)
    _assert_clean_failure(code, text, out, "no data given; pass --data")
    code, text = _cli("compress", broken, "--data", tmp_path / "nosuch.npz", "--out", out)
    _assert_clean_failure(code, text, out, "nosuch.npz: data file not found")
    bad = tmp_path / "bad.npz"
    np.savez(bad, x=np.random.default_rng(0).random((30, 2), np.float32), y=np.arange(30) % 2, split=np.array(["val", "test", "dev"] * 10))
    code, text = _cli("compress", broken, "--data", bad, "--out", out)
    _assert_clean_failure(code, text, out, "unknown values ['dev']")
    code, text = _cli("compress", tmp_path / "nosuch.pt2", "--data", bad, "--out", out)
    _assert_clean_failure(code, text, out, "checkpoint not found")  # a path that does not exist is said first


def test_every_error_here_is_typed():
    assert issubclass(model_check.ModelOutputError, CheckpointError) and issubclass(CheckpointError, OptkitError)
