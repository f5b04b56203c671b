"""`compress --device D` plans correctly for every profile: what runs here, what is skipped and why."""
from __future__ import annotations

import pytest

from toolkit.pipeline.devices import device_names, load_device
from toolkit.pipeline.plan import deployable, plan
from toolkit.pipeline.recipes import load_recipe


@pytest.mark.parametrize("name", device_names())
def test_plan_for_every_device(name):
    dev = load_device(name)
    p = plan(load_recipe(dev.default_recipe), dev, "torch", has_train=False)
    by_id = {s.step.id: s for s in p.steps}
    assert by_id["onnx-fp32"].status == "run"
    for s in p.steps:
        assert s.status in ("run", "skip", "alias")
        if s.status == "skip":
            assert s.reason, s.step.id
        if s.backend == "openvino" and "openvino" not in dev.backends and dev.stand_in.backend != "openvino":
            assert s.status == "skip" and "does not run openvino" in s.reason
        if s.status == "run" and s.precision and s.precision in ("fp16", "bf16"):
            assert s.precision in dev.precisions
    if "tensorrt" in dev.backends:
        assert "TensorRT" in p.target_note and deployable("onnxruntime", dev)
    else:
        assert p.target_note == ""


def test_onnx_input_skips_torch_only_passes():
    dev = load_device("x86-avx512")
    p = plan(load_recipe("x86-engines"), dev, "onnx", has_train=False)
    by_id = {s.step.id: s for s in p.steps}
    assert by_id["onnx-fp32"].status == "alias"
    torch_only = [s for s in p.steps if s.step.pass_name in ("pt2e_ptq", "inc_ptq")]
    assert torch_only and all(s.status == "skip" and "takes torch" in s.reason for s in torch_only)


def test_training_passes_need_a_train_split():
    dev = load_device("x86-avx512")
    p = plan(load_recipe("distill-int8"), dev, "torch", has_train=False)
    distill = [s for s in p.steps if s.step.pass_name == "distill"]
    assert distill and all(s.status == "skip" and "train split" in s.reason for s in distill)
