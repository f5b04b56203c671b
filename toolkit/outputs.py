"""Atomic run folders: write into a staging folder, promote with one rename, one writer at a time."""
from __future__ import annotations

import contextlib
import os
import shutil
import signal
from pathlib import Path

from .errors import OutputError


def check_target(out: Path, overwrite: bool) -> None:
    if out.is_symlink():
        raise OutputError(f"{out}: the output folder is a symbolic link; pass a real folder with --out")
    if out.exists() and not out.is_dir():
        raise OutputError(f"{out}: exists and is not a folder; choose another --out")
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise OutputError(f"{out}: the output folder is not empty; choose another --out or pass --overwrite")
    parent = out.parent
    for folder in (parent, *parent.parents):
        if folder.exists() and not folder.is_dir():
            raise OutputError(f"{out}: {folder} is a file, not a folder; choose an --out under a folder")
        if folder.exists():
            break
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"{out}: cannot create {parent} ({exc.strerror}); choose an --out you can write to") from exc
    if not os.access(parent, os.W_OK):
        raise OutputError(f"{parent}: not writable; choose an --out in a folder you can write to")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


@contextlib.contextmanager
def lock(out: Path):
    """An exclusive lock file next to the output folder; a stale lock (dead pid) is taken over."""
    path = out.parent / f".{out.name}.optkit.lock"
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            os.write(fd, str(os.getpid()).encode())
            os.close(fd)
            break
        except FileExistsError:
            try:
                pid = int(path.read_text().strip() or 0)
            except (OSError, ValueError):
                pid = 0
            if pid and _pid_alive(pid):
                raise OutputError(f"{out}: another optkit run (pid {pid}) is writing this folder; wait for it or choose another --out") from None
            path.unlink(missing_ok=True)
    else:  # pragma: no cover - lost a race twice
        raise OutputError(f"{out}: could not take the lock {path}; retry")
    try:
        yield
    finally:
        path.unlink(missing_ok=True)


def staging_path(out: Path) -> Path:
    return out.parent / f".{out.name}.optkit-staging"


@contextlib.contextmanager
def staged(out: Path, overwrite: bool, resume: bool = False, log=lambda msg: None):
    """Yield a staging folder; on success it replaces `out` in one rename, on failure it is removed.

    A process killed outright (SIGKILL, power loss) cannot clean up: its staging folder stays, and
    `resume=True` continues from it; otherwise it is discarded and said.
    """
    out = Path(out)
    check_target(out, overwrite)
    with lock(out), _terminate_as_interrupt():
        staging = staging_path(out)
        if staging.exists() and resume:
            log(f"resuming the interrupted run in {staging}: finished stages are re-verified and reused")
        elif staging.exists():
            log(f"an interrupted run left {staging}; starting over (pass --resume to reuse its finished stages)")
            shutil.rmtree(staging)
        elif resume:
            log(f"nothing to resume for {out}: no interrupted run found; starting a fresh run")
        staging.mkdir(parents=True, exist_ok=True)
        try:
            yield staging
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        if out.exists():
            trash = out.parent / f".{out.name}.optkit-old"
            shutil.rmtree(trash, ignore_errors=True)
            out.rename(trash)
            staging.rename(out)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            staging.rename(out)


@contextlib.contextmanager
def _terminate_as_interrupt():
    """SIGTERM unwinds like Ctrl-C, so the staging folder is cleaned up either way."""
    try:
        previous = signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
