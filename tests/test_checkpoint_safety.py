"""No checkpoint runs code by default: a canary .pt2 per route (compress, bench, calibrate, distill, verify,
the torch Session), the inspector against every vector torch 2.13's loader has, and the demo-cache hash."""
from __future__ import annotations

import json
import pickle
import re
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from toolkit.backends.pt2_safety import pt2_problems
from toolkit.intake.safety import check_hf_folder
from toolkit.cli.app import app
from toolkit.core.errors import CheckpointError, UnsafeCheckpoint

runner = CliRunner()


class _Canary:
    """Unpickling this creates the file: the proof that a checkpoint ran code."""

    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def _export(path: Path) -> Path:
    """A real torch.export archive of real layers, on the digits input (1, 8, 8)."""
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Flatten(),
                                torch.nn.Linear(4 * 64, 10)).eval()
    ep = torch.export.export(model, (torch.randn(2, 1, 8, 8),),
                             dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=4096)},), strict=False)
    torch.export.save(ep, str(path))
    return path


def _rewrite(src: Path, dst: Path, edit) -> Path:
    """Copy a .pt2 with its entries (names relative to the archive's root folder) edited in a dict."""
    with zipfile.ZipFile(src) as z:
        root = z.namelist()[0].split("/")[0]
        files = {n[len(root) + 1:]: z.read(n) for n in z.namelist()}
    edit(files)
    with zipfile.ZipFile(dst, "w", zipfile.ZIP_STORED) as z:
        for name, blob in files.items():
            z.writestr(f"{root}/{name}", blob)
    return dst


def _pickled_weight(canary: Path):
    def edit(files):
        cfg = json.loads(files["data/weights/model_weights_config.json"])
        entry = next(iter(cfg["config"].values()))
        entry["use_pickle"] = True  # torch then calls torch.load(weights_only=False) on the entry
        files["data/weights/model_weights_config.json"] = json.dumps(cfg).encode()
        files["data/weights/" + entry["path_name"]] = pickle.dumps(_Canary(str(canary)))
    return edit


def _opaque_constant(canary: Path):
    def edit(files):
        cfg = json.loads(files["data/constants/model_constants_config.json"])
        cfg["config"]["evil"] = {"path_name": "opaque_obj_0", "is_param": False, "use_pickle": True, "tensor_meta": None}
        files["data/constants/model_constants_config.json"] = json.dumps(cfg).encode()
        files["data/constants/opaque_obj_0"] = pickle.dumps(_Canary(str(canary)))  # torch: pickle.loads
    return edit


def _guards_code(canary: Path):
    def edit(files):
        program = json.loads(files["models/model.json"])
        program["guards_code"] = [f"open({str(canary)!r}, 'w') is not None"]  # exec'd by ExportedProgram.module()
        files["models/model.json"] = json.dumps(program).encode()
    return edit


def _sample_inputs(canary: Path):
    def edit(files):  # torch retries these with weights_only=False when the safe load fails
        files["data/sample_inputs/model.pt"] = pickle.dumps(_Canary(str(canary)))
    return edit


def _sympy_expr(canary: Path):
    def edit(files):
        text = files["models/model.json"].decode()
        start = text.index('"expr_str": "') + len('"expr_str": "')
        end = text.index('"', start)
        evil = f"Symbol('s0') + 0*len(str(open({str(canary)!r}, 'w')))"  # sympify eval()s it
        files["models/model.json"] = (text[:start] + json.dumps(evil)[1:-1] + text[end:]).encode()
    return edit


VECTORS = {"pickled-weight": _pickled_weight, "opaque-constant": _opaque_constant, "guards-code": _guards_code,
           "sample-inputs": _sample_inputs, "sympy-expr": _sympy_expr}


@pytest.fixture(scope="module")
def base_pt2(tmp_path_factory) -> Path:
    return _export(tmp_path_factory.mktemp("pt2") / "good.pt2")


@pytest.fixture()
def armed(tmp_path, base_pt2):
    """armed(kind) -> (the canary .pt2, the canary file path that must never appear)."""
    def make(kind: str = "pickled-weight") -> tuple[Path, Path]:
        canary = tmp_path / f"CANARY-{kind}"
        return _rewrite(base_pt2, tmp_path / f"evil-{kind}.pt2", VECTORS[kind](canary)), canary
    return make


@pytest.fixture(scope="module")
def data_npz(tmp_path_factory) -> Path:
    from toolkit.intake.demo import digits_dataset

    d = digits_dataset()
    path = tmp_path_factory.mktemp("data") / "digits.npz"
    np.savez(path, x=np.concatenate([d.val.inputs["x"], d.test.inputs["x"]]), y=np.concatenate([d.val.y, d.test.y]))
    return path


def _refused(result, path: Path, canary: Path) -> None:
    out = result.output.strip()
    assert result.exit_code not in (0, None), out
    assert not canary.exists(), "the checkpoint ran code"
    assert str(path) in out and "--trust-checkpoint" in out, out
    # one error line; optkit's own timestamped progress lines ("  0.0s start · ...") may precede it
    said = [ln for ln in out.splitlines() if ln.strip() and not re.match(r"^\s*\d+\.\ds ", ln)]
    assert len(said) == 1 and said[0].startswith("error:"), out


# --------------------------------------------------------------------------- the fixtures are live
@pytest.mark.parametrize("kind", sorted(VECTORS))
def test_each_vector_runs_code_in_plain_torch(armed, kind):
    """Without optkit's inspector torch.export.load (+ .module()) does run the payload: the tests below mean something."""
    path, canary = armed(kind)
    try:
        torch.export.load(str(path)).module()(torch.randn(2, 1, 8, 8))  # guards run on the first call
    except Exception:  # noqa: BLE001 - the payload fires before torch notices anything is off
        pass
    assert canary.exists(), f"{kind}: this torch no longer runs the payload; the fixture is not armed"


@pytest.mark.parametrize("kind", sorted(VECTORS))
def test_inspector_refuses_every_vector(armed, kind):
    path, canary = armed(kind)
    assert pt2_problems(path.read_bytes())
    from toolkit.backends.torch import load_pt2

    with pytest.raises(UnsafeCheckpoint) as err:
        load_pt2(path)
    assert not canary.exists()
    assert str(path) in str(err.value) and "--trust-checkpoint" in str(err.value)


# --------------------------------------------------------------------------- one test per route
@pytest.mark.parametrize("kind", ["pickled-weight", "opaque-constant"])
def test_compress_refuses(armed, data_npz, tmp_path, kind):
    path, canary = armed(kind)
    r = runner.invoke(app, ["compress", str(path), "--data", str(data_npz), "--device", "x86-avx512",
                            "--out", str(tmp_path / "run")])
    _refused(r, path, canary)


@pytest.mark.parametrize("kind", ["pickled-weight", "opaque-constant"])
def test_bench_refuses(armed, kind):
    path, canary = armed(kind)
    _refused(runner.invoke(app, ["bench", str(path), "--device", "x86-avx512"]), path, canary)


def test_calibrate_refuses(armed, data_npz, tmp_path):
    path, canary = armed()
    _refused(runner.invoke(app, ["calibrate", str(path), "--data", str(data_npz), "--out", str(tmp_path / "cal")]),
             path, canary)


def test_distill_refuses(armed, data_npz, tmp_path):
    path, canary = armed("opaque-constant")
    r = runner.invoke(app, ["distill", str(path), "--data", str(data_npz), "--epochs", "1", "--out", str(tmp_path / "d")])
    _refused(r, path, canary)


def test_torch_session_refuses(armed):
    from toolkit.backends import open_session
    from toolkit.core.candidate import Candidate

    path, canary = armed()
    cand = Candidate(id="evil", path=path, format="torch", precision="fp32", backend="torch", lineage=("given",),
                     runtime_options={"trust_checkpoint": True})  # an option on disk cannot grant trust
    with pytest.raises(UnsafeCheckpoint, match="--trust-checkpoint"):
        with open_session(cand, threads=1):
            pass
    assert not canary.exists()


@pytest.fixture(scope="module")
def torch_bundle(tmp_path_factory, demo_model) -> Path:
    """A real bundle whose model is a .pt2 (baseline-only compress of the demo)."""
    tmp = tmp_path_factory.mktemp("bundle")
    recipe = tmp / "base.yaml"
    recipe.write_text("name: base\ncalibration_size: 32\nsteps: []\n")
    device = tmp / "loose.yaml"  # a busy shared host must not fail the latency budget: selection is not under test
    text = (Path(__file__).resolve().parent.parent / "devices" / "x86-avx512.yaml").read_text()
    device.write_text(text.replace("latency_p95_ms: 10\n", "latency_p95_ms: 100000\n"))
    r = runner.invoke(app, ["compress", "--recipe", str(recipe), "--device", str(device), "--out", str(tmp / "run")])
    assert r.exit_code == 0, r.output
    return tmp / "run" / "bundle"


def _reseal(bundle: Path, model_file: Path, blob: bytes) -> None:
    """What an attacker shipping a bundle does: swap the model and make every hash in the manifest agree."""
    import hashlib

    model_file.write_bytes(blob)
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["sha256"][model_file.relative_to(bundle).as_posix()] = hashlib.sha256(blob).hexdigest()
    try:
        from toolkit.output.manifest import seal
    except ImportError:  # a manifest without a digest of its own
        def seal(m):
            return m
    (bundle / "manifest.json").write_text(json.dumps(seal(manifest), indent=2))


def test_verify_of_a_bundle_refuses(torch_bundle, armed, tmp_path):
    import shutil

    assert runner.invoke(app, ["verify", str(torch_bundle)]).exit_code == 0  # optkit's own .pt2 verifies untrusted
    bundle = tmp_path / "bundle"
    shutil.copytree(torch_bundle, bundle)
    model = next((bundle / "model").glob("*.pt2"))
    path, canary = armed()
    _reseal(bundle, model, path.read_bytes())
    r = runner.invoke(app, ["verify", str(bundle)])
    _refused(r, model, canary)


# --------------------------------------------------------------------------- what must still load
def test_a_normal_export_loads_untrusted(base_pt2):
    from toolkit.intake.checkpoints import load
    from toolkit.backends.torch import load_pt2

    assert pt2_problems(base_pt2.read_bytes()) == []
    out = load_pt2(base_pt2).module()(torch.randn(3, 1, 8, 8))
    assert tuple(out.shape) == (3, 10)
    assert load(base_pt2).kind == "torch"


def test_optkit_quantized_pt2_loads_untrusted(demo_ctx):
    """The PT2E int8 program optkit writes (output: torch) is data-only and loads without trust."""
    from toolkit.backends.torch import load_pt2
    from toolkit.passes.quantize_pt2e import save_quantized, torch_module

    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
    import torchao.quantization.pt2e.quantizer.x86_inductor_quantizer as xiq

    ctx, baseline = demo_ctx
    assert pt2_problems(baseline.path.read_bytes()) == []
    quantizer = xiq.X86InductorQuantizer().set_global(xiq.get_default_x86_inductor_quantization_config())
    from toolkit.passes.export import export_program

    prepared = prepare_pt2e(export_program(torch_module(baseline), ctx).module(), quantizer)
    prepared(torch.from_numpy(ctx.data.val.inputs["x"][:32]))
    path = save_quantized(convert_pt2e(prepared), ctx, ctx.folder("pt2e-safety"), "torch")
    assert pt2_problems(path.read_bytes()) == []
    logits = load_pt2(path).module()(torch.from_numpy(ctx.data.val.inputs["x"][:4]))
    assert tuple(logits.shape) == (4, 10)


def test_trust_is_explicit_and_carried(armed, tmp_path):
    """--trust-checkpoint loads it (the payload runs: that is what trust means); a derived candidate keeps the flag."""
    from toolkit.core.candidate import Candidate
    from toolkit.backends.torch import load_pt2

    path, canary = armed("sample-inputs")
    with pytest.raises(CheckpointError):  # the payload returns a file object, not tensors: torch then fails
        load_pt2(path, trust=True)
    assert canary.exists()
    cand = Candidate(id="c", path=path, format="torch", precision="fp32", backend="torch", lineage=(), trust_checkpoint=True)
    assert cand.derive(id="d", step="x").trust_checkpoint is True


def test_record_on_disk_never_grants_trust(tmp_path):
    from toolkit.core.candidate import Candidate
    from toolkit.pipeline.run import _read_entry, _write_entry

    folder = tmp_path / "step"
    folder.mkdir()
    (folder / "model.pt2").write_bytes(b"x")
    made = Candidate(id="c", path=folder / "model.pt2", format="torch", precision="fp32", backend="torch",
                     lineage=("baseline",), trust_checkpoint=True)
    _write_entry(folder, made, "k")
    assert _read_entry(folder, "k", folder).trust_checkpoint is False


# --------------------------------------------------------------------------- more vectors, refused by the inspector
def _program_edit(fn):
    def edit(files):
        program = json.loads(files["models/model.json"])
        fn(program)
        files["models/model.json"] = json.dumps(program).encode()
    return edit


def _add_entry(name: str, blob: bytes = b"\0"):
    def edit(files):
        files[name] = blob
    return edit


def _set_target(program):
    program["graph_module"]["graph"]["nodes"][0]["target"] = "torch.os.system"


def _inject_name(program):
    spec = program["graph_module"]["signature"]["input_specs"][0]
    spec["parameter"]["parameter_name"] = 'x"),getattr(__import__("os"),"system")("id"),getattr(self,"y'


@pytest.mark.parametrize("name,edit,words", [
    ("operator", _program_edit(_set_target), "not an operator"),
    ("fx-name", _program_edit(_inject_name), "generated code"),
    ("aoti", _add_entry("data/aotinductor/model/model.so"), "AOTInductor"),
    ("custom-obj", _add_entry("data/constants/custom_obj_0"), "torchbind"),
    ("legacy-weights", _add_entry("data/weights/model.pt"), "legacy pickled"),
    ("unknown", _add_entry("code/__torch__.py"), "unknown entry"),
])
def test_inspector_refuses_other_vectors(base_pt2, tmp_path, name, edit, words):
    path = _rewrite(base_pt2, tmp_path / f"{name}.pt2", edit)
    problems = pt2_problems(path.read_bytes())
    assert any(words in p for p in problems), problems


def test_not_an_archive_is_a_checkpoint_error(tmp_path):
    from toolkit.backends.torch import load_pt2

    bad = tmp_path / "junk.pt2"
    bad.write_bytes(b"not a zip")
    with pytest.raises(CheckpointError, match="junk.pt2"):
        load_pt2(bad)


def test_duplicate_entries_are_refused(base_pt2, tmp_path):
    import warnings

    dup = tmp_path / "dup.pt2"
    with zipfile.ZipFile(base_pt2) as zin, zipfile.ZipFile(dup, "w") as zout, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for n in zin.namelist():
            zout.writestr(n, zin.read(n))
        zout.writestr(zin.namelist()[0], b"other")
    with pytest.raises(CheckpointError, match="twice"):
        pt2_problems(dup.read_bytes())


# --------------------------------------------------------------------------- other formats
def test_pickled_pt_and_torchscript_are_refused(tmp_path):
    from toolkit.intake.checkpoints import load

    canary = tmp_path / "CANARY-pt"
    torch.save({"w": _Canary(str(canary))}, tmp_path / "evil.pt")
    with pytest.raises(UnsafeCheckpoint, match="--trust-checkpoint"):
        load(tmp_path / "evil.pt", factory="toolkit.intake.demo:digits_cnn")
    assert not canary.exists()
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), str(tmp_path / "ts.pt"))
    with pytest.raises(UnsafeCheckpoint, match="TorchScript"):
        load(tmp_path / "ts.pt")


def test_hf_folder_check_and_folder_message(tmp_path):
    from toolkit.intake.checkpoints import load

    folder = tmp_path / "hf"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "bert"}))
    (folder / "model.safetensors").write_bytes(b"")
    assert check_hf_folder(folder) == []
    (folder / "config.json").write_text(json.dumps({"auto_map": {"AutoModel": "modeling_x.X"}}))
    (folder / "modeling_x.py").write_text("import os\n")
    (folder / "pytorch_model.bin").write_bytes(b"")
    with pytest.raises(UnsafeCheckpoint, match="auto_map.*and 2 more.*--trust-checkpoint"):
        check_hf_folder(folder)
    assert len(check_hf_folder(folder, trust=True)) == 3
    with pytest.raises(UnsafeCheckpoint, match="auto_map.*--trust-checkpoint") as err:  # intake runs the same check
        load(folder)
    assert "\n" not in str(err.value)
    plain = tmp_path / "plain"
    plain.mkdir()
    with pytest.raises(CheckpointError, match="folder without config.json.*one checkpoint file") as err:
        load(plain)
    assert "\n" not in str(err.value)


# --------------------------------------------------------------------------- item 8: the demo cache
def test_demo_cache_is_verified_by_hash(demo_model, capsys):
    from toolkit.intake.demo import _record_path, demo_checkpoint

    path = Path(demo_checkpoint()[0])
    good = path.read_bytes()
    assert json.loads(_record_path(path).read_text())["sha256"]
    # A foreign file with a valid safetensors layout: only the hash tells it apart.
    from safetensors.torch import save_file

    from toolkit.intake.demo import digits_cnn

    save_file({k: torch.zeros_like(v).contiguous() for k, v in digits_cnn().state_dict().items()}, str(path))
    said: list[str] = []
    again = Path(demo_checkpoint(log=said.append)[0])
    assert again == path and said and "does not match its recorded sha256" in said[0] and "rebuilt" in said[0]
    assert "evicted and rebuilt" in capsys.readouterr().err
    rebuilt = path.read_bytes()
    from safetensors.torch import load

    assert any(v.abs().sum() > 0 for v in load(rebuilt).values())  # the trained weights, not the zeros
    assert rebuilt == good or len(rebuilt) == len(good)
    said.clear()
    demo_checkpoint(log=said.append)
    assert said == []  # a verified entry is reused silently
