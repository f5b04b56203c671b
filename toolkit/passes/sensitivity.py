"""Per-layer quantization sensitivity of an ONNX fp32 model, measured with ONNX Runtime static QDQ.

For each quantizable layer L (Conv / MatMul / Gemm nodes) two models are built with ORT's
`nodes_to_exclude`:
- "only L": every other quantizable layer excluded, so L alone is int8;
- "all but L": L excluded, everything else int8.
Each is scored on the validation split: macro-F1 and the mean KL(softmax fp32 || softmax quantized)
of the logits. Layers are ranked by a KL score: KL(only L int8) + the KL removed by keeping L alone in
fp32 (KL(full int8) - KL(all but L)), ties broken by the F1 effect (F1 drop when only L is int8 + F1
recovered when L alone stays fp32). KL ranks, F1 is reported: macro-F1 on a few hundred samples moves
in steps of one sample and is mostly noise for all but the worst layers; KL is continuous. (The search
in passes/mixed_precision.py then judges plans by macro-F1 against the tolerance.)

Cost: 2 quantize+evaluate runs per layer. Capped at MAX_LAYERS = 40 layers: beyond that the 40 layers
with the most outlying weights (max|w| / std of the weight tensor, a cheap proxy for int8 range
trouble) are analysed and the rest are reported as "not analysed" and stay int8.
"""
from __future__ import annotations

import dataclasses
import shutil
import tempfile
from pathlib import Path

import numpy as np

from toolkit.metrics.classification import mean_kl

QUANTIZABLE_OPS = ("Conv", "MatMul", "Gemm")
MAX_LAYERS = 40


@dataclasses.dataclass
class Result:
    excluded: tuple[str, ...]
    val_macro_f1: float
    kl: float
    path: Path


class LayerQuantizer:
    """Quantize one ONNX model with different excluded-layer sets (ORT QDQ or NNCF), cached per set."""

    def __init__(self, ctx, src: Path, engine: str = "ort", activations: str = "uint8", per_channel: bool = True,
                 calibration: str = "minmax"):
        import onnx

        from toolkit.passes.quantize_ort import preprocess

        self.ctx, self.engine = ctx, engine
        self.activations, self.per_channel, self.calibration = activations, per_channel, calibration
        self._tmp = Path(tempfile.mkdtemp(prefix="optkit-mixed-"))
        self.src = self._tmp / "preprocessed.onnx"
        preprocess(src, self.src)  # node names below come from this graph; every variant quantizes it
        model = onnx.load(str(self.src))
        weights = {i.name: i for i in model.graph.initializer}
        self.layers: list[dict] = []
        for node in model.graph.node:
            if node.op_type in QUANTIZABLE_OPS:
                w = next((weights[i] for i in node.input[1:2] if i in weights), None)
                self.layers.append({"name": node.name, "op": node.op_type, "outlier_ratio": _outlier_ratio(w)})
        self.base_logits = self._logits(self.src)
        self.base_f1 = self._f1(self.base_logits)
        self._cache: dict[frozenset, Result] = {}
        self._counter = [0]  # shared with variants: one temp folder, distinct file names

    def variant(self, **settings) -> "LayerQuantizer":
        """The same model and fp32 reference with other settings (calibration, per_channel): no re-preprocessing."""
        import copy

        other = copy.copy(self)
        for name, value in settings.items():
            if not hasattr(self, name):
                raise TypeError(f"LayerQuantizer has no setting {name}")
            setattr(other, name, value)
        other._cache = {}
        return other

    # -- evaluation
    def _logits(self, path: Path) -> np.ndarray:
        from toolkit.backends import open_session, run_split
        from toolkit.core.candidate import Candidate

        variant = Candidate(id=path.stem, path=path, format="onnx", precision="int8", backend="onnxruntime", lineage=())
        with open_session(variant, threads=self.ctx.threads) as session:
            return run_split(session, self.ctx.data.val)

    def _f1(self, logits: np.ndarray) -> float:
        from toolkit.metrics.classification import classification_metrics

        d = self.ctx.data
        return float(classification_metrics(d.val.y, logits.argmax(1), d.n_classes, d.labels)["macro_f1"])

    # -- quantization
    def run(self, excluded) -> Result:
        key = frozenset(excluded)
        if key in self._cache:
            return self._cache[key]
        self._counter[0] += 1
        dst = self._tmp / f"q{self._counter[0]}.onnx"
        if self.engine == "nncf":
            self._nncf(dst, sorted(key))
        else:
            self._ort(dst, sorted(key))
        logits = self._logits(dst)
        res = Result(tuple(n["name"] for n in self.layers if n["name"] in key), self._f1(logits),
                     mean_kl(self.base_logits, logits), dst)
        self._cache[key] = res
        return res

    def _ort(self, dst: Path, excluded: list[str]) -> None:
        from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

        from toolkit.passes.quantize_ort import CalibrationReader

        method = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
                  "percentile": CalibrationMethod.Percentile}[self.calibration]
        # minmax reduces over batches, so calibrate in batches of 32 (fast); histogram calibrators need batch 1
        batch = 32 if self.calibration == "minmax" else 1
        quantize_static(str(self.src), str(dst), CalibrationReader(self.ctx.calibration_batches(batch_size=batch)),
                        quant_format=QuantFormat.QDQ, per_channel=self.per_channel,
                        activation_type=QuantType.QUInt8 if self.activations == "uint8" else QuantType.QInt8,
                        weight_type=QuantType.QInt8, calibrate_method=method, nodes_to_exclude=excluded,
                        extra_options={"ActivationSymmetric": self.activations == "int8"})

    def _nncf(self, dst: Path, excluded: list[str]) -> None:
        import nncf
        import onnx

        kw = {"preset": nncf.QuantizationPreset.PERFORMANCE, "subset_size": self.ctx.calibration_size}
        if excluded:
            kw["ignored_scope"] = nncf.IgnoredScope(names=excluded, validate=False)
        quantized = nncf.quantize(onnx.load(str(self.src)), nncf.Dataset(self.ctx.calibration_batches(batch_size=1)), **kw)
        onnx.save(quantized, str(dst))

    def close(self) -> None:
        shutil.rmtree(self._tmp, ignore_errors=True)


def _outlier_ratio(init) -> float:
    if init is None:
        return 0.0
    from onnx import numpy_helper

    w = numpy_helper.to_array(init).astype(np.float64)
    sd = float(w.std())
    return float(np.abs(w).max() / sd) if sd > 0 else 0.0


def analyse(q: LayerQuantizer, max_layers: int = MAX_LAYERS) -> list[dict]:
    """The sensitivity table, most sensitive first (see the module docstring)."""
    names = [n["name"] for n in q.layers]
    if len(q.layers) > max_layers:
        chosen = {n["name"] for n in sorted(q.layers, key=lambda n: -n["outlier_ratio"])[:max_layers]}
    else:
        chosen = set(names)
    full = q.run(())
    rows = []
    for layer in q.layers:
        name = layer["name"]
        row = {"layer": name, "op": layer["op"], "weight_outlier_ratio": round(layer["outlier_ratio"], 2),
               "analysed": name in chosen}
        if name in chosen:
            only = q.run([n for n in names if n != name])
            allbut = q.run([name])
            drop_only = q.base_f1 - only.val_macro_f1
            recovery = allbut.val_macro_f1 - full.val_macro_f1
            row.update({"only_int8_val_f1": round(only.val_macro_f1, 4), "only_int8_kl": only.kl,
                        "all_but_val_f1": round(allbut.val_macro_f1, 4), "all_but_kl": allbut.kl,
                        "score": only.kl + max(0.0, full.kl - allbut.kl), "f1_effect": round(drop_only + recovery, 4)})
        rows.append(row)
    analysed = [r for r in rows if r["analysed"]]
    analysed.sort(key=lambda r: (r["score"], r["f1_effect"]), reverse=True)
    for i, r in enumerate(analysed, 1):
        r["rank"] = i
    return analysed + [r for r in rows if not r["analysed"]]


def rank(q: LayerQuantizer, samples: int = 64) -> list[dict]:
    """One-pass ranking, most sensitive first: the local int8 noise of each layer in the full-int8 model.

    One quantization and one run of the full-int8 model on `samples` validation rows with every
    activation exposed (ONNX Runtime's QDQ debugging tools, qdq_loss_debug): for each quantizable layer,
    the noise-to-signal power of its input activation (before vs after its Q/DQ pair) plus that of its
    weight (float vs dequantized). Noise powers add, so the sum ranks how much int8 each layer injects;
    the search then bisects over this ranking instead of evaluating every layer (analyse()).
    """
    import onnx
    from onnxruntime.quantization import qdq_loss_debug as dbg

    from toolkit.passes.quantize_ort import CalibrationReader

    full = q.run(())
    aug = q._tmp / "augmented.onnx"
    dbg.modify_model_output_intermediate_tensors(str(full.path), str(aug))
    rows = q.ctx.data.val
    n = min(samples, len(rows))
    batches = [{k: v[i:i + 16] for k, v in rows.inputs.items()} for i in range(0, n, 16)]
    batches = [{k: v for k, v in b.items() if k in q.ctx.io.input_names} for b in batches]
    acts = dbg.collect_activations(str(aug), CalibrationReader(batches), execution_providers=["CPUExecutionProvider"])
    sqnr = dbg.compute_signal_to_quantization_noice_ratio
    act_err = {k: {"qdq_err": sqnr(m["pre_qdq"], m["post_qdq"])}
               for k, m in dbg.create_activation_matching(acts).items() if "pre_qdq" in m and "post_qdq" in m}
    w_err = dbg.compute_weight_error(dbg.create_weight_matching(str(q.src), str(full.path)))
    aug.unlink(missing_ok=True)
    graph = onnx.load(str(q.src), load_external_data=False).graph
    by_name = {nd.name: nd for nd in graph.node}

    def noise(sqnr) -> float:  # SQNR in dB -> noise/signal power; a tensor without Q/DQ adds none
        return 0.0 if sqnr is None or not np.isfinite(sqnr) else float(10 ** (-float(sqnr) / 10))

    table = []
    for layer in q.layers:
        node = by_name[layer["name"]]
        a = act_err.get(node.input[0], {}).get("qdq_err")
        w = w_err.get(node.input[1]) if len(node.input) > 1 else None
        table.append({"layer": layer["name"], "op": layer["op"], "weight_outlier_ratio": round(layer["outlier_ratio"], 2),
                      "analysed": True, "activation_sqnr_db": None if a is None else round(float(a), 2),
                      "weight_sqnr_db": None if w is None else round(float(w), 2), "score": noise(a) + noise(w)})
    table.sort(key=lambda r: r["score"], reverse=True)
    for i, r in enumerate(table, 1):
        r["rank"] = i
    return table
