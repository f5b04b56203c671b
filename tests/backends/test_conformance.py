"""One conformance suite, subclassed per backend: fp32 outputs match torch (rtol 1e-3, atol 1e-4)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from toolkit.core import modelio
from toolkit.backends import availability, open_session
from toolkit.core.candidate import Candidate
from toolkit.intake.data import Dataset, Split
from toolkit.pipeline.devices import load_device
from toolkit.passes import PassContext, load_all
from toolkit.passes.export import save_baseline

RTOL, ATOL = 1e-3, 1e-4


def _ctx(tmp_path, inputs: dict, n_classes: int) -> PassContext:
    split = Split(inputs, np.zeros(len(next(iter(inputs.values()))), dtype=np.int64))
    data = Dataset("fixture", [str(i) for i in range(n_classes)], split, split, None, "0")
    return PassContext(workdir=tmp_path, data=data, io=modelio.from_data(inputs, n_classes),
                       device=load_device("x86-avx512"), seed=0, calibration_size=8)


def _cnn_case():
    from toolkit.intake.demo import digits_cnn

    torch.manual_seed(0)
    return digits_cnn().eval(), {"x": np.random.default_rng(1).random((6, 1, 8, 8), dtype=np.float32)}, 10


def _text_case():
    from tests.conftest import tiny_encoder

    torch.manual_seed(0)
    rng = np.random.default_rng(2)
    mask = np.ones((6, 12), dtype=np.int64)
    mask[:, 9:] = 0
    return tiny_encoder().eval(), {"input_ids": rng.integers(1, 50, (6, 12)).astype(np.int64), "attention_mask": mask}, 3


class BackendConformance:
    """Subclasses set `backend` and `make(ctx, baseline) -> Candidate`."""

    backend = ""

    def make(self, ctx, baseline: Candidate) -> Candidate:
        raise NotImplementedError

    @pytest.fixture(autouse=True)
    def _require(self):
        ok, why = availability(self.backend)
        if not ok:
            pytest.skip(why)

    @pytest.mark.parametrize("case", [_cnn_case, _text_case], ids=["cnn", "text-encoder"])
    def test_fp32_matches_torch(self, tmp_path, case):
        module, inputs, n = case()
        ctx = _ctx(tmp_path, inputs, n)
        cand = self.make(ctx, save_baseline(ctx, module))
        with torch.inference_mode():
            ref = module(*(torch.from_numpy(inputs[k]) for k in ctx.io.input_names)).numpy()
        with open_session(cand, threads=1) as session:
            got = session.infer(inputs)
            one = session.infer({k: v[:1] for k, v in inputs.items()})  # dynamic batch: 1 row works too
            described = session.describe()
        np.testing.assert_allclose(got, ref, rtol=RTOL, atol=ATOL)
        np.testing.assert_allclose(one, ref[:1], rtol=RTOL, atol=ATOL)
        assert described["backend"] == self.backend and described["threads"] == 1


class TestTorch(BackendConformance):
    backend = "torch"

    def make(self, ctx, baseline):
        return baseline


class TestOnnxRuntime(BackendConformance):
    backend = "onnxruntime"

    def make(self, ctx, baseline):
        return load_all()["export_onnx"].fn(ctx, baseline, None, "onnx")


class TestOpenVino(BackendConformance):
    backend = "openvino"

    def make(self, ctx, baseline):
        from toolkit.passes.openvino_ir import OpenVinoOptions

        onnx_c = load_all()["export_onnx"].fn(ctx, baseline, None, "onnx")
        return load_all()["openvino_ir"].fn(ctx, onnx_c, OpenVinoOptions(inference_precision="f32"), "ov")

    def test_reports_the_precision_that_ran(self, tmp_path):
        module, inputs, n = _cnn_case()
        ctx = _ctx(tmp_path, inputs, n)
        cand = self.make(ctx, save_baseline(ctx, module))
        with open_session(cand, threads=1) as session:
            assert session.describe()["inference_precision"] == "f32"

    @pytest.mark.parametrize("case", [_cnn_case, _text_case], ids=["cnn", "text-encoder"])
    def test_timed_shapes_run_static_and_give_the_same_outputs(self, tmp_path, case):
        """fix_shapes (timing calls it) compiles a static copy per timed shape: same outputs as the any-shape model,
        other shapes still run, and the runtime label says how it was compiled."""
        module, inputs, n = case()
        ctx = _ctx(tmp_path, inputs, n)
        cand = self.make(ctx, save_baseline(ctx, module))
        one = {k: v[:1] for k, v in inputs.items()}
        with open_session(cand, threads=1) as session:
            dynamic_all, dynamic_one = session.infer(inputs), session.infer(one)
            assert "static" not in session.describe()["runtime"]
            session.fix_shapes([one, inputs])
            assert sorted(k[0][0] for k in session._static) == [1, len(dynamic_all)]  # one compiled model per shape
            assert session._any_shape is None  # released: timing does not pay for both
            static_all, static_one = session.infer(inputs), session.infer(one)
            three = session.infer({k: v[:3] for k, v in inputs.items()})  # not fixed: the any-shape model again
            described = session.describe()
        np.testing.assert_allclose(static_all, dynamic_all, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(static_one, dynamic_one, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(three, dynamic_all[:3], rtol=1e-5, atol=1e-6)
        assert described["runtime"].endswith("compiled for each timed input shape (static)")


class TestExecuTorch(BackendConformance):
    backend = "executorch"

    def make(self, ctx, baseline, precision="fp32"):
        from toolkit.passes.executorch import ExecuTorchOptions

        return load_all()["executorch"].fn(ctx, baseline, ExecuTorchOptions(precision=precision, max_batch=32), "et")

    def test_int8_is_int8_in_the_file_and_close_to_fp32(self, tmp_path):
        from toolkit import backends

        module, inputs, n = _cnn_case()
        ctx = _ctx(tmp_path, inputs, n)
        cand = self.make(ctx, save_baseline(ctx, module), precision="int8")
        facts = backends.inspect(cand.path)
        assert facts.precision == "int8" and facts.int8_weight_fraction > 0.5
        assert "XnnpackBackend" in facts.details["delegates"]
        with torch.inference_mode():
            ref = module(torch.from_numpy(inputs["x"])).numpy()
        with open_session(cand, threads=1) as session:
            got = session.infer(inputs)
        # int8 tolerance: the same top-1 on these rows, logits within 5% of their range
        assert (got.argmax(1) == ref.argmax(1)).mean() >= 5 / 6
        assert np.max(np.abs(got - ref)) <= 0.05 * (ref.max() - ref.min()) + 1e-3


def test_tensorrt_is_unavailable_here_with_a_reason():
    ok, why = availability("tensorrt")
    if ok:
        pytest.skip("TensorRT is usable on this host; the gpu-marked tests cover it")
    assert "tensorrt" in why.lower()
