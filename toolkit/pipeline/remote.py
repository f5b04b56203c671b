"""Measure on a real device over SSH: `--measure-on ssh://user@host[:port]` (compress), `--on ...` (bench).

    target = parse_target("ssh://pi@raspberrypi.local:22")
    probe, result = run_on_device(target, plan)      # plan(probe) -> Job (what to run, given what is there)

One connection per call, and one runner process at a time on the device (timing is serial per device).
Steps: connect (key auth only) -> make a temp folder with the device's Python -> copy the runner
(toolkit/backends/remote_runner.py, stdlib + numpy + the runtime, nothing from optkit) -> probe
(fingerprint, which runtimes import) -> copy the artifacts and fixture .npz files (SFTP) -> run ->
parse its JSON -> remove the temp folder. Every network wait has a timeout; every failure is one
RemoteError line that names the host and what to do.

Host keys: the device's key must already be known (~/.ssh/known_hosts, or --known-hosts FILE), as
OpenSSH's StrictHostKeyChecking=yes. Not accept-new: a measurement decides what ships, and
trust-on-first-use would silently take numbers (and the model files) from whichever machine answered
first; the user who can ssh to the device adds its key with one `ssh` or `ssh-keyscan`.
"""
from __future__ import annotations

import asyncio
import dataclasses
import getpass
import json
import shlex
import threading
from pathlib import Path
from typing import Any, Callable
from urllib.parse import parse_qs, urlsplit

from toolkit.core.errors import ConfigError, RemoteError

RUNNER = Path(__file__).resolve().parents[1] / "backends" / "remote_runner.py"
CONNECT_TIMEOUT_S = 15.0
COMMAND_TIMEOUT_S = 120.0       # mkdtemp, probe (imports every runtime once), cleanup
RUN_TIMEOUT_S = 1800.0          # the whole timing job; a Jetson building TensorRT engines takes minutes
KEEPALIVE_S = 5.0               # a device that vanishes silently is noticed after KEEPALIVE_S x KEEPALIVE_MAX
KEEPALIVE_MAX = 3
URL_QUERY = {"python"}          # ssh://user@host?python=/opt/venv/bin/python3


@dataclasses.dataclass(frozen=True)
class RemoteTarget:
    user: str
    host: str
    port: int
    python: str = "python3"
    ssh_key: Path | None = None
    known_hosts: Path | None = None

    @property
    def address(self) -> str:
        """The device as written in labels (never a secret: there is no password in it)."""
        return f"ssh://{self.user}@{self.host}:{self.port}"


def parse_target(url: str, ssh_key: str | Path | None = None, known_hosts: str | Path | None = None,
                 flag: str = "--measure-on") -> RemoteTarget:
    """The ssh:// address, checked before any compute; ConfigError (one line) when it is not usable."""
    text = str(url).strip()
    hint = f"{flag} {text}: "
    try:
        parts = urlsplit(text)
        port = parts.port or 22
    except ValueError as exc:
        raise ConfigError(f"{hint}{exc}; write ssh://user@host[:port] with a port from 1 to 65535") from exc
    if parts.scheme != "ssh":
        raise ConfigError(f"{hint}only ssh:// devices are supported; write ssh://user@host[:port]")
    if not parts.hostname:
        raise ConfigError(f"{hint}no host; write ssh://user@host[:port]")
    if parts.password is not None:
        raise ConfigError(f"{hint}passwords in the address are refused (key authentication only); "
                          "remove it and use --ssh-key or your ~/.ssh keys")
    if parts.path not in ("", "/") or parts.fragment:
        raise ConfigError(f"{hint}a device address has no path; write ssh://user@host[:port][?python=PATH]")
    query = parse_qs(parts.query, keep_blank_values=True)
    unknown = sorted(set(query) - URL_QUERY)
    if unknown or any(len(v) != 1 or not v[0] for v in query.values()):
        raise ConfigError(f"{hint}unknown or empty query {', '.join(unknown) or parts.query}; "
                          "the only one is ?python=/path/to/python on the device")
    key = Path(ssh_key).expanduser() if ssh_key else None
    if key is not None and not key.is_file():
        raise ConfigError(f"--ssh-key {ssh_key}: no such file; pass the private key that the device accepts")
    known = Path(known_hosts).expanduser() if known_hosts else None
    if known is not None and not known.is_file():
        raise ConfigError(f"--known-hosts {known_hosts}: no such file; pass a known_hosts file holding the device's key")
    return RemoteTarget(user=parts.username or getpass.getuser(), host=parts.hostname, port=port,
                        python=query.get("python", ["python3"])[0], ssh_key=key, known_hosts=known)


@dataclasses.dataclass
class Job:
    """What to run on the device: the runner's job.json and the local files it names (remote name -> path)."""
    spec: dict[str, Any]
    files: dict[str, Path]


# --------------------------------------------------------------------------- the SSH session
def run_on_device(target: RemoteTarget, plan: Callable[[dict], Job | None], backends: list[str], *,
                  run_timeout: float = RUN_TIMEOUT_S) -> tuple[dict, dict | None]:
    """(probe, result) from the device; `plan(probe)` returns the Job, or None when nothing can run there.
    `backends`: the runtimes the job may use (the probe imports those, and only those, on the device)."""
    return _sync(_session(target, plan, ",".join(backends) or "none", run_timeout))


def _sync(coro):
    """Run a coroutine to completion from sync code, also when the caller already has an event loop (Jupyter)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    box: dict[str, Any] = {}

    def work() -> None:
        try:
            box["value"] = asyncio.run(coro)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            box["error"] = exc

    t = threading.Thread(target=work, daemon=True)
    t.start()
    t.join()
    if "error" in box:
        raise box["error"]
    return box["value"]


async def _session(target: RemoteTarget, plan, backends: str, run_timeout: float):
    import asyncssh

    step = "connecting"
    conn = None
    folder = None
    try:
        conn = await asyncio.wait_for(asyncssh.connect(**_connect_options(target)), 2 * CONNECT_TIMEOUT_S)
        step = "making a temp folder"
        folder = (await _run(conn, target, [target.python, "-c",
                                            "import tempfile; print(tempfile.mkdtemp(prefix='optkit-'))"],
                             COMMAND_TIMEOUT_S, step)).strip()
        step = "copying the runner"
        async with conn.start_sftp_client() as sftp:
            await asyncio.wait_for(sftp.put(str(RUNNER), f"{folder}/remote_runner.py"), COMMAND_TIMEOUT_S)
        step = "probing the device"
        probe = _parse(await _run(conn, target, [target.python, f"{folder}/remote_runner.py", "probe", backends],
                                  COMMAND_TIMEOUT_S, step), target, step)
        job = plan(probe)
        if job is None:
            return probe, None
        step = "copying the artifacts"
        async with conn.start_sftp_client() as sftp:
            for sub in sorted({name.rsplit("/", 1)[0] for name in job.files if "/" in name}):
                await asyncio.wait_for(sftp.makedirs(f"{folder}/{sub}", exist_ok=True), COMMAND_TIMEOUT_S)
            for name, path in job.files.items():
                await asyncio.wait_for(sftp.put(str(path), f"{folder}/{name}"), run_timeout)
            async with sftp.open(f"{folder}/job.json", "w") as f:
                await asyncio.wait_for(f.write(json.dumps(job.spec)), COMMAND_TIMEOUT_S)
        step = "running the artifacts"
        result = _parse(await _run(conn, target, [target.python, f"{folder}/remote_runner.py", "run",
                                                  f"{folder}/job.json"], run_timeout, step), target, step)
        return probe, result
    except RemoteError:
        raise
    except asyncssh.PermissionDenied as exc:
        raise RemoteError(f"{target.address}: the device refused key authentication for {target.user}; "
                          + ("check that --ssh-key is the key the device accepts" if target.ssh_key else
                             "pass --ssh-key FILE or add your public key to ~/.ssh/authorized_keys on the device")
                          ) from exc
    except asyncssh.HostKeyNotVerifiable as exc:
        where = target.known_hosts or "~/.ssh/known_hosts"
        raise RemoteError(f"{target.address}: the device's host key is not in {where} (or differs from it); check it "
                          f"and add it (ssh -p {target.port} {target.user}@{target.host} once, or ssh-keyscan -p "
                          f"{target.port} {target.host} >> {where}), or pass --known-hosts FILE") from exc
    except (asyncio.TimeoutError, asyncssh.TimeoutError) as exc:
        raise RemoteError(f"{target.address}: no answer while {step} (timed out); check the device is up and not "
                          "overloaded, then re-run") from exc
    except (asyncssh.Error, OSError, EOFError) as exc:
        if step == "connecting" and not isinstance(exc, asyncssh.Error):  # refused, no route, unknown name
            raise RemoteError(f"{target.address}: cannot reach the device ({_one_line(exc)}); check the host, the "
                              "port and that sshd runs there") from exc
        raise RemoteError(f"{target.address}: the connection dropped while {step} ({_one_line(exc)}); check the "
                          "device is up and reachable, then re-run") from exc
    finally:
        if conn is not None:
            if folder:
                await _cleanup(conn, target, folder)
            conn.close()
            try:
                await asyncio.wait_for(conn.wait_closed(), 5)
            except (asyncio.TimeoutError, Exception):  # noqa: BLE001 - closing a dead connection must not mask why
                pass


def _connect_options(target: RemoteTarget) -> dict[str, Any]:
    import asyncssh

    known = target.known_hosts or Path("~/.ssh/known_hosts").expanduser()
    if not known.is_file():
        raise RemoteError(f"{target.address}: no known_hosts file at {known}: optkit only measures on a device whose "
                          f"host key you have checked; run ssh -p {target.port} {target.user}@{target.host} once, "
                          "or pass --known-hosts FILE")
    options: dict[str, Any] = dict(host=target.host, port=target.port, username=target.user, known_hosts=str(known),
                                   connect_timeout=CONNECT_TIMEOUT_S, login_timeout=CONNECT_TIMEOUT_S,
                                   keepalive_interval=KEEPALIVE_S, keepalive_count_max=KEEPALIVE_MAX,
                                   preferred_auth="publickey", password_auth=False, kbdint_auth=False)
    if target.ssh_key is not None:  # exactly the key named: no agent, no other default keys
        try:
            options["client_keys"] = [asyncssh.read_private_key(str(target.ssh_key))]
        except (asyncssh.KeyImportError, asyncssh.KeyEncryptionError, ValueError) as exc:
            raise ConfigError(f"--ssh-key {target.ssh_key}: not a usable private key ({_one_line(exc)}); a "
                              "passphrase-protected key goes into ssh-agent (ssh-add KEY) and --ssh-key is omitted") from exc
        options["agent_path"] = None
    return options


async def _run(conn, target: RemoteTarget, argv: list[str], timeout: float, step: str) -> str:
    """stdout of one command on the device; a non-zero exit is a RemoteError saying why."""
    import asyncssh

    command = " ".join(shlex.quote(a) for a in argv)
    try:
        done = await conn.run(command, check=False, timeout=timeout)
    except asyncssh.TimeoutError as exc:
        raise RemoteError(f"{target.address}: {step} did not finish within {timeout:.0f} s; check the device's load, "
                          "or time fewer artifacts per run") from exc
    out, err = str(done.stdout or ""), str(done.stderr or "")
    if done.exit_status is None:  # the channel closed without an exit status: the session was cut
        raise RemoteError(f"{target.address}: the connection dropped while {step} (no exit status); check the device "
                          "is up and reachable, then re-run")
    if done.exit_status == 127 or (done.exit_status != 0 and "No such file" in err and step == "making a temp folder"):
        raise RemoteError(f"{target.address}: no Python at '{target.python}' on the device; install Python 3 with numpy "
                          "there, or name it: ssh://user@host?python=/path/to/python3")
    if done.exit_status != 0:
        fatal = _fatal(out)
        last = fatal or (err.strip().splitlines() or [f"exit status {done.exit_status}"])[-1][:300]
        raise RemoteError(f"{target.address}: {step} failed on the device: {last}")
    return out


def _fatal(out: str) -> str | None:
    try:
        doc = json.loads(out)
    except ValueError:
        return None
    return doc.get("fatal") if isinstance(doc, dict) else None


def _parse(out: str, target: RemoteTarget, step: str) -> dict:
    try:
        doc = json.loads(out)
    except ValueError as exc:
        raise RemoteError(f"{target.address}: {step}: the runner's answer is not JSON ({out.strip()[:120]!r}); "
                          "check that the device's Python runs scripts unmodified") from exc
    if not isinstance(doc, dict):
        raise RemoteError(f"{target.address}: {step}: unexpected runner answer")
    return doc


async def _cleanup(conn, target: RemoteTarget, folder: str) -> None:
    """Remove the temp folder; best effort (the connection may be the thing that failed)."""
    if not folder.startswith("/") or "optkit-" not in folder:  # only what mkdtemp made for us
        return
    try:
        await asyncio.wait_for(conn.run(f"rm -rf {shlex.quote(folder)}", check=False), 15)
    except Exception:  # noqa: BLE001 - a failed clean-up must not hide the real outcome
        pass


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:200]}" if text else type(exc).__name__


__all__ = ["RemoteTarget", "Job", "parse_target", "run_on_device", "RUNNER"]
