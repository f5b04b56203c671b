"""Intake: every supported checkpoint kind loads to the same model; code-carrying files are refused."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from toolkit.intake import checkpoints as intake
from toolkit.core.errors import CheckpointError, UnsafeCheckpoint


def _logits(module, x):
    with torch.inference_mode():
        return module(torch.from_numpy(x)).numpy()


@pytest.fixture(scope="module")
def cnn():
    from toolkit.intake.demo import digits_cnn

    torch.manual_seed(0)
    return digits_cnn().eval()


@pytest.fixture
def x():
    return np.random.default_rng(0).random((4, 1, 8, 8), dtype=np.float32)


def test_safetensors_with_factory(tmp_path, cnn, x):
    from safetensors.torch import save_file

    path = tmp_path / "m.safetensors"
    save_file(cnn.state_dict(), str(path))
    loaded = intake.load(path, factory="toolkit.intake.demo:digits_cnn")
    assert loaded.kind == "torch" and len(loaded.sha256) == 64
    np.testing.assert_array_equal(_logits(loaded.module, x), _logits(cnn, x))


def test_zip_state_dict_loads_weights_only(tmp_path, cnn, x):
    path = tmp_path / "m.pt"
    torch.save({"state_dict": cnn.state_dict()}, path)
    loaded = intake.load(path, factory="toolkit.intake.demo:digits_cnn")
    np.testing.assert_array_equal(_logits(loaded.module, x), _logits(cnn, x))


def test_pt2_archive_carries_its_architecture(tmp_path, cnn, x):
    path = tmp_path / "m.pt2"
    ep = torch.export.export(cnn, (torch.from_numpy(x),), dynamic_shapes=({0: torch.export.Dim("batch")},))
    torch.export.save(ep, str(path))
    loaded = intake.load(path)
    np.testing.assert_allclose(_logits(loaded.module, x), _logits(cnn, x), rtol=1e-5, atol=1e-6)


def test_onnx_loads_and_checks(tmp_path, cnn, x):
    path = tmp_path / "m.onnx"
    torch.onnx.export(cnn, (torch.from_numpy(x),), str(path), input_names=["x"], output_names=["logits"], dynamo=False)
    loaded = intake.load(path)
    assert loaded.kind == "onnx" and loaded.onnx_path == path


def test_state_dict_mismatch_lists_every_key(tmp_path, cnn):
    from safetensors.torch import save_file

    state = dict(cnn.state_dict())
    state.pop("0.bias")
    state["extra.weight"] = torch.zeros(2)
    state["6.weight"] = torch.zeros(3, 3)
    save_file(state, str(tmp_path / "bad.safetensors"))
    with pytest.raises(CheckpointError) as err:
        intake.load(tmp_path / "bad.safetensors", factory="toolkit.intake.demo:digits_cnn")
    msg = str(err.value)
    assert "missing keys: 0.bias" in msg and "unexpected keys: extra.weight" in msg and "6.weight (3, 3) vs (128, 1024)" in msg
    assert "\n" not in msg


def test_nan_weights_are_refused(tmp_path, cnn):
    from safetensors.torch import save_file

    state = {k: v.clone() for k, v in cnn.state_dict().items()}
    state["0.weight"][0, 0, 0, 0] = float("nan")
    save_file(state, str(tmp_path / "nan.safetensors"))
    with pytest.raises(CheckpointError, match="NaN/Inf in 0.weight"):
        intake.load(tmp_path / "nan.safetensors", factory="toolkit.intake.demo:digits_cnn")


class _Canary:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_code_carrying_pickle_never_runs(tmp_path, monkeypatch):
    canary = tmp_path / "canary"
    path = tmp_path / "evil.pt"
    torch.save({"weights": _Canary(str(canary))}, path)
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")  # must not turn into a silent fallback
    with pytest.raises(UnsafeCheckpoint, match="--trust-checkpoint"):
        intake.load(path, factory="toolkit.intake.demo:digits_cnn")
    assert not canary.exists()


def test_pickled_module_needs_trust(tmp_path, cnn, x):
    path = tmp_path / "whole.pt"
    torch.save(cnn, path)
    with pytest.raises(UnsafeCheckpoint):
        intake.load(path)
    loaded = intake.load(path, trust_checkpoint=True)
    np.testing.assert_array_equal(_logits(loaded.module, x), _logits(cnn, x))


def test_torchscript_is_refused_without_trust(tmp_path, cnn, x):
    path = tmp_path / "ts.pt"
    torch.jit.save(torch.jit.trace(cnn, torch.from_numpy(x)), str(path))
    with pytest.raises(UnsafeCheckpoint, match="TorchScript"):
        intake.load(path)
    assert intake.load(path, trust_checkpoint=True).module is not None


def test_onnx_external_data_outside_folder_is_refused(tmp_path, cnn, x):
    import onnx

    path = tmp_path / "m.onnx"
    torch.onnx.export(cnn, (torch.from_numpy(x),), str(path), input_names=["x"], dynamo=False)
    model = onnx.load(str(path))
    tensor = model.graph.initializer[0]
    (tmp_path / "outside.bin").write_bytes(tensor.raw_data or b"\0" * 4)
    tensor.ClearField("raw_data")
    tensor.data_location = onnx.TensorProto.EXTERNAL
    tensor.external_data.add(key="location", value="../outside.bin")
    model_dir = tmp_path / "inner"
    model_dir.mkdir()
    (model_dir / "m.onnx").write_bytes(model.SerializeToString())  # raw bytes: onnx.save would refuse it
    with pytest.raises(CheckpointError, match="outside the model's folder"):
        intake.load(model_dir / "m.onnx")


@pytest.mark.parametrize("name,content,match", [
    ("missing.pt2", None, "not found"),
    ("garbage.pt2", b"not a zip", "not a loadable torch.export archive"),
    ("garbage.safetensors", b"\x00\x01", "not a readable safetensors"),
    ("model.h5", b"x", "unsupported checkpoint type"),
])
def test_bad_files_give_one_line_errors(tmp_path, name, content, match):
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(CheckpointError, match=match) as err:
        intake.load(path, factory="toolkit.intake.demo:digits_cnn")
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_text_encoder_with_two_named_inputs(text_model_files):
    weights, factory, data = text_model_files
    loaded = intake.load(weights, factory=factory)
    z = np.load(data)
    with torch.inference_mode():
        out = loaded.module(torch.from_numpy(z["input_ids"][:5]), torch.from_numpy(z["attention_mask"][:5]))
    assert out.shape == (5, 3)
