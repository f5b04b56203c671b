"""OpenVINO artifacts are the same bytes for the same graph, whatever the process converted before (sweeps compare
artifact hashes across workers; OpenVINO's process-wide op counter used to leak into the .xml's layer names)."""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("openvino")


def test_same_graph_same_ir_bytes_and_same_outputs(demo_ctx, tmp_path):
    import openvino as ov

    from toolkit.core.artifacts import file_sha256
    from toolkit.passes import load_all

    ctx, base = demo_ctx
    P = load_all()
    onnx_c = P["export_onnx"].fn(ctx, base, None, "onnx")
    first = P["openvino_ir"].fn(ctx, onnx_c, P["openvino_ir"].options(), "ov-a")
    ov.convert_model(str(onnx_c.path))  # another conversion in between moves OpenVINO's name counter on
    second = P["openvino_ir"].fn(ctx, onnx_c, P["openvino_ir"].options(), "ov-b")
    assert file_sha256(first.path) == file_sha256(second.path)
    assert file_sha256(first.path.with_suffix(".bin")) == file_sha256(second.path.with_suffix(".bin"))

    q1 = P["nncf_ptq"].fn(ctx, first, P["nncf_ptq"].options(), "nncf-a")
    q2 = P["nncf_ptq"].fn(ctx, first, P["nncf_ptq"].options(), "nncf-b")
    assert file_sha256(q1.path) == file_sha256(q2.path)

    # renaming layers changed nothing a caller sees: same input/output names, same logits as ONNX Runtime
    from toolkit.backends import infer_file

    x = {"x": ctx.data.test.inputs["x"][:8]}
    model = ov.Core().read_model(str(first.path))
    assert [i.get_any_name() for i in model.inputs] == ["x"]
    np.testing.assert_allclose(infer_file(first.path, x), infer_file(onnx_c.path, x), rtol=1e-4, atol=1e-4)
