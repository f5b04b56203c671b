"""Measuring on a device over SSH, against an asyncssh server this test starts on 127.0.0.1 only.

The server has a temporary host key and accepts one temporary client key; it serves SFTP and runs
each command with this machine's shell (the URL's ?python= names this venv's interpreter, so the
"device" runs the runner with the same numpy and runtimes). Every wait is bounded; the server stops
at the end of the module.
"""
from __future__ import annotations

import asyncio
import dataclasses
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

asyncssh = pytest.importorskip("asyncssh", reason="asyncssh is not installed (pip install -e '.[remote]')")

from toolkit.core.errors import ConfigError, OptkitError, RemoteError  # noqa: E402
from toolkit.pipeline.remote import parse_target  # noqa: E402

WAIT_S = 60


@dataclasses.dataclass
class Server:
    port: int
    key: Path            # the client key the server accepts
    stranger: Path       # a key it does not accept
    known_hosts: Path
    state: dict

    def url(self, python: str = sys.executable) -> str:
        return f"ssh://optkit@127.0.0.1:{self.port}?python={python}"


@pytest.fixture(scope="module")
def ssh_server(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ssh")
    host_key = asyncssh.generate_private_key("ssh-ed25519")
    client_key = asyncssh.generate_private_key("ssh-ed25519")
    stranger = asyncssh.generate_private_key("ssh-ed25519")
    (folder / "id_ed25519").write_bytes(client_key.export_private_key())
    (folder / "stranger").write_bytes(stranger.export_private_key())
    state = {"drop_on_run": False, "commands": []}

    async def handle(process):
        state["commands"].append(process.command)
        if state["drop_on_run"] and " run " in process.command:
            await asyncio.sleep(0.2)  # the runner has started: the device drops off the network
            process.get_extra_info("connection").abort()
            return
        proc = await asyncio.create_subprocess_shell(process.command, stdout=asyncio.subprocess.PIPE,
                                                     stderr=asyncio.subprocess.PIPE)
        try:
            out, err = await asyncio.wait_for(proc.communicate(), WAIT_S * 2)
        except asyncio.TimeoutError:
            proc.kill()
            out, err = b"", b"test server: command timed out"
        process.stdout.write(out.decode())
        process.stderr.write(err.decode())
        process.exit(proc.returncode if proc.returncode is not None else 1)

    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    authorized = asyncssh.import_authorized_keys(client_key.export_public_key().decode())

    async def start():
        return await asyncssh.create_server(
            asyncssh.SSHServer, "127.0.0.1", 0, server_host_keys=[host_key], authorized_client_keys=authorized,
            sftp_factory=True, process_factory=handle, password_auth=False, kbdint_auth=False)

    server = asyncio.run_coroutine_threadsafe(start(), loop).result(WAIT_S)
    port = server.sockets[0].getsockname()[1]
    (folder / "known_hosts").write_text(f"[127.0.0.1]:{port} {host_key.export_public_key().decode()}")
    yield Server(port, folder / "id_ed25519", folder / "stranger", folder / "known_hosts", state)
    server.close()
    asyncio.run_coroutine_threadsafe(server.wait_closed(), loop).result(WAIT_S)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(WAIT_S)


@pytest.fixture(scope="module")
def two_onnx(demo_ctx):
    """An ONNX fp32 and a static int8 QDQ model of the demo CNN, made by the existing passes."""
    from toolkit.passes.export import export_onnx
    from toolkit.passes.quantize_ort import OrtStaticOptions, ort_static_int8

    ctx, base = demo_ctx
    fp32 = export_onnx(ctx, base, None, "onnx-fp32")
    int8 = ort_static_int8(ctx, fp32, OrtStaticOptions(), "ort-int8")
    return fp32.path, int8.path


def fast_profile(tmp_path: Path) -> Path:
    path = tmp_path / "remote-test.yaml"
    path.write_text("name: remote-test\ndescription: quick bench settings\narch: x86_64\n"
                    "accelerators:\n  - {name: test cpu, kind: cpu, source: test}\n"
                    "backends: [onnxruntime]\nprecisions: [fp32, int8]\n"
                    "bench: {threads: 1, batch_sizes: [1, 4], warmup: 2, iterations: 12}\n"
                    "stand_in: {backend: onnxruntime, note: test}\n")
    return path


def _bench(paths, server: Server, tmp_path, **kw):
    from toolkit.pipeline.bench import bench

    return bench(list(paths), device=str(fast_profile(tmp_path)), backends=["onnxruntime"], on=kw.pop("on", server.url()),
                 ssh_key=kw.pop("ssh_key", server.key), known_hosts=server.known_hosts, **kw)


# --------------------------------------------------------------------------- the happy path
def test_bench_on_device_labels_rows_with_the_servers_fingerprint(ssh_server, two_onnx, tmp_path):
    from toolkit.backends import remote_runner

    result = _bench(two_onnx, ssh_server, tmp_path)
    rows = result["rows"]
    assert not result["skipped"], result["skipped"]
    assert {(Path(r["artifact"]).parent.name, r["batch"]) for r in rows} == {
        ("onnx-fp32", 1), ("onnx-fp32", 4), ("ort-int8", 1), ("ort-int8", 4)}
    expected = remote_runner.fingerprint()  # the "device" is this machine behind the loopback server
    address = f"ssh://optkit@127.0.0.1:{ssh_server.port}"
    for r in rows:
        assert r["kind"] == "target" and r["stand_in_for"] is None and r["remote"] == address
        assert r["fingerprint"]["id"] == expected["id"] and r["fingerprint"]["isa"] == expected["isa"]
        assert r["fingerprint"]["runtimes"]["onnxruntime"] == expected["runtimes"]["onnxruntime"]
        assert f"measured on the target {address}" in r["measured_on"] and expected["cpu"] in r["measured_on"]
        assert 0 < r["latency_p50_ms"] <= r["latency_p95_ms"] <= r["latency_p99_ms"]
        assert r["runs"] >= 12 if r["batch"] == 1 else r["runs"] >= 20
        assert len(r["round_p50_ms"]) == r["rounds"] >= 2 and r["peak_rss_mb"] >= 0
        # the device's load and round spread are judged by the host's contention rule, and said
        assert isinstance(r["contended"], bool) and (r["contention_reason"] != "") == r["contended"]
        assert " ".join(expected["isa"]) in r["measured_on"]  # ISA flags read on the device, in the label
        # parity checked on the device: its outputs match this host's for the same file and runtime
        p = r["parity"]
        assert p["checked"] and p["rows"] == 16 and p["top1_agreement"] == 1.0 and p["max_abs_diff"] < 1e-4
    assert result["measured_on"].endswith(address) and result["target"]["id"] == expected["id"]
    # int8 is described by the file (QDQ read by inspect), fp32 likewise
    assert {r["precision"] for r in rows} == {"fp32", "int8"}
    # clean-up: every temp folder made on the device is gone
    made = [c for c in ssh_server.state["commands"] if c.startswith("rm -rf ")]
    assert made and all(not Path(c.split()[-1].strip("'")).exists() for c in made)


def test_runtime_missing_on_device_is_a_skipped_row_naming_the_host(ssh_server, two_onnx, tmp_path):
    from toolkit.pipeline.bench import bench

    result = bench([two_onnx[0]], device=str(fast_profile(tmp_path)), backends=["onnxruntime", "tensorrt"],
                   on=ssh_server.url(), ssh_key=ssh_server.key, known_hosts=ssh_server.known_hosts)
    trt = [s for s in result["skipped"] if s["backend"] == "tensorrt"]
    assert trt and f"127.0.0.1:{ssh_server.port}" in trt[0]["reason"] and "TensorrtExecutionProvider" in trt[0]["reason"]
    assert {r["backend"] for r in result["rows"]} == {"onnxruntime"}


# --------------------------------------------------------------------------- failures: one line, typed
def _one_line(exc: BaseException, *words: str) -> None:
    text = str(exc)
    assert "\n" not in text and len(text) < 400, text
    for w in words:
        assert w in text, text


def test_dropped_connection_mid_run_is_one_line(ssh_server, two_onnx, tmp_path):
    ssh_server.state["drop_on_run"] = True
    try:
        with pytest.raises(RemoteError) as err:
            _bench(two_onnx[:1], ssh_server, tmp_path)
    finally:
        ssh_server.state["drop_on_run"] = False
    _one_line(err.value, f"127.0.0.1:{ssh_server.port}", "dropped", "running the artifacts")


def test_dropped_connection_is_a_non_zero_cli_exit(ssh_server, two_onnx, tmp_path):
    from typer.testing import CliRunner

    from toolkit.cli import app

    ssh_server.state["drop_on_run"] = True
    try:
        res = CliRunner().invoke(app, ["bench", str(two_onnx[0]), "--device", str(fast_profile(tmp_path)), "-b",
                                       "onnxruntime", "--on", ssh_server.url(), "--ssh-key", str(ssh_server.key),
                                       "--known-hosts", str(ssh_server.known_hosts)])
    finally:
        ssh_server.state["drop_on_run"] = False
    assert res.exit_code == RemoteError.exit_code != 0, res.output
    lines = [line for line in res.output.strip().splitlines() if line.strip()]
    assert "dropped" in lines[-1] and "error" in lines[-1], res.output


def test_auth_failure_is_one_line(ssh_server, two_onnx, tmp_path):
    with pytest.raises(RemoteError) as err:
        _bench(two_onnx[:1], ssh_server, tmp_path, ssh_key=ssh_server.stranger)
    _one_line(err.value, "refused key authentication", "--ssh-key")


def test_unknown_host_key_is_one_line(ssh_server, two_onnx, tmp_path):
    from toolkit.pipeline.bench import bench

    other = tmp_path / "known_hosts"
    other.write_text(f"[127.0.0.1]:{ssh_server.port} "
                     f"{asyncssh.generate_private_key('ssh-ed25519').export_public_key().decode()}")
    with pytest.raises(RemoteError) as err:
        bench([two_onnx[0]], device=str(fast_profile(tmp_path)), backends=["onnxruntime"], on=ssh_server.url(),
              ssh_key=ssh_server.key, known_hosts=other)
    _one_line(err.value, "host key", "known_hosts")


def test_missing_python_on_device_is_one_line(ssh_server, two_onnx, tmp_path):
    with pytest.raises(RemoteError) as err:
        _bench(two_onnx[:1], ssh_server, tmp_path, on=ssh_server.url(python="/nonexistent/python3"))
    _one_line(err.value, "no Python", "/nonexistent/python3", "?python=")


def test_unreachable_port_is_one_line(two_onnx, tmp_path, ssh_server):
    import socket

    with socket.socket() as s:  # a port nobody listens on (bound, then released)
        s.bind(("127.0.0.1", 0))
        free = s.getsockname()[1]
    with pytest.raises(RemoteError) as err:
        _bench(two_onnx[:1], ssh_server, tmp_path, on=f"ssh://optkit@127.0.0.1:{free}")
    _one_line(err.value, f"127.0.0.1:{free}", "cannot reach")


@pytest.mark.parametrize("url, words", [
    ("http://pi@host", "only ssh://"),
    ("ssh://", "no host"),
    ("ssh://pi@host:99999", "port"),
    ("ssh://pi:secret@host", "passwords"),
    ("ssh://pi@host/home/pi", "no path"),
    ("ssh://pi@host?pyhton=/usr/bin/python3", "query"),
])
def test_bad_urls_are_one_line_config_errors(url, words):
    with pytest.raises(ConfigError) as err:
        parse_target(url)
    _one_line(err.value, words)


def test_bad_url_fails_before_anything_is_timed(two_onnx, tmp_path):
    from toolkit.pipeline.bench import bench

    with pytest.raises(ConfigError, match="only ssh://"):
        bench([tmp_path / "not-read.onnx"], device=str(fast_profile(tmp_path)), on="ftp://x")
    with pytest.raises(ConfigError, match="--ssh-key"):
        parse_target("ssh://pi@host", ssh_key=tmp_path / "missing-key")


def test_url_defaults_and_python_query():
    t = parse_target("ssh://pi@raspberrypi.local?python=/opt/venv/bin/python3")
    assert (t.user, t.host, t.port, t.python) == ("pi", "raspberrypi.local", 22, "/opt/venv/bin/python3")
    assert t.address == "ssh://pi@raspberrypi.local:22"


def test_runner_imports_nothing_from_toolkit():
    import ast

    from toolkit.pipeline.remote import RUNNER

    tree = ast.parse(RUNNER.read_text())
    names = [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    names += [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    assert not [n for n in names if n.split(".")[0] == "toolkit"]


def test_parity_reports_disagreement():
    from toolkit.pipeline.remote_measure import parity

    host = np.eye(3, dtype=np.float32)
    dev = host.copy()
    dev[0] = [0, 2, 0]
    p = parity(dev, host, "test")
    assert p["checked"] and p["top1_agreement"] == pytest.approx(2 / 3) and p["max_abs_diff"] == 2.0
    assert not parity(dev, None, "not checked: x")["checked"]


def test_errors_are_optkit_errors():
    assert issubclass(RemoteError, OptkitError) and RemoteError.exit_code == 4


# --------------------------------------------------------------------------- compress --measure-on
def test_compress_measures_candidates_on_the_device(ssh_server, tmp_path):
    import toolkit
    from toolkit.backends import remote_runner
    from toolkit.core.result import load_report

    recipe = tmp_path / "r.yaml"
    recipe.write_text("name: remote\ncalibration_size: 64\nsteps:\n  - {id: onnx-fp32, pass: export_onnx}\n"
                      "  - {id: ort-int8, pass: ort_static_int8, from: onnx-fp32}\n")
    result = toolkit.compress(None, device=str(fast_profile(tmp_path)), recipe=recipe, out=tmp_path / "run",
                              measure_on=ssh_server.url(), ssh_key=ssh_server.key, known_hosts=ssh_server.known_hosts)
    address = f"ssh://optkit@127.0.0.1:{ssh_server.port}"
    expected = remote_runner.fingerprint()
    for cid in ("onnx-fp32", "ort-int8"):
        c = result.candidate(cid)
        on = c.measured_on
        assert on.kind == "target" and on.remote == address and on.device.id == expected["id"]
        assert on.stand_in_for is None and address in on.label and on.runs >= 12 and on.rounds >= 2
        assert on.device_parity.checked and on.device_parity.rows == 16 and on.device_parity.top1_agreement == 1.0
        assert on.device_parity.max_abs_diff < 1e-3
        # the host's own timing is kept beside, never mixed in
        assert on.host_timing["kind"] == "stand-in" and on.host_timing["latency_p50_ms"] > 0
        assert c.metrics.latency_p50_ms > 0 and [t.batch for t in c.metrics.throughput] == [4]
    torch = result.candidate("torch-fp32")
    assert torch.measured_on.kind == "stand-in" and "torch eager" in torch.measured_on.device_skipped
    assert any(k.name == "measured_on_target" and not k.ok for k in torch.checks)
    assert result.report.selection.speed_key == "latency_p95_ms" and result.report.selected in ("onnx-fp32", "ort-int8")
    assert load_report(result.run_dir / "report" / "report.json").candidate("ort-int8").measured_on.device.id == expected["id"]
    md = (result.run_dir / "report" / "report.md").read_text()
    assert f"**measured on the target** {address}" in md and "Every latency here was measured on this host" not in md
    html = (result.run_dir / "report" / "index.html").read_text()
    assert f"<b>measured on the target</b> {address}" in html and "<b>measured on this host</b>" not in html


def test_sweep_times_a_device_entry_on_its_board(ssh_server, tmp_path):
    """A sweep device entry {profile, measure_on}: that combination's candidates are timed on the board (target
    numbers, the board's address), the plain entry beside it on this host (stand-in), one summary."""
    import yaml

    from toolkit.core.result import load_report
    from toolkit.pipeline.sweep import load_sweep, run_sweep

    (tmp_path / "r.yaml").write_text("name: remote\ncalibration_size: 64\nsteps:\n  - {id: onnx-fp32, pass: export_onnx}\n")
    board = yaml.safe_load(fast_profile(tmp_path).read_text())
    (tmp_path / "board.yaml").write_text(yaml.safe_dump({**board, "name": "board"}))
    (tmp_path / "sweep.yaml").write_text(yaml.safe_dump({
        "models": [{"name": "demo"}], "recipes": ["r.yaml"],
        "devices": ["remote-test.yaml", {"profile": "board.yaml", "measure_on": ssh_server.url(),
                                         "ssh_key": str(ssh_server.key), "known_hosts": str(ssh_server.known_hosts)}]}))
    summary = run_sweep(load_sweep(tmp_path / "sweep.yaml", out=tmp_path / "out"))
    rows = {r["device"]: r for r in summary["combinations"]}
    assert summary["exit_code"] == 0, summary
    assert rows["board"]["latency_kind"] == "target" and rows["remote-test"]["latency_kind"] == "stand-in"
    on = load_report(tmp_path / "out" / "runs" / "demo-remote-board" / "report" / "report.json").candidate("onnx-fp32").measured_on
    assert on.kind == "target" and on.remote == f"ssh://optkit@127.0.0.1:{ssh_server.port}"


def test_compress_bad_measure_on_fails_before_compute(tmp_path):
    from typer.testing import CliRunner

    from toolkit.cli import app

    res = CliRunner().invoke(app, ["compress", "--device", "jetson", "--out", str(tmp_path / "run"),
                                   "--measure-on", "ssh://pi:pw@jetson.local"])
    assert res.exit_code == 2 and "passwords in the address are refused" in res.output
    assert not (tmp_path / "run").exists()


# --------------------------------------------------------------------------- the runner's other runtimes
def test_openvino_on_device_reads_back_its_precision(ssh_server, two_onnx, tmp_path):
    from toolkit.backends import availability
    from toolkit.pipeline.bench import bench

    ok, why = availability("openvino")
    if not ok:
        pytest.skip(why)
    result = bench([two_onnx[0]], device=str(fast_profile(tmp_path)), backends=["openvino"], on=ssh_server.url(),
                   ssh_key=ssh_server.key, known_hosts=ssh_server.known_hosts)
    rows = [r for r in result["rows"] if r["batch"] == 1]
    assert rows and not [s for s in result["skipped"] if s["status"] == "failed"], result["skipped"]
    f32 = next(r for r in rows if r["precision"] == "fp32 / f32 compute")  # the hint is set and read back there
    assert f32["kind"] == "target" and f32["runtime"].startswith("openvino") and f32["parity"]["checked"]
    assert f32["parity"]["top1_agreement"] == 1.0 and f32["parity"]["max_abs_diff"] < 1e-3


@pytest.mark.slow  # lowering to .pte and importing torch+executorch on the "device" take ~1 min on a busy 2-core host
def test_executorch_pte_on_device(ssh_server, demo_ctx, tmp_path):
    from toolkit.backends import availability
    from toolkit.pipeline.bench import bench

    ok, why = availability("executorch")
    if not ok:
        pytest.skip(why)
    from toolkit.passes.executorch import ExecuTorchOptions, executorch_export

    ctx, base = demo_ctx
    pte = executorch_export(ctx, base, ExecuTorchOptions(), "et-fp32").path
    result = bench([pte], device=str(fast_profile(tmp_path)), backends=["executorch"], on=ssh_server.url(),
                   ssh_key=ssh_server.key, known_hosts=ssh_server.known_hosts)
    assert result["rows"] and not result["skipped"], result["skipped"]
    r = result["rows"][0]
    assert r["kind"] == "target" and r["runtime"].startswith("executorch") and r["parity"]["checked"]
    assert r["parity"]["top1_agreement"] == 1.0 and r["parity"]["max_abs_diff"] < 1e-3


def test_cli_bench_on_prints_the_device(ssh_server, two_onnx, tmp_path):
    from typer.testing import CliRunner

    from toolkit.cli import app

    res = CliRunner().invoke(app, ["bench", str(two_onnx[1]), "--device", str(fast_profile(tmp_path)), "-b", "onnxruntime",
                                   "--on", ssh_server.url(), "--ssh-key", str(ssh_server.key),
                                   "--known-hosts", str(ssh_server.known_hosts), "--json"])
    assert res.exit_code == 0, res.output
    import json

    doc = json.loads(res.output[res.output.index("{"):])
    assert doc["remote"] == f"ssh://optkit@127.0.0.1:{ssh_server.port}" and doc["stand_in_for"] is None
    assert {r["kind"] for r in doc["rows"]} == {"target"} and {r["precision"] for r in doc["rows"]} == {"int8"}


def test_a_silent_device_times_out_in_one_line(two_onnx, tmp_path, ssh_server, monkeypatch):
    """A port that accepts TCP but never speaks SSH: the connect timeout ends the wait, said in one line."""
    import socket

    from toolkit.pipeline import remote

    monkeypatch.setattr(remote, "CONNECT_TIMEOUT_S", 1.0)
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        port = silent.getsockname()[1]
        with pytest.raises(RemoteError) as err:
            _bench(two_onnx[:1], ssh_server, tmp_path, on=f"ssh://optkit@127.0.0.1:{port}")
    _one_line(err.value, f"127.0.0.1:{port}")
    assert "no answer while connecting (timed out)" in str(err.value), err.value


def test_import_toolkit_does_not_import_asyncssh():
    import subprocess

    out = subprocess.run([sys.executable, "-c", "import toolkit, sys; print('asyncssh' in sys.modules)"],
                         capture_output=True, text=True, timeout=WAIT_S, check=True).stdout
    assert out.strip() == "False"


def test_bench_on_device_records_the_devices_fingerprint_in_history(ssh_server, two_onnx, tmp_path):
    import json
    import sqlite3

    result = _bench(two_onnx[:1], ssh_server, tmp_path, history=tmp_path / "bench.db")
    assert result["history"]["run_id"] >= 1
    with sqlite3.connect(tmp_path / "bench.db") as con:
        (fp,) = con.execute("SELECT host_fingerprint FROM runs").fetchone()
    fp = json.loads(fp)
    assert fp["remote"] == f"ssh://optkit@127.0.0.1:{ssh_server.port}" and fp["device_fingerprint"]["id"] == result["target"]["id"]
