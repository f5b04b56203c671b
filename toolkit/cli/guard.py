"""The CLI's last line of defence: one wrapper around every command, so no input ends in a traceback.

`GuardedGroup` is the top-level click group of `optkit`; every command and sub-command runs inside
its `invoke`, so one place decides how a failure looks on the terminal:

- OptkitError        -> `error: <message>` and its exit code (commands may also do this themselves)
- KeyboardInterrupt  -> `interrupted` and exit 130 (128 + SIGINT, what shells report for Ctrl-C)
- BrokenPipeError    -> passed on to typer's main, which says nothing and exits 1 as every click program does:
                        the reader went away (`optkit ... | head`), which is not optkit's error
- anything else      -> `internal error: <Type>: <message>; details in <log>` and exit 70 (EX_SOFTWARE
                        from sysexits.h: "an internal software error"); the traceback goes to the log
                        file, never to the terminal.

Library calls (`toolkit.compress(...)`) are not wrapped: tests and Python users see the exception.
"""
from __future__ import annotations

import datetime
import os
import sys
import tempfile
import traceback
from pathlib import Path

import typer

from toolkit.cli.options import Group

EXIT_INTERNAL = 70
EXIT_INTERRUPTED = 130
LOG_NAME = "optkit.log"  # inside a run's kept staging folder: it becomes the run's log on --resume


def _stderr(line: str) -> None:
    # plain write, no rich: this path must work even when rendering is what broke
    try:
        sys.stderr.write(line + "\n")
        sys.stderr.flush()
    except (OSError, ValueError):  # a closed or broken stderr: nothing more can be said
        pass


def _one_line(text: str, limit: int = 300) -> str:
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def _log_candidates(exc: BaseException) -> list[Path]:
    """Where the traceback may go, best first: the run's folder, optkit's log folder, the temp folder."""
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    name = f"internal-{stamp}-{os.getpid()}.log"
    places: list[Path] = []
    run_dir = getattr(exc, "optkit_run_dir", None)
    if run_dir is not None:
        places.append(Path(run_dir) / LOG_NAME)
    # not cache.cache_dir(): that may fall back to a temporary folder, and this must not raise
    root = Path(os.environ.get("OPTKIT_CACHE_DIR") or Path.home() / ".cache" / "optkit")
    places.append(root / "logs" / name)
    places.append(Path(tempfile.gettempdir()) / f"optkit-{name}")
    return places


def write_crash_log(exc: BaseException, argv: list[str] | None = None) -> Path | None:
    """Append the full traceback to the first writable log file; None when nowhere is writable."""
    stamp = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    text = (f"--- optkit internal error at {stamp}, pid {os.getpid()}\n"
            f"command: {' '.join(argv if argv is not None else sys.argv)}\n"
            + "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)))
    for path in _log_candidates(exc):
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "a", encoding="utf-8") as fh:
                fh.write(text)
            return path
        except OSError:
            continue
    return None


def internal_error_line(exc: BaseException, log: Path | None) -> str:
    where = f"details in {log}" if log is not None else "no log could be written (every log folder is unwritable)"
    line = f"internal error: {type(exc).__name__}: {_one_line(exc) or '(no message)'}; {where}"
    if getattr(exc, "optkit_run_dir", None) is not None:
        line += "; finished stages are kept: rerun the same command with --resume"
    return line


class GuardedGroup(Group):
    """A Typer group whose invoke turns every failure into one line and an exit code."""

    def invoke(self, ctx):
        from toolkit.core.errors import OptkitError

        try:
            return super().invoke(ctx)
        except (typer.Exit, typer.Abort, typer.TyperException):  # typer's own ways out: usage errors, exit codes
            # (TyperException is the public base of typer's vendored ClickException: no private import)
            raise
        except OptkitError as exc:
            _stderr(f"error: {exc}")
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            _stderr("interrupted")
            raise typer.Exit(EXIT_INTERRUPTED) from None
        except BrokenPipeError:  # typer's main silences it (EPIPE: exit 1); the catch-all below would not
            raise
        except Exception as exc:  # noqa: BLE001 - this is the boundary: nothing unexpected reaches the terminal raw
            _stderr(internal_error_line(exc, write_crash_log(exc)))
            raise typer.Exit(EXIT_INTERNAL) from None
