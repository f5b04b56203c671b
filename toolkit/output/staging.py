"""Atomic run folders: write into a staging folder, promote with one rename, one writer at a time."""
from __future__ import annotations

import contextlib
import os
import shutil
import signal
from pathlib import Path

from toolkit.core.errors import OutputError


MARKER = ".optkit-output"  # written into every folder optkit promotes: "optkit made this, --overwrite may replace it"
# Folders older optkit versions wrote, recognised by their main file: they may be replaced too.
_LEGACY_SIGNS = ("run.json", "calibration.json", ".optkit-nightly")


def _is_optkit_output(folder: Path) -> bool:
    return any((folder / sign).exists() for sign in (MARKER, *_LEGACY_SIGNS))


def _protected(out: Path) -> str | None:
    """Why `out` must never be an output folder: replacing it would move the ground under the user's feet."""
    target = out.resolve()
    cwd, home = Path.cwd().resolve(), Path.home().resolve()
    if target == cwd:
        return "is the current folder"
    if target in cwd.parents:
        return "is a parent of the current folder"
    if target == home or target in home.parents:
        return "is your home folder or one of its parents"
    return None


def check_target(out: Path, overwrite: bool) -> None:
    """Refuse, before any compute, every --out that cannot be written or must not be replaced."""
    out = Path(out)
    if out.is_symlink():
        raise OutputError(f"{out}: the output folder is a symbolic link; pass a real folder with --out")
    if (why := _protected(out)) is not None:
        raise OutputError(f"{out}: {why}; optkit replaces its --out folder as a whole, so pass a new subfolder "
                          "such as --out runs/my-run")
    if out.exists() and not out.is_dir():
        raise OutputError(f"{out}: exists and is not a folder; choose another --out")
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise OutputError(f"{out}: the output folder is not empty; choose another --out or pass --overwrite")
        if not _is_optkit_output(out):
            raise OutputError(f"{out}: holds files optkit did not write (no {MARKER}); it is never replaced, "
                              "even with --overwrite: choose another --out")
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
    held_by = _lock_holder(out)  # said now, before any compute; lock() takes it for real later
    if held_by is not None:
        raise OutputError(f"{out}: another optkit run (pid {held_by}) is writing this folder; wait for it or choose another --out")


def _lock_holder(out: Path) -> int | None:
    """The live pid holding out's lock, or None (no lock, or a stale one that lock() will take over)."""
    try:
        pid = int((out.parent / f".{out.name}.optkit.lock").read_text().strip() or 0)
    except (OSError, ValueError):
        return None
    return pid if pid and pid != os.getpid() and _pid_alive(pid) else None


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
def staged(out: Path, overwrite: bool, resume: bool = False, log=lambda msg: None, resumable: bool = False):
    """Yield a staging folder; on success it replaces `out` in one rename.

    On failure nothing appears at `out`. What happens to the staging folder depends on the failure:
    Ctrl-C/SIGTERM and OptkitError (the user stopped it, or an input was wrong) remove it; for a
    `resumable` caller (compress), an environment fault (OSError: disk full, permissions) or an
    unexpected exception keeps it, so work already done is not lost and `--resume` finishes the run.
    An OSError becomes an OutputError that says where the work is and how to resume.
    A process killed outright (SIGKILL, power loss) cannot clean up: its staging folder stays, and
    `resume=True` continues from it; otherwise it is discarded and said.
    """
    from toolkit.core.errors import OptkitError

    out = Path(os.path.abspath(out))  # lexical: "runs/x/.." must not leave ".." as the folder's name
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
        try:
            staging.mkdir(parents=True, exist_ok=True)
            (staging / MARKER).write_text("written by optkit; --overwrite may replace this folder\n")
        except OSError as exc:
            shutil.rmtree(staging, ignore_errors=True)
            raise OutputError(f"{out}: cannot create the staging folder {staging} ({exc.strerror or exc}); "
                              "free space or choose an --out you can write to") from exc
        try:
            yield staging
        except (KeyboardInterrupt, OptkitError):
            shutil.rmtree(staging, ignore_errors=True)
            raise
        except OSError as exc:
            if not resumable:
                shutil.rmtree(staging, ignore_errors=True)
                raise OutputError(f"{out}: writing failed ({_os_reason(exc)}); nothing was written; "
                                  "free space or fix permissions and run again") from exc
            raise OutputError(f"{out}: writing failed ({_os_reason(exc)}); nothing was written to {out}, and the "
                              f"finished stages are kept in {staging}: free space or fix permissions, then rerun "
                              "the same command with --resume") from exc
        except BaseException as exc:
            if not resumable:
                shutil.rmtree(staging, ignore_errors=True)
            else:
                with contextlib.suppress(AttributeError, TypeError):  # the CLI writes its log there
                    exc.optkit_run_dir = staging
            raise
        try:
            _promote(staging, out)
        except OSError as exc:  # rename failed: the complete result is still in staging
            raise OutputError(f"{out}: could not move the finished run into place ({_os_reason(exc)}); the complete "
                              f"result is in {staging}: fix the folder and rerun with --resume, or move it yourself") from exc


def _os_reason(exc: OSError) -> str:
    where = f": {exc.filename}" if exc.filename else ""
    return f"{exc.strerror or type(exc).__name__}{where}"


def _promote(staging: Path, out: Path) -> None:
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
