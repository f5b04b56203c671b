"""The one latency protocol and the one "measured on" record, used by evaluate (compress) and bench.

    m = measure(session, feeds, [1, 8], device, threads, shapes=policy)
    m.stats[1]["latency_p95_ms"], m.measured_on(1)["contended"]

Protocol: the device profile's bench settings. Batch 1 gets `warmup` warmup calls and `iterations`
timed calls; a larger batch (timed for throughput) gets max(3, warmup // 4) and max(20, iterations // 10),
because each of its calls is longer. The timed calls are split into ROUNDS interleaved rounds
(each round runs every batch size in turn), so a neighbour's burst shows up as a round-to-round
difference instead of silently moving one number.

Contention (issue 14 item 9): a measurement is flagged `contended` when, over the timed window,
  * the 1-minute load average exceeds the usable cores by more than LOAD_MARGIN (our own threads
    count in the load, so a host running only this measurement stays under it),
  * /proc/stat steal time exceeds STEAL_LIMIT of the CPU time (a hypervisor ran someone else), or
  * the round p50s differ by more than SPREAD_LIMIT of their median, or p95 > TAIL_RATIO x p50.
A contended record says why; budgets judged on it say "contended host" (pipeline/select.py) and
quote the p50-based robust tail: the p95 of the quietest round (the one with the lowest p50).
"""
from __future__ import annotations

import dataclasses
from typing import Any

from toolkit.core import host as hostinfo
from toolkit.core.shapes import ShapePolicy
from toolkit.metrics.latency import summarize, tile_batch, timed_rounds

ROUNDS = 5
LOAD_MARGIN = 0.5     # runnable threads beyond the usable cores (the load average counts ours too)
STEAL_LIMIT = 0.05    # fraction of CPU time stolen by the hypervisor
SPREAD_LIMIT = 0.30   # (max - min) / median of round p50s; sub-ms calls move ~±30% run to run (STACK-NOTES)
TAIL_RATIO = 3.0      # p95 / p50 beyond which the tail is neighbours, not the model
TARGET, STAND_IN = "target", "stand-in"  # core/result.py NumberKind (the third kind, "estimate", is never measured)
KIND_TEXT = {TARGET: "measured on the target", STAND_IN: "measured on a stand-in"}
MEMORY_NOTE = "RSS growth of the optkit process while loading and running this session"


def calls_for(bench, batch: int) -> tuple[int, int]:
    """(warmup calls, timed calls) for one batch size under the device's bench settings."""
    if batch == 1:
        return bench.warmup, bench.iterations
    return max(3, bench.warmup // 4), max(20, bench.iterations // 10)


def host_loads() -> dict[str, Any]:
    return {"load": hostinfo.load_average(), "cpu_times": hostinfo.cpu_times()}


def contention(before: dict, after: dict, stats: dict[int, dict], cores: int) -> tuple[bool, str]:
    """(contended, why) from load, steal time and the timings themselves; why is '' on a quiet host."""
    reasons = []
    loads = [x for x in (before["load"], after["load"]) if x is not None]
    if loads and max(loads) > cores + LOAD_MARGIN:
        reasons.append(f"load average {max(loads):.2f} on {cores} usable cores")
    if before["cpu_times"] and after["cpu_times"]:
        steal = after["cpu_times"][0] - before["cpu_times"][0]
        total = after["cpu_times"][1] - before["cpu_times"][1]
        if total > 0 and steal / total > STEAL_LIMIT:
            reasons.append(f"steal time {steal / total:.0%} of CPU time (hypervisor)")
    for b, s in stats.items():
        if s["rounds"] > 1 and s["round_spread"] > SPREAD_LIMIT:
            reasons.append(f"batch {b}: round p50s vary by {s['round_spread']:.0%} "
                           f"({min(s['round_p50_ms']):.3g}-{max(s['round_p50_ms']):.3g} ms)")
        if s["latency_p50_ms"] and s["latency_p95_ms"] > TAIL_RATIO * s["latency_p50_ms"]:
            reasons.append(f"batch {b}: p95 {s['latency_p95_ms']:.3g} ms is over {TAIL_RATIO:g}x p50 "
                           f"{s['latency_p50_ms']:.3g} ms")
    return bool(reasons), "; ".join(reasons)


@dataclasses.dataclass
class Measurement:
    """Latency stats per batch size, and what is needed to say where and how they were measured."""

    stats: dict[int, dict]
    described: dict
    threads: int
    device_name: str
    target: bool
    contended: bool
    contention_reason: str
    shapes: ShapePolicy | None
    load: dict
    schedule: str = ""  # how the calls were scheduled when not alone (pipeline/retime.py: round-robin with others)

    def measured_on(self, batch: int = 1, memory: str = MEMORY_NOTE) -> dict[str, Any]:
        """The provenance record (core/result.py MeasuredOn) of the stats at one batch size."""
        s = self.stats[batch]
        d = self.described
        runtime = d.get("runtime") or d.get("tensorrt_version") or d["backend"]
        kind = TARGET if self.target else STAND_IN
        h = hostinfo.host()
        isa = hostinfo.isa_features()
        dims = self.shapes.describe() if self.shapes is not None and self.shapes.dims else None
        label = (f"{KIND_TEXT[kind]}: this host ({hostinfo.host_label()}; {' '.join(isa) or 'no ISA flags read'}) "
                 f"with {runtime}, "
                 f"{self.threads} threads, batch {batch}{', ' + dims if dims else ''}, "
                 f"{s['runs']} runs in {s['rounds']} rounds after {s['warmup']} warmup"
                 + (f", {self.schedule}" if self.schedule else "")
                 + ("" if self.target else f"; a stand-in for {self.device_name}, not the device")
                 + (f"; CONTENDED host ({self.contention_reason})" if self.contended else ""))
        return {
            **d,
            "kind": kind,
            "host": hostinfo.host_label(),
            "cpu": h["cpu"],
            "isa": isa,
            "usable_cores": hostinfo.usable_cores(),
            "runtime": runtime,
            "threads": self.threads,
            "batch": batch,
            "sequence": self.shapes.to_dict() if self.shapes is not None and self.shapes.dims else None,
            "runs": s["runs"],
            "rounds": s["rounds"],
            "warmup": s["warmup"],
            "round_p50_ms": s["round_p50_ms"],
            "round_spread": s["round_spread"],
            "contended": self.contended,
            "contention_reason": self.contention_reason,
            "load_average": self.load.get("load"),
            "memory": memory,
            "stand_in_for": None if self.target else self.device_name,
            "label": label,
            **({"schedule": self.schedule} if self.schedule else {}),
        }


def is_target(device, backend: str) -> bool:
    """This host is the device (its CPU matches the profile) and the backend is one the device runs."""
    return bool(device.host_is_device()) and backend in device.backends


def measure(session, feeds: dict, batch_sizes: list[int], device, threads: int, *,
            shapes: ShapePolicy | None = None, rounds: int = ROUNDS) -> Measurement:
    """Time `session` on `feeds` (one or more rows, tiled to each batch size) with the device's bench settings."""
    batches = sorted(set(int(b) for b in batch_sizes))
    feeds_by = {b: (feeds if next(iter(feeds.values())).shape[0] == b else tile_batch(feeds, b)) for b in batches}
    plan = {b: calls_for(device.bench, b) for b in batches}
    k = max(1, min(rounds, min(n for _, n in plan.values())))
    calls = {b: -(-n // k) for b, (_, n) in plan.items()}  # ceil: at least the profile's iterations
    if hasattr(session, "fix_shapes"):  # a Session: the timed shapes, compiled as a fixed-batch deployment would
        session.fix_shapes(list(feeds_by.values()))
    before = host_loads()
    times = timed_rounds(session, feeds_by, {b: w for b, (w, _) in plan.items()}, calls, k)
    after = host_loads()
    stats = {b: summarize(times[b], b, plan[b][0]) for b in batches}
    cores = hostinfo.usable_cores()
    contended, why = contention(before, after, stats, cores)
    described = session.describe()
    return Measurement(stats=stats, described=described, threads=threads, device_name=device.name,
                       target=is_target(device, described["backend"]), contended=contended,
                       contention_reason=why, shapes=shapes, load=after)


__all__ = ["measure", "Measurement", "calls_for", "contention", "host_loads", "is_target", "ROUNDS", "TARGET", "STAND_IN"]
