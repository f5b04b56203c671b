"""optkit sweep --executor ray on a local Ray instance with 2 workers (no network, no dashboard, no usage stats):
the same accuracy metrics and artifact hashes as the local executor, and a worker killed mid-task is retried."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

ray = pytest.importorskip("ray", reason="ray is not installed (pip install -e '.[ray]')")

from tests.test_sweep import make_sweep_inputs  # noqa: E402


@pytest.fixture(scope="module")
def ray_instance():
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


@pytest.fixture
def own_cache(tmp_path, monkeypatch):
    """A fresh pass/outputs cache for one sweep: the executors must each build, not read the other's results.
    The driver's OPTKIT_* settings travel with every Ray task (executors/ray.py)."""
    def use(name: str) -> Path:
        path = tmp_path / f"cache-{name}"
        monkeypatch.setenv("OPTKIT_CACHE_DIR", str(path))
        return path
    return use


def _by_id(summary: dict) -> dict:
    return {c["id"]: c for c in summary["combinations"]}


def test_ray_sweep_matches_the_local_executor(tmp_path, digits, demo_model, ray_instance, own_cache):
    import toolkit.api as api

    sweep = make_sweep_inputs(tmp_path, digits, demo_model, models=2)  # 2 models x 2 recipes
    own_cache("local")
    local = api.sweep(sweep, executor="local", out=tmp_path / "local")
    own_cache("ray")
    lines: list[str] = []
    remote = api.sweep(sweep, executor="ray", out=tmp_path / "ray", log=lines.append)
    assert local["ok"] and remote["ok"], (local["failures"], remote["failures"])
    assert len(remote["combinations"]) == 4 and remote["executor"] == "ray" and len(remote["nodes"]) == 1
    loc, ray_rows = _by_id(local), _by_id(remote)
    assert loc.keys() == ray_rows.keys()
    for cid, row in ray_rows.items():
        assert row["metrics"] == loc[cid]["metrics"], cid          # accuracy: identical, not "close"
        assert row["artifacts"] == loc[cid]["artifacts"], cid      # every candidate's bytes: identical
        assert row["selected"] is not None and row["node"].startswith(f"{os.uname().nodename}:")
    # timing kept honest: while a measure task ran on the node, nothing else of the sweep ran there
    windows = [(c["node"], "measure", *c["measure_window"]) for c in remote["combinations"]]
    windows += [(c["build_node"], "build", *c["build_window"]) for c in remote["combinations"]]
    for node, _, start, end in [w for w in windows if w[1] == "measure"]:
        overlapping = [w for w in windows if w[0] == node and w[2] < end and w[3] > start and w[2:] != (start, end)]
        assert not overlapping, (start, end, overlapping)
    # one progress line per combination and phase; a measure task's node is recorded with its timing
    assert len(lines) == 8 and sum(" build " in line for line in lines) == 4
    assert all(line.startswith(f"[{i}/8] ") for i, line in enumerate(lines, 1))


@pytest.mark.parametrize("point, recipes", [
    ("pass:ort-int8-dynamic", ("tiny-static", "tiny-dynamic")),  # build phase: a pass's worker dies; 2 combinations
    ("report", ("tiny-dynamic",)),                               # measure phase: killed after timing, before the report
], ids=["build", "measure"])
def test_a_worker_killed_mid_task_is_retried_and_the_sweep_finishes(tmp_path, digits, demo_model, ray_instance,
                                                                      own_cache, monkeypatch, point, recipes):
    import toolkit.api as api

    sweep = make_sweep_inputs(tmp_path, digits, demo_model, models=1, recipes=recipes)
    own_cache("fault")
    marker = tmp_path / "killed-once"
    # the first task to reach the point SIGKILLs its own worker process; Ray retries the task (max_retries), and the
    # retry resumes from the verified work the dead one left (pass cache, compress --resume)
    monkeypatch.setenv("OPTKIT_FAULT_ONCE", str(marker))
    monkeypatch.setenv("OPTKIT_FAULT_ONCE_AT", point)
    summary = api.sweep(sweep, executor="ray", out=tmp_path / "out")
    assert marker.exists(), "no worker was killed: the fault point was not reached"
    assert summary["ok"] and summary["n_ok"] == len(recipes), summary["failures"]
    row = _by_id(summary)["cnn-tiny-dynamic-x86-quick"]
    assert row["status"] == "ok" and "ort-int8-dynamic" in row["artifacts"] and row["selected"]
    assert (Path(row["run_dir"]) / "report" / "report.json").exists()
    assert not list((tmp_path / "out" / "runs").glob(".*staging"))  # the retry finished the interrupted run


def test_on_a_cluster_every_node_must_see_the_shared_folders(tmp_path, ray_instance):
    from toolkit.core.errors import ConfigError
    from toolkit.pipeline.executors import ray as ray_executor

    node = ray.get_runtime_context().get_node_id()
    nodes = [{"node": f"here:{node[:12]}", "id": node, "cpus": 2}]
    ray_executor.check_shared(ray, nodes, [tmp_path / "out", tmp_path / "cache"])  # one host: visible, passes
    assert not list(tmp_path.rglob(".optkit-probe-*"))  # probes removed
    assert ray_executor.ray_probe([str(tmp_path / "elsewhere" / "probe")]) == [str(tmp_path / "elsewhere" / "probe")]
    original = ray_executor.ray_probe
    try:  # a node that does not mount the folder: named, before any work is placed
        ray_executor.ray_probe = lambda paths: list(paths)
        with pytest.raises(ConfigError, match=r"node here:\w+ cannot see .*shared|storage every node mounts"):
            ray_executor.check_shared(ray, nodes, [tmp_path / "out"])
    finally:
        ray_executor.ray_probe = original
