"""The ray executor: builds fan out as Ray tasks (1 CPU each); each measure task owns a whole node while it times.

    optkit sweep sweep.yaml --executor ray [--address ray://head:10001 | auto]

Timing stays honest: a measure task asks for num_cpus = the largest node's CPU count, so Ray places it only on
such a node and schedules nothing else there until it ends (builds included); timing runs only on nodes of one
(the largest) size, so series stay comparable. Each measurement records its node (measured_on.node). A device entry with measure_on (an ssh:// board) is timed on
the board, one combination at a time per board (the next is submitted when the board's previous one ends).
Tasks are idempotent by cache key and run folder and retried when a worker dies (MAX_RETRIES).
Artifacts move by content hash through the pass/outputs cache (OPTKIT_CACHE_DIR); on a multi-node cluster that
folder and the sweep's --out must be shared storage (NFS, a mounted bucket): every entry is verified against its
record's sha256 before use, so a stale or partial copy is rebuilt, never trusted.
"""
from __future__ import annotations

import os
import socket
import time
from pathlib import Path
from typing import Any

from toolkit.pipeline.executors import register

MAX_RETRIES = 3  # a worker killed mid-task (OOM killer, preemption): the task runs again, reusing finished work


def _node_label() -> str:
    import ray

    return f"{socket.gethostname()}:{ray.get_runtime_context().get_node_id()[:12]}"


def _with_env(env: dict[str, str], fn, *args) -> Any:
    """Run fn with the driver's OPTKIT_* settings and this node's name (evaluate.node_name reads OPTKIT_NODE)."""
    node = _node_label()
    old = {k: os.environ.get(k) for k in [*env, "OPTKIT_NODE"]}
    os.environ.update({**env, "OPTKIT_NODE": node})
    try:
        return fn(*args, node)
    finally:
        for k, v in old.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)


def ray_build(combo, env: dict[str, str]) -> dict:
    from toolkit.pipeline.executors.tasks import build_combination

    return _with_env(env, build_combination, combo)


def ray_measure(combo, built: dict, env: dict[str, str]) -> dict:
    from toolkit.pipeline.executors.tasks import measure_combination

    return _with_env(env, measure_combination, combo, built)


def ray_probe(paths: list[str]) -> list[str]:
    """On one node: which of the driver's shared folders (each holding a probe file the driver wrote) it cannot see."""
    return [p for p in paths if not Path(p).is_file()]


def check_shared(ray, nodes: list[dict], shared: list[Path]) -> None:
    """On a cluster every node must see the sweep folder and the cache (artifacts move through them by content
    hash, verified on use): a node that cannot is named before any work is placed, not after minutes of builds."""
    import uuid

    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    from toolkit.core.errors import ConfigError

    probes = []
    for folder in shared:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".optkit-probe-{uuid.uuid4().hex[:8]}"
        probe.write_text("optkit sweep: is this folder shared by every node?\n")
        probes.append(probe)
    try:
        task = ray.remote(num_cpus=0, max_retries=MAX_RETRIES)(ray_probe)
        refs = {n["node"]: task.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["id"], soft=False))
                .remote([str(p) for p in probes]) for n in nodes}
        for node, ref in refs.items():
            missing = ray.get(ref)
            if missing:
                raise ConfigError(f"node {node} cannot see {', '.join(str(Path(m).parent) for m in missing)}; on a "
                                  "cluster put --out and OPTKIT_CACHE_DIR on storage every node mounts at the same path")
    finally:
        for probe in probes:
            probe.unlink(missing_ok=True)


@register("ray")
class RayExecutor:
    name = "ray"

    def __init__(self, address: str | None = None):
        try:
            import ray  # noqa: F401
        except ImportError as exc:
            from toolkit.core.errors import BackendUnavailable

            raise BackendUnavailable("the ray executor needs Ray: pip install -e '.[ray]' (or use --executor local)") from exc
        self.address = address
        self._nodes: list[dict] = []
        self.startup_s = 0.0  # ray.init: starting a local instance or joining the cluster

    def nodes(self) -> list[dict]:
        return self._nodes

    def run(self, combinations, on_phase, shared: list[Path] = ()) -> None:
        import ray

        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no usage-stats upload attempts (offline hosts)
        started = not ray.is_initialized()
        t0 = time.time()
        if started:  # an existing connection (a test's local instance, a notebook) is used as is
            ray.init(address=self.address, include_dashboard=False, log_to_driver=False)
        self.startup_s = round(time.time() - t0, 2)
        try:
            alive = [n for n in ray.nodes() if n.get("Alive")]
            self._nodes = [{"node": f"{n.get('NodeManagerHostname')}:{n['NodeID'][:12]}", "id": n["NodeID"],
                            "cpus": int(n["Resources"].get("CPU", 0))} for n in alive]
            if self.address is not None or len(alive) > 1:  # a cluster: the driver's disk is not the nodes' disk
                check_shared(ray, self._nodes, list(shared))
            cpus = max(1, max((n["cpus"] for n in self._nodes), default=1))
            env = {k: v for k, v in os.environ.items() if k.startswith("OPTKIT_") and k != "OPTKIT_NODE"}
            build = ray.remote(num_cpus=1, max_retries=MAX_RETRIES)(ray_build)
            measure = ray.remote(num_cpus=cpus, max_retries=MAX_RETRIES)(ray_measure)
            pending: dict[Any, tuple[Any, str]] = {}
            # An ssh:// board times one combination at a time: its measurements are submitted one after another from
            # here (a task blocked waiting inside Ray would give its CPUs away, and could get them back mid-timing).
            waiting: dict[str, list] = {}  # board address -> (combo, its build ref) not yet submitted
            for combo in combinations:
                b = build.remote(combo, env)
                pending[b] = (combo, "build")
                if combo.measure_on and combo.measure_on in waiting:
                    waiting[combo.measure_on].append((combo, b))
                    continue
                if combo.measure_on:
                    waiting[combo.measure_on] = []
                pending[measure.remote(combo, b, env)] = (combo, "measure")  # scheduled once its build is done
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1)
                combo, phase = pending.pop(ready[0])
                try:
                    result = ray.get(ready[0])
                except Exception as exc:  # noqa: BLE001 - retries exhausted (or its build's): reported, the rest go on
                    why = " ".join(str(exc).split())[:300]
                    result = {"ok": False, "status": "failed", "phase": phase, "node": None, "seconds": 0.0,
                              "reason": f"{phase}: ray task failed after {MAX_RETRIES} retries: {type(exc).__name__}: {why}"}
                on_phase(combo, phase, result)
                if phase == "measure" and waiting.get(combo.measure_on):  # the board is free: its next one
                    nxt, b = waiting[combo.measure_on].pop(0)
                    pending[measure.remote(nxt, b, env)] = (nxt, "measure")
        finally:
            if started:
                ray.shutdown()
