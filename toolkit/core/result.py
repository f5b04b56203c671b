"""The typed run result: `report.json` is `RunReport.model_dump_json()`, and its JSON Schema is
published as `schemas/report.schema.json` (regenerate: `python -m toolkit.core.result`).

The pipeline builds one RunReport; the report pages, the bundle, bench and the Python API read
it through these fields, never through raw dict keys. Deep, self-describing structures (reliability
bins, per-class threshold tables, slices, pass-specific `info`) stay plain JSON objects.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

SCHEMA_VERSION = 3
JSON = dict[str, Any]

# The three kinds of numbers (DESIGN.md, honesty rules), never mixed: measured on the target itself, measured on
# a host that only stands in for it, or estimated for the target from its profile's specs. Budgets are judged on
# "target" numbers only (or on "estimate" where the device profile says so); a stand-in's numbers never fail one.
NumberKind = Literal["target", "stand-in", "estimate"]
CheckStatus = Literal["ok", "fail", "not checked here"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class DeviceFingerprint(BaseModel):
    """The device a `--measure-on/--on ssh://...` number came from, as its runner read it (remote_runner.py)."""
    model_config = ConfigDict(extra="allow")  # the runner may report more facts than this version knows
    id: str                        # sha256[:12] of the stable facts (CPU, ISA, cores, board, accelerators, runtimes)
    hostname: str
    cpu: str
    arch: str
    isa: list[str]                 # from /proc/cpuinfo flags, never the brand
    cores: int
    usable_cores: int
    memory_mb: int
    board: str | None = None       # /proc/device-tree/model (Jetson, Raspberry Pi)
    accelerators: list[JSON] = Field(default_factory=list)  # nvidia-smi, /etc/nv_tegra_release
    os: str
    python: str
    runtimes: dict[str, str]       # installed versions on the device


class DeviceParity(_Strict):
    """The candidate's outputs on fixture rows, run on the device, against the same rows on this host."""
    rows: int
    checked: bool
    reference: str
    max_abs_diff: float | None = None
    top1_agreement: float | None = None


class F1Delta(_Strict):
    """Paired-bootstrap CI of macro-F1 (candidate - fp32 baseline) on the test split."""
    delta: float
    low: float
    high: float
    n_resamples: int
    n_samples: int


class Thresholds(_Strict):
    metric: str
    values: list[float]
    tuned_on: str
    applied_to: str
    test: JSON


class Throughput(_Strict):
    batch: int
    throughput_per_s: float | None
    latency_p50_ms: float | None
    runs: int


class Metrics(_Strict):
    """Everything measured for one candidate. Units are in the names."""
    macro_f1: float
    accuracy: float
    macro_f1_ci: list[float]
    per_class: list[JSON]
    confusion_matrix: list[list[int]]
    temperature: float
    ece: float
    ece_recalibrated: float
    mce: float
    mce_recalibrated: float
    nll: float
    nll_recalibrated: float
    brier: float
    brier_recalibrated: float
    classwise_ece: float
    classwise_ece_recalibrated: float
    val_nll: float
    val_nll_recalibrated: float
    temperature_fit: JSON | None = None  # cross-validated fit on validation: applied or not, and why
    reliability: JSON
    thresholds: Thresholds
    slices: JSON | None = None
    top1_agreement: float | None = None
    max_abs_logit_delta: float | None = None
    macro_f1_delta: F1Delta | None = None
    latency_p50_ms: float
    latency_p95_ms: float
    latency_p99_ms: float
    latency_mean_ms: float
    latency_p95_quietest_round_ms: float | None = None  # p50-based robust tail: p95 of the round with the lowest p50
    throughput: list[Throughput] = Field(default_factory=list)
    size_mb: float
    rss_growth_mb: float
    target_estimate_ms: float | None = None


class MeasuredOn(_Strict):
    """Where a latency was measured: on the target itself or on a stand-in host (never an estimate)."""
    model_config = ConfigDict(extra="allow")  # backends add what they ran (providers, inference precision, ...)
    kind: Literal["target", "stand-in"]
    # measured on a device over SSH (pipeline/remote_measure.py): which device, its address, this host's own
    # timing of the same candidate kept beside it (never mixed in), and output parity checked on the device
    device: DeviceFingerprint | None = None
    remote: str | None = None
    host_timing: JSON | None = None
    device_parity: DeviceParity | None = None
    device_skipped: str | None = None      # why a candidate was not measured on the device (it keeps host numbers)
    host: str
    backend: str
    threads: int
    batch: int
    runs: int
    warmup: int
    memory: str
    stand_in_for: str | None
    label: str
    # toolkit/pipeline/measure.py: the host's ISA, the rounds, and whether neighbours were measured too
    cpu: str | None = None
    isa: list[str] = Field(default_factory=list)
    usable_cores: int | None = None
    runtime: str | None = None
    sequence: JSON | None = None          # dynamic dims' values and where they came from (core/shapes.py)
    rounds: int | None = None
    round_p50_ms: list[float] = Field(default_factory=list)
    round_spread: float | None = None     # (max - min) / median of the round p50s
    contended: bool = False
    contention_reason: str = ""
    load_average: float | None = None
    # the machine that ran the timing: a sweep's executor node (Ray node id), else this host's name (evaluate.node_name)
    node: str | None = None


class TargetEstimate(_Strict):
    kind: Literal["estimate"] = "estimate"
    method: str                   # e.g. "estimate (roofline lower bound)"
    estimate_ms: float | None
    bound: str | None = None
    assumptions: JSON | list | str | None = None
    reason: str | None = None
    compute_bound_ms: float | None = None
    memory_bound_ms: float | None = None
    device: str


class Check(_Strict):
    name: str
    ok: bool                      # False only for "fail": a check not made here never fails a candidate
    status: CheckStatus = "ok"
    kind: NumberKind | None = None  # which kind of number was judged (None: a property of the file or the data)
    value: Any = None
    limit: Any = None
    reason: str = ""
    samples_needed: int | None = None  # test samples the F1 budget would need to be supported at this delta


class CandidateResult(_Strict):
    id: str
    format: str
    precision: str
    backend: str
    engine: str | None
    lineage: list[str]
    path: str
    info: JSON
    runtime_options: JSON
    metrics: Metrics
    measured_on: MeasuredOn
    target_estimate: TargetEstimate | None = None
    checks: list[Check] = Field(default_factory=list)
    eligible: bool = False
    on_front: bool = False
    why_not: str = ""


class PlanEntry(_Strict):
    id: str
    pass_name: str = Field(alias="pass")
    source: str = Field(alias="from")
    status: str
    reason: str
    backend: str
    precision: str | None


class ModelInfo(_Strict):
    source: str
    sha256: str
    kind: str
    notes: list[str]
    outputs: str | None = None    # which output holds the logits, and whether probabilities were converted


class DataInfo(_Strict):
    name: str
    sha256: str
    labels: list[str]
    n_val: int
    n_test: int
    n_train: int
    preprocessing: str | None = None
    notes: list[str] = Field(default_factory=list)  # what the data checks found that is not an error


class Selection(_Strict):
    rule: str
    objectives: list[str]
    # The one speed quantity the front, the pick, every loser's reason and the trade-off plot use.
    speed_key: Literal["latency_p95_ms", "target_estimate_ms"] = "latency_p95_ms"
    speed_kind: NumberKind = "target"
    speed_label: str = "p95 latency measured on the target"


class TargetBuild(_Strict):
    model_config = ConfigDict(extra="allow")  # the build's own facts (shapes, engine name) travel with it
    candidate: str
    precision: str
    command: str | None = None
    where: str
    status: str


class BundleRef(_Strict):
    model_config = ConfigDict(extra="allow")
    path: str
    candidate: str


class EvaluationFailure(_Strict):
    id: str
    reason: str


class RunReport(_Strict):
    """report.json."""
    schema_version: int = SCHEMA_VERSION
    run_id: str
    selected: str | None
    baseline: str
    selection: Selection
    model: ModelInfo
    data: DataInfo
    device: JSON
    recipe: JSON
    plan: list[PlanEntry]
    target_note: str
    host_is_device: bool
    io: JSON
    host: JSON
    versions: dict[str, str | None]
    seed: int
    threshold_metric: str
    candidates: list[CandidateResult]
    target_builds: list[TargetBuild] = Field(default_factory=list)
    bundle: BundleRef | None = None
    evaluation_failures: list[EvaluationFailure] = Field(default_factory=list)
    plots: dict[str, str] = Field(default_factory=dict)
    timings: dict[str, float] = Field(default_factory=dict)

    def candidate(self, cid: str) -> CandidateResult:
        for c in self.candidates:
            if c.id == cid:
                return c
        raise KeyError(f"no candidate '{cid}' in run {self.run_id}; candidates: {', '.join(c.id for c in self.candidates)}")

    def to_json(self) -> str:
        return self.model_dump_json(indent=2, by_alias=True)


@dataclasses.dataclass(frozen=True)
class RunResult:
    """What `toolkit.compress(...)` returns: the run folder and its typed report."""
    run_dir: Path
    report: RunReport

    @property
    def selected(self) -> CandidateResult | None:
        return self.report.candidate(self.report.selected) if self.report.selected else None

    @property
    def baseline(self) -> CandidateResult:
        return self.report.candidate(self.report.baseline)

    def candidate(self, cid: str) -> CandidateResult:
        return self.report.candidate(cid)

    @property
    def candidates(self) -> list[CandidateResult]:
        return self.report.candidates

    @property
    def report_path(self) -> Path:
        return self.run_dir / "report" / "index.html"

    @property
    def bundle_path(self) -> Path | None:
        return self.run_dir / self.report.bundle.path if self.report.bundle else None


def load_report(path: str | Path) -> RunReport:
    """A report.json as a RunReport (bench and verify read runs through this)."""
    return RunReport.model_validate_json(Path(path).read_text())


def json_schema() -> str:
    return json.dumps(RunReport.model_json_schema(by_alias=True), indent=2) + "\n"


if __name__ == "__main__":  # python -m toolkit.core.result > schemas/report.schema.json
    print(json_schema(), end="")
