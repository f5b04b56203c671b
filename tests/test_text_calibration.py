"""Calibration statistics streamed: ORT's histogram calibrators hold a bounded number of batches on a tiny BERT."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("transformers", reason="transformers is not installed (pip install 'optkit[text]')")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from tests.conftest import make_pass_ctx  # noqa: E402
from tests.test_text import make_hf_folder, reviews, write_csv  # noqa: E402


@pytest.fixture(scope="module")
def bert_onnx(tmp_path_factory):
    from toolkit.intake import checkpoints, text
    from toolkit.passes import load_all
    from toolkit.passes.export import save_baseline

    root = tmp_path_factory.mktemp("calib")
    folder = make_hf_folder(root / "tiny-bert", train_on=reviews(200, seed=1))
    data = text.load_for_checkpoint(write_csv(root / "r.csv", reviews()), folder, text_column="review",
                                    label_column="sentiment")
    module = checkpoints.load(folder).module
    ctx = make_pass_ctx(root / "cands", data, module, calibration_size=24)
    base = save_baseline(ctx, module)
    onnx_fp32 = load_all()["export_onnx"].fn(ctx, base, None, "onnx-fp32")
    return ctx, onnx_fp32


def _scales(path) -> dict:
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer if t.name.endswith("_scale")}


def test_streaming_options_divide_the_batches():
    from toolkit.passes.quantize_ort import streaming_options

    assert streaming_options(128, 16) == {"CalibStridedMinMax": 16}
    assert streaming_options(24, 16) == {"CalibStridedMinMax": 12}  # the largest divisor <= 16
    assert streaming_options(7, 16) == {"CalibStridedMinMax": 7}
    assert streaming_options(13, 4) == {"CalibStridedMinMax": 1}


@pytest.mark.parametrize("method", ["percentile", "minmax"])
def test_calibration_holds_at_most_a_stride_and_matches_the_unstreamed_scales(bert_onnx, method, monkeypatch):
    from onnxruntime.quantization import calibrate

    from toolkit.passes import load_all
    from toolkit.passes.quantize_ort import OrtStaticOptions

    ctx, parent = bert_onnx
    held: list[int] = []  # batches of activations held by the calibrator when it folds them in
    cls = calibrate.HistogramCalibrater if method == "percentile" else calibrate.MinMaxCalibrater
    original = cls.clear_collected_data

    def spy(self):
        if self.intermediate_outputs:
            held.append(len(self.intermediate_outputs))
        return original(self)

    monkeypatch.setattr(cls, "clear_collected_data", spy)
    run = load_all()["ort_static_int8"].fn
    opts = dict(calibration=method, per_channel=False, activations="uint8")
    streamed = run(ctx, parent, OrtStaticOptions(**opts, stream_batches=4), f"{method}-streamed")
    held_streamed, held[:] = list(held), []
    whole = run(ctx, parent, OrtStaticOptions(**opts, stream_batches=4096), f"{method}-whole")
    info = streamed.info["calibration_streaming"]
    assert info["ort_extra_options"] == {"CalibStridedMinMax": 4} and info["calibration_batches"] == 24
    assert held_streamed == [4] * 6 and held == [24]  # 6 strides of 4 batches vs all 24 at once
    a, b = _scales(streamed.path), _scales(whole.path)
    assert a.keys() == b.keys() and len(a) > 10
    if method == "minmax":  # min/max merged stride by stride: the same ranges
        assert all(np.array_equal(a[k], b[k]) for k in a)
    else:  # histograms merged stride by stride (re-binned when the range widens): near, not bit-equal
        rel = max(float(np.max(np.abs(a[k] - b[k]) / np.maximum(np.abs(b[k]), 1e-12))) for k in a)
        assert rel < 0.05, rel
    f1_streamed, f1_whole = ctx.val_macro_f1(streamed), ctx.val_macro_f1(whole)
    assert abs(f1_streamed - f1_whole) <= 0.05
