"""TensorRT builds for the target: one batch profile (the device's bench batch sizes through
backends.tensorrt.profile_shapes) and the shape policy's dynamic dims, said in every build."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from toolkit.core import modelio, shapes
from toolkit.core.candidate import Candidate
from toolkit.pipeline.devices import load_device
from toolkit.pipeline.targets import target_builds, trt_batch_profile, trt_profiles


def _text_io_and_policy():
    mask = np.zeros((10, 32), np.int64)
    for i, n in enumerate([8] * 6 + [20] * 3 + [32]):
        mask[i, :n] = 1
    inputs = {"input_ids": np.ones_like(mask), "attention_mask": mask}
    return modelio.from_data(inputs, 3), shapes.from_arrays(inputs)


def test_batch_profile_comes_from_the_device():
    dev = load_device("jetson-orin-nano")
    sizes = sorted(set(dev.bench.batch_sizes))
    lo, opt, hi = trt_batch_profile(dev)
    assert (lo, hi) == (sizes[0], sizes[-1]) and opt == (1 if 1 in sizes else sizes[0])


def test_text_profile_uses_the_datas_lengths_and_the_build_says_so():
    dev = load_device("jetson-orin-nano")
    io, policy = _text_io_and_policy()
    lo, opt, hi = trt_batch_profile(dev)
    prof = trt_profiles(io, dev, policy)
    assert prof["input_ids"] == ((lo, 1), (opt, 8), (hi, 32))  # seq: any length, tuned for p50 8, up to the padded 32
    cand = Candidate(id="onnx-fp16", path=Path("model.onnx"), format="onnx", precision="fp16", backend="onnxruntime",
                     lineage=("baseline",))
    builds = target_builds({"candidates": [{"id": "onnx-fp16"}]}, {"onnx-fp16": cand}, dev, io, shapes=policy)
    assert len(builds) == 1
    b = builds[0]
    assert f"--maxShapes=input_ids:{hi}x32,attention_mask:{hi}x32" in b["command"]
    assert f"--optShapes=input_ids:{opt}x8" in b["command"]
    assert "p50 8" in b["dynamic_dims"] and b["batch_profile"] == [lo, opt, hi]


def test_without_data_the_fallback_is_static_and_named():
    dev = load_device("jetson-orin-nano")
    io, _ = _text_io_and_policy()
    prof = trt_profiles(io, dev, shapes.fallback())
    lo, opt, hi = trt_batch_profile(dev)
    assert prof["attention_mask"] == ((lo, 128), (opt, 128), (hi, 128))
    images = modelio.from_data({"x": np.zeros((2, 1, 8, 8), np.float32)}, 10)
    assert trt_profiles(images, dev, shapes.from_arrays({"x": np.zeros((2, 1, 8, 8), np.float32)}))["x"] == \
        ((lo, 1, 8, 8), (opt, 1, 8, 8), (hi, 1, 8, 8))
